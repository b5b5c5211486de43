//! One client connection: framing, pipelining, and responses in request order.
//!
//! The read side parses frames out of one growing `BytesMut` (a frame is handed to
//! its handler as a zero-copy `Bytes` slice), dispatches each, and queues the
//! spawned request task on a bounded channel; the write side awaits those tasks in
//! the order the requests arrived and writes their responses. So requests on one
//! connection are processed concurrently — a pipelining producer's batches share a
//! group commit — while responses leave in order, as the protocol requires. The
//! channel bound (`max_in_flight_per_connection`) is the backpressure: when it is
//! full the connection stops reading and TCP slows the client down.
//!
//! On a TLS listener the handshake runs first, and both sides then go through
//! the connection's [`TlsConn`]; on a SASL listener the [`Session`] admits
//! nothing but the authentication until it succeeds, holds frames to
//! `MAX_UNAUTHENTICATED_FRAME`, and closes a connection that has not
//! authenticated within `AUTHENTICATION_TIMEOUT`.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures::channel::mpsc;
use futures::{FutureExt, SinkExt, StreamExt};

use crate::dispatch::dispatch;
use crate::memory::Permit;
use crate::routes::Dispatched;
use crate::security::Session;
use crate::security::tls::TlsConn;
use crate::server::ShardServer;

/// A request being handled, the request memory it holds until its response is
/// written, and for a Fetch the connection's fetch turn.
type Pending = (
    compio::runtime::JoinHandle<Option<Bytes>>,
    Permit,
    Option<FetchTurn>,
);

/// One Fetch at a time per connection, from its arrival until its response is
/// written, as Kafka handles every request of a connection. Real consumers send
/// one Fetch per broker at a time anyway; a client that pipelines Fetches and
/// never reads the answers would otherwise make the broker hold up to
/// `max_in_flight_per_connection` responses of up to `FETCH_MAX_BYTES` each.
type FetchTurn = futures::lock::OwnedMutexGuard<()>;

const FETCH_API_KEY: i16 = 1;

const READ_CHUNK_BYTES: usize = 256 << 10;

/// Smallest valid request frame: api key, api version, correlation id.
const MIN_FRAME_BYTES: usize = 8;

pub async fn serve(
    srv: &Rc<ShardServer>,
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
) {
    let _ = stream.set_nodelay(true);
    let l = srv.config.listeners[listener].clone();
    tracing::debug!(%peer, shard = srv.shard.id.0, listener = %l.name, "connection opened");
    let session = Rc::new(Session::new(l.clone(), listener));
    let tls = match &l.tls {
        None => None,
        Some(acceptor) => {
            let limit = crate::security::AUTHENTICATION_TIMEOUT;
            match TlsConn::accept(&mut stream, acceptor.config(), limit).await {
                Ok(t) => {
                    if let Some(subject) = t.peer_subject() {
                        session.set_principal(format!("User:{subject}"));
                    }
                    Some(t)
                }
                Err(why) => {
                    tracing::info!(%peer, listener = %l.name, "TLS handshake failed: {why}");
                    return;
                }
            }
        }
    };
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Pending>(srv.config.max_in_flight_per_connection);
    let writer_task = compio::runtime::spawn(write_loop(writer, tls.clone(), rx));
    read_loop(srv, &session, reader, tls, tx, peer).await;
    let _ = writer_task.await;
    tracing::debug!(%peer, "connection closed");
}

/// The size of the frame at the front of `buf` (length prefix included), once
/// its 4-byte length has arrived. `Err` carries the reason to close the connection.
fn frame_size(buf: &[u8], max_request_bytes: usize) -> Result<Option<usize>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < MIN_FRAME_BYTES as i32 {
        return Err(format!(
            "frame length {len} is smaller than a request header"
        ));
    }
    if len as usize > max_request_bytes {
        return Err(format!(
            "frame of {len} bytes exceeds {max_request_bytes} (socket.request.max.bytes; before authentication sasl.server.max.receive.size)"
        ));
    }
    Ok(Some(4 + len as usize))
}

/// Splits one complete frame off the front of `buf`, if there is one.
/// `Err` carries the reason the connection must be closed.
fn next_frame(buf: &mut BytesMut, max_request_bytes: usize) -> Result<Option<Bytes>, String> {
    let Some(size) = frame_size(buf, max_request_bytes)? else {
        return Ok(None);
    };
    if buf.len() < size {
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size - 4).freeze()))
}

async fn read_loop(
    srv: &Rc<ShardServer>,
    session: &Rc<Session>,
    mut reader: TcpStream,
    tls: Option<TlsConn>,
    mut tx: mpsc::Sender<Pending>,
    peer: SocketAddr,
) {
    let cfg = &srv.config;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut stop = srv.stop.wait().fuse();
    // Request memory for the frame at the front of `buf`, taken as soon as its
    // length is known and before its body is buffered.
    let mut permit: Option<Permit> = None;
    let fetch_turn = std::sync::Arc::new(futures::lock::Mutex::new(()));
    loop {
        loop {
            let max_frame = session.max_frame(cfg.max_request_bytes);
            let size = match frame_size(&buf, max_frame) {
                Ok(Some(size)) => size,
                Ok(None) => break,
                Err(why) => {
                    tracing::warn!(%peer, "closing connection: {why}");
                    return;
                }
            };
            if permit.is_none() {
                let acquire = srv.memory.acquire(size);
                permit = futures::select_biased! {
                    _ = stop => return,
                    p = acquire.fuse() => Some(p),
                };
            }
            let frame = match next_frame(&mut buf, max_frame) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(why) => {
                    tracing::warn!(%peer, "closing connection: {why}");
                    return;
                }
            };
            let held = permit.take().expect("permit taken above");
            let turn =
                if frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == FETCH_API_KEY {
                    let next = fetch_turn.clone().lock_owned();
                    futures::select_biased! {
                        _ = stop => return,
                        t = next.fuse() => Some(t),
                    }
                } else {
                    None
                };
            match dispatch(srv, session, peer, frame) {
                Dispatched::Respond(fut) => {
                    let pending = (compio::runtime::spawn(fut), held, turn);
                    if tx.send(pending).await.is_err() {
                        return;
                    }
                }
                Dispatched::RespondThenClose(fut) => {
                    let pending = (compio::runtime::spawn(fut), held, turn);
                    let _ = tx.send(pending).await;
                    return;
                }
                Dispatched::NoResponse(fut) => compio::runtime::spawn(async move {
                    fut.await;
                    drop(held);
                })
                .detach(),
                Dispatched::Close(why) => {
                    tracing::warn!(%peer, "closing connection: {why}");
                    return;
                }
            }
        }
        if srv.stop.is_fired() {
            return;
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        // A client may idle between requests, but not in the middle of one,
        // nor before it has authenticated.
        let (mut quiet_limit, mut what) = if buf.is_empty() {
            (cfg.connections_max_idle, "idle")
        } else {
            (
                cfg.partial_request_timeout,
                "silent in the middle of a request",
            )
        };
        if let Some(deadline) = session.authentication_deadline() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left < quiet_limit {
                (quiet_limit, what) = (left, "not authenticated in time");
            }
        }
        let read_more = async {
            match &tls {
                None => reader.append(buf).await,
                Some(t) => {
                    let (r, b) = t.read_plain(&mut reader, buf).await;
                    compio::BufResult(r, b)
                }
            }
        };
        let read = futures::select_biased! {
            _ = stop => return,
            r = read_more.fuse() => r,
            _ = compio::time::sleep(quiet_limit).fuse() => {
                tracing::info!(%peer, "closing connection: {what} for {quiet_limit:?}");
                return;
            }
        };
        let compio::BufResult(res, b) = read;
        buf = b;
        match res {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "read failed");
                return;
            }
        }
    }
}

async fn write_loop(mut writer: TcpStream, tls: Option<TlsConn>, mut rx: mpsc::Receiver<Pending>) {
    while let Some((pending, permit, turn)) = rx.next().await {
        let response = match pending.await {
            Ok(Some(r)) => r,
            // Only requests that expect an answer are queued here: `None` means the
            // response could not be encoded, and the client would wait forever.
            Ok(None) | Err(_) => {
                tracing::error!("request task failed; closing connection");
                break;
            }
        };
        let res = match &tls {
            None => writer.write_all(response).await.0,
            Some(t) => t.write_plain(&mut writer, response).await,
        };
        drop(permit);
        drop(turn);
        if res.is_err() {
            break;
        }
    }
    if let Some(t) = &tls {
        t.close(&mut writer).await;
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_bad_lengths_close() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0]);
        assert_eq!(next_frame(&mut b, 100).unwrap().unwrap().len(), 8);
        assert_eq!(next_frame(&mut b, 100).unwrap(), None);
        let mut neg = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(next_frame(&mut neg, 100).is_err());
        let mut huge = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert!(next_frame(&mut huge, 100).is_err());
    }
}
