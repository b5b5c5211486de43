//! One TCP connection to a broker, split in a writing half and a reading half so
//! that a task can pipeline requests and read responses as they come.
//!
//! Frames are Kafka's: a 4-byte big-endian length, then the header and body.
//! Encoding and decoding of messages is kafka-protocol's; record batches are ours
//! ([`crate::batch`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::BenchError;

/// Largest response frame accepted; Kafka's fetch.max.bytes is 50 MiB by default.
const MAX_FRAME_BYTES: usize = 256 << 20;

/// API versions negotiated with one broker: the highest each side speaks.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub list_offsets: i16,
    pub metadata: i16,
    pub create_topics: i16,
}

/// Versions brook-bench can speak, per API: (min, max).
const WANTED: [(ApiKey, i16, i16); 5] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
];

pub struct ConnWriter {
    pub addr: String,
    wr: OwnedWriteHalf,
    buf: BytesMut,
    next_correlation_id: i32,
    client_id: StrBytes,
}

pub struct ConnReader {
    pub addr: String,
    rd: OwnedReadHalf,
    buf: BytesMut,
}

/// A connection used request-by-request (setup, consumers).
pub struct Conn {
    pub w: ConnWriter,
    pub r: ConnReader,
    pub versions: Versions,
}

impl Conn {
    /// Connects and negotiates API versions (ApiVersions v0, which every broker answers).
    pub async fn connect(addr: &str, client_id: &str) -> Result<Conn, BenchError> {
        let io_err = |source| BenchError::Io {
            addr: addr.to_string(),
            source,
        };
        let stream = TcpStream::connect(addr).await.map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        let (rd, wr) = stream.into_split();
        let mut conn = Conn {
            w: ConnWriter {
                addr: addr.to_string(),
                wr,
                buf: BytesMut::with_capacity(1 << 20),
                next_correlation_id: 1,
                client_id: StrBytes::from_string(client_id.to_string()),
            },
            r: ConnReader {
                addr: addr.to_string(),
                rd,
                buf: BytesMut::with_capacity(1 << 20),
            },
            versions: Versions::default(),
        };
        let resp = conn.call(&ApiVersionsRequest::default(), 0).await?;
        if resp.error_code != 0 {
            return Err(broker_error("ApiVersions", resp.error_code));
        }
        let pick = |key: ApiKey| -> Result<i16, BenchError> {
            let (_, lo, hi) = WANTED.iter().find(|w| w.0 == key).copied().unwrap();
            let theirs = resp.api_keys.iter().find(|k| k.api_key == key as i16);
            match theirs {
                Some(k) if k.max_version >= lo && k.min_version <= hi => Ok(k.max_version.min(hi)),
                _ => Err(BenchError::Protocol(format!(
                    "{addr} does not support {key:?} v{lo}..v{hi}"
                ))),
            }
        };
        conn.versions = Versions {
            produce: pick(ApiKey::Produce)?,
            fetch: pick(ApiKey::Fetch)?,
            list_offsets: pick(ApiKey::ListOffsets)?,
            metadata: pick(ApiKey::Metadata)?,
            create_topics: pick(ApiKey::CreateTopics).unwrap_or(-1),
        };
        Ok(conn)
    }

    /// Sends one request and waits for its response.
    pub async fn call<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, BenchError> {
        let cid = self.w.encode(req, version)?;
        self.w.flush().await?;
        let frame = self.r.next_frame().await?;
        let (got, resp) = decode_response::<R>(frame, version)?;
        if got != cid {
            return Err(BenchError::Protocol(format!(
                "{}: correlation id {got}, expected {cid}",
                self.r.addr
            )));
        }
        Ok(resp)
    }
}

impl ConnWriter {
    /// Appends a framed request to the write buffer; returns its correlation id.
    pub fn encode<R: Request>(&mut self, req: &R, version: i16) -> Result<i32, BenchError> {
        let cid = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(cid)
            .with_client_id(Some(self.client_id.clone()));
        let start = self.buf.len();
        self.buf.put_u32(0);
        header
            .encode(&mut self.buf, R::header_version(version))
            .and_then(|_| req.encode(&mut self.buf, version))
            .map_err(|e| BenchError::Protocol(format!("encoding {:?}: {e}", R::KEY)))?;
        let len = (self.buf.len() - start - 4) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(cid)
    }

    /// Writes everything encoded so far.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = self.wr.write_all(&self.buf).await;
        self.buf.clear();
        res.map_err(|source| BenchError::Io {
            addr: self.addr.clone(),
            source,
        })
    }
}

impl ConnReader {
    /// The next response frame (without its length prefix). Cancel-safe: partial
    /// reads stay in the buffer.
    pub async fn next_frame(&mut self) -> Result<Bytes, BenchError> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if len > MAX_FRAME_BYTES {
                    return Err(BenchError::Protocol(format!(
                        "{}: response frame of {len} bytes",
                        self.addr
                    )));
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(self.buf.split_to(len).freeze());
                }
                self.buf.reserve(4 + len - self.buf.len());
            } else {
                self.buf.reserve(64 << 10);
            }
            let n = self
                .rd
                .read_buf(&mut self.buf)
                .await
                .map_err(|source| BenchError::Io {
                    addr: self.addr.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(BenchError::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
    }
}

/// Splits a response frame into its correlation id and decoded body.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
) -> Result<(i32, R::Response), BenchError> {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .map_err(|e| BenchError::Protocol(format!("{:?} response header: {e}", R::KEY)))?;
    let body = R::Response::decode(&mut frame, version)
        .map_err(|e| BenchError::Protocol(format!("{:?} v{version} response: {e}", R::KEY)))?;
    Ok((header.correlation_id, body))
}

pub fn broker_error(api: &'static str, code: i16) -> BenchError {
    BenchError::Broker {
        api,
        code,
        name: crate::error::error_name(code),
    }
}
