//! One TCP connection to a broker, split in a writing half and a reading half so
//! that a task can pipeline requests and read responses as they come.
//!
//! Frames are Kafka's: a 4-byte big-endian length, then the header and body.
//! Encoding and decoding of messages is kafka-protocol's; record batches are ours
//! ([`crate::batch`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

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

type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

/// TLS for every connection (Kafka's `security.protocol=SSL`), when set.
static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Connects with TLS from now on: the broker's certificate must chain to a
/// CA in `ca` (PEM); `client` (PEM certificate chain, PEM key) is sent
/// when the broker asks for one (mTLS).
pub fn use_tls(ca: &Path, client: Option<(&Path, &Path)>) -> Result<(), BenchError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &Path, e: &dyn std::fmt::Display| {
        BenchError::Config(format!("{}: {e}", what.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad(ca, &e))? {
        roots
            .add(c.map_err(|e| bad(ca, &e))?)
            .map_err(|e| bad(ca, &e))?;
    }
    // ring: no C toolchain beyond cc; rustls deprecates it for lacking
    // post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(cert, &e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(cert, &e))?
        }
    };
    TLS.set(Arc::new(config))
        .map_err(|_| BenchError::Config("TLS set twice".into()))
}

/// A connection to `addr`, in TLS when [`use_tls`] was called, split in halves.
async fn open(addr: &str) -> Result<(ReadHalf, WriteHalf), BenchError> {
    let io_err = |source| BenchError::Io {
        addr: addr.to_string(),
        source,
    };
    let stream = TcpStream::connect(addr).await.map_err(io_err)?;
    stream.set_nodelay(true).map_err(io_err)?;
    let Some(config) = TLS.get() else {
        let (rd, wr) = stream.into_split();
        return Ok((Box::new(rd), Box::new(wr)));
    };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_matches(|c| c == '[' || c == ']').to_string();
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| BenchError::Config(format!("{addr}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
        .map_err(io_err)?;
    let (rd, wr) = tokio::io::split(tls);
    Ok((Box::new(rd), Box::new(wr)))
}

pub struct ConnWriter {
    pub addr: String,
    wr: WriteHalf,
    buf: BytesMut,
    next_correlation_id: i32,
    client_id: StrBytes,
}

pub struct ConnReader {
    pub addr: String,
    rd: ReadHalf,
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
        let (rd, wr) = open(addr).await?;
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
