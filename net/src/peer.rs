//! The metadata quorum's transport: the CONTROLLER listener and one outbound
//! connection per peer, on shard 0 beside the quorum member.
//!
//! Frames are `[len u32 LE][message]`, the message in Brook's own Raft codec
//! (`brook_engine::cluster::codec`). Each direction has its own connection: a
//! member sends to a peer only on the connection it opened to it, and reads
//! only on connections peers opened to it. Nothing here retries a message:
//! a lost connection loses what was queued for it, and Raft resends what
//! matters; the member is told the peer is unreachable so that it probes
//! instead of streaming.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use brook_engine::cluster::NodeId;
use brook_engine::cluster::codec;
use brook_engine::cluster::quorum::Quorum;
use bytes::{BufMut, BytesMut};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};

/// Largest frame accepted from a peer (a snapshot of a very large cluster).
const MAX_FRAME: usize = 256 << 20;
/// Wait between attempts to reach a peer that is down.
const RECONNECT: Duration = Duration::from_millis(200);

/// Binds the controller listener (refusing to start if the port is taken) and
/// starts accepting peers and connecting to them.
pub fn start(
    quorum: Rc<Quorum>,
    listen: SocketAddr,
    voters: &[(NodeId, SocketAddr)],
) -> std::io::Result<()> {
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let q = quorum.clone();
    compio::runtime::spawn(accept_loop(q, listener)).detach();
    for &(node, addr) in voters {
        if node != quorum.node() {
            compio::runtime::spawn(send_loop(quorum.clone(), node, addr)).detach();
        }
    }
    tracing::info!(%listen, "quorum listener up");
    Ok(())
}

async fn accept_loop(quorum: Rc<Quorum>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                compio::runtime::spawn(read_loop(quorum.clone(), stream, peer)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "quorum accept failed");
                compio::time::sleep(RECONNECT).await;
            }
        }
    }
}

async fn read_loop(quorum: Rc<Quorum>, mut stream: TcpStream, peer: SocketAddr) {
    loop {
        let compio::BufResult(res, len) = stream.read_exact([0u8; 4]).await;
        if res.is_err() {
            return;
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            tracing::warn!(%peer, len, "quorum frame too large; closing the connection");
            return;
        }
        let compio::BufResult(res, body) = stream.read_exact(Vec::with_capacity(len)).await;
        if res.is_err() {
            return;
        }
        match codec::decode_message(&body) {
            Ok(m) => quorum.deliver(m),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "bad quorum message; closing the connection");
                return;
            }
        }
    }
}

async fn send_loop(quorum: Rc<Quorum>, peer: NodeId, addr: SocketAddr) {
    let mut reported = false;
    loop {
        let mut stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                if !reported {
                    tracing::debug!(peer, %addr, error = %e, "cannot reach quorum peer");
                    reported = true;
                }
                quorum.report_unreachable(peer);
                compio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        reported = false;
        let _ = stream.set_nodelay(true);
        loop {
            let msgs = quorum.outgoing(peer).await;
            let mut out = BytesMut::new();
            for m in &msgs {
                let body = codec::encode_message(m);
                out.put_u32_le(body.len() as u32);
                out.put_slice(&body);
            }
            let compio::BufResult(res, _) = stream.write_all(out.freeze()).await;
            if res.is_err() {
                quorum.report_unreachable(peer);
                break;
            }
        }
    }
}
