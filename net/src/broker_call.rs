//! One Kafka request from this broker to another and its response, on a
//! connection the caller owns: the follower fetchers' Fetch and the
//! transaction coordinator's WriteTxnMarkers.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// A leader that does not accept a connection within this is tried again
/// (a partitioned one does not answer SYNs).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Sent data left unacknowledged this long closes the connection
/// (TCP_USER_TIMEOUT): after a network partition heals the caller
/// reconnects at once rather than after TCP's retransmission backoff.
const UNACKED_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to another broker's Kafka listener, with the timeouts above.
pub async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let conn = compio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
    let _ = conn.set_nodelay(true);
    if let Err(e) = socket2::SockRef::from(&conn).set_tcp_user_timeout(Some(UNACKED_TIMEOUT)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT on a broker connection");
    }
    Ok(conn)
}

/// Sends `req` as `key` v`version` and reads its response (at most
/// `max_frame` bytes, within `timeout`).
#[allow(clippy::too_many_arguments)]
pub async fn call<Req, Resp>(
    conn: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &Req,
    correlation: i32,
    client_id: &StrBytes,
    max_frame: usize,
    timeout: Duration,
) -> std::io::Result<Resp>
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(client_id.clone()));
    let mut buf = BytesMut::new();
    buf.put_u32(0);
    header
        .encode(&mut buf, Req::header_version(version))
        .and_then(|_| req.encode(&mut buf, version))
        .map_err(|e| bad(format!("encoding a {key:?} request: {e}")))?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    let compio::BufResult(res, _) = conn.write_all(buf.freeze()).await;
    res?;
    let read = async {
        let compio::BufResult(res, len) = conn.read_exact([0u8; 4]).await;
        res?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max_frame {
            return Err(bad(format!("{key:?} response of {len} bytes")));
        }
        let compio::BufResult(res, body) = conn.read_exact(Vec::with_capacity(len)).await;
        res?;
        Ok(body)
    };
    let body = compio::time::timeout(timeout, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "broker response"))??;
    let mut frame = Bytes::from(body);
    let header = ResponseHeader::decode(&mut frame, Resp::header_version(version))
        .map_err(|e| bad(format!("{key:?} response header: {e}")))?;
    if header.correlation_id != correlation {
        return Err(bad(format!("{key:?} response out of order")));
    }
    let resp =
        Resp::decode(&mut frame, version).map_err(|e| bad(format!("{key:?} response: {e}")))?;
    if frame.has_remaining() {
        return Err(bad(format!("trailing bytes after a {key:?} response")));
    }
    Ok(resp)
}
