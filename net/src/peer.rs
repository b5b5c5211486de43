//! The metadata quorum's transport: the CONTROLLER listener and one outbound
//! connection per peer, on shard 0 beside the quorum member.
//!
//! Frames are `[len u32 LE][frame]`, the frame in Brook's own codec
//! (`brook_engine::cluster::codec::PeerFrame`). Between voters each direction
//! has its own connection: a member sends to a peer only on the connection it
//! opened to it, and reads only on connections peers opened to it. Nothing
//! here retries a Raft message: a lost connection loses what was queued for
//! it, and Raft resends what matters; the member is told the peer is
//! unreachable so that it probes instead of streaming.
//!
//! A broker-only node (an observer) opens two connections to a voter: one on
//! which it long-polls committed entries (`Fetch`, answered on the same
//! connection), moving to the active controller whenever a reply names
//! another one, and one on which it hands its proposals over.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use brook_engine::cluster::NodeId;
use brook_engine::cluster::codec::{self, PeerFrame};
use brook_engine::cluster::quorum::OBSERVER_POLL;
use brook_engine::cluster::quorum::Quorum;
use bytes::{BufMut, BytesMut};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};

/// Largest frame accepted from a peer (a snapshot of a very large cluster).
const MAX_FRAME: usize = 256 << 20;
/// Wait between attempts to reach a peer that is down.
const RECONNECT: Duration = Duration::from_millis(200);
/// A bound on connecting to a peer and on writing to it (a partitioned peer
/// does not answer SYNs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Sent data left unacknowledged this long closes the connection
/// (TCP_USER_TIMEOUT), so that a peer cut off and back is reconnected to at
/// once instead of after TCP's retransmission backoff (up to minutes).
const UNACKED_TIMEOUT: Duration = Duration::from_secs(5);
/// Keepalive on connections from peers (idle time before the first probe;
/// probes 3 s apart, 3 of them): the read side of a peer that vanished
/// without closing (a partition) ends instead of lingering. A silent
/// connection is not dropped for being silent: a follower sends nothing to
/// another follower for as long as neither leads.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// How much longer than the voter's long poll an observer waits for a reply.
const REPLY_GRACE: Duration = Duration::from_secs(2);

/// Binds the controller listener (refusing to start if the port is taken) and
/// starts accepting peers and connecting to them; without a listener (a
/// broker-only node) starts observing the voters instead.
pub fn start(
    quorum: Rc<Quorum>,
    listen: Option<SocketAddr>,
    voters: &[(NodeId, SocketAddr)],
) -> std::io::Result<()> {
    let Some(listen) = listen else {
        let voters = voters.to_vec();
        compio::runtime::spawn(observe_loop(quorum.clone(), voters.clone())).detach();
        compio::runtime::spawn(forward_loop(quorum, voters)).detach();
        tracing::info!("broker-only node: observing the metadata quorum");
        return Ok(());
    };
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

/// Reads one frame; `None` when the connection ends or sends nonsense.
async fn read_frame(stream: &mut TcpStream, peer: &dyn std::fmt::Display) -> Option<PeerFrame> {
    let compio::BufResult(res, len) = stream.read_exact([0u8; 4]).await;
    res.ok()?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        tracing::warn!(%peer, len, "quorum frame too large; closing the connection");
        return None;
    }
    let compio::BufResult(res, body) = stream.read_exact(Vec::with_capacity(len)).await;
    res.ok()?;
    match codec::decode_frame(&body) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "bad quorum frame; closing the connection");
            None
        }
    }
}

fn put_frame(out: &mut BytesMut, f: &PeerFrame) {
    let body = codec::encode_frame(f);
    out.put_u32_le(body.len() as u32);
    out.put_slice(&body);
}

async fn read_loop(quorum: Rc<Quorum>, mut stream: TcpStream, peer: SocketAddr) {
    limit_unacked(&stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(Duration::from_secs(3))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set keepalive on a quorum connection");
    }
    while let Some(frame) = read_frame(&mut stream, &peer).await {
        match frame {
            PeerFrame::Raft(m) => quorum.deliver(m),
            PeerFrame::Propose { data } => quorum.propose_forwarded(data),
            PeerFrame::Fetch { node, applied } => {
                let reply = quorum.serve_observer(node, applied).await;
                let mut out = BytesMut::new();
                put_frame(&mut out, &reply);
                let compio::BufResult(res, _) = stream.write_all(out.freeze()).await;
                if res.is_err() {
                    return;
                }
            }
            PeerFrame::Entries { .. } | PeerFrame::Image { .. } => {
                tracing::warn!(%peer, "a voter's reply sent to a voter; closing the connection");
                return;
            }
        }
    }
}

async fn send_loop(quorum: Rc<Quorum>, peer: NodeId, addr: SocketAddr) {
    let mut reported = false;
    loop {
        let Some(mut stream) = connect(addr).await else {
            if !reported {
                tracing::debug!(peer, %addr, "cannot reach quorum peer");
                reported = true;
            }
            quorum.report_unreachable(peer);
            compio::time::sleep(RECONNECT).await;
            continue;
        };
        reported = false;
        loop {
            let msgs = quorum.outgoing(peer).await;
            let mut out = BytesMut::new();
            for m in msgs {
                put_frame(&mut out, &PeerFrame::Raft(m));
            }
            let sent = compio::time::timeout(CONNECT_TIMEOUT, stream.write_all(out.freeze())).await;
            if !matches!(sent, Ok(compio::BufResult(Ok(_), _))) {
                quorum.report_unreachable(peer);
                break;
            }
        }
    }
}

/// Connects to `addr` within [`CONNECT_TIMEOUT`] (a partitioned voter does
/// not answer SYNs; the observer must move on to another).
async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    match compio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            limit_unacked(&s);
            Some(s)
        }
        _ => None,
    }
}

fn limit_unacked(s: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(s).set_tcp_user_timeout(Some(UNACKED_TIMEOUT)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT on a quorum connection");
    }
}

/// Observer: long-polls committed metadata from a voter, following the
/// active controller (whose fetches count as this broker's heartbeats), and
/// trying the next voter when one fails or goes silent.
async fn observe_loop(quorum: Rc<Quorum>, voters: Vec<(NodeId, SocketAddr)>) {
    let mut target = 0;
    loop {
        let (voter, addr) = voters[target % voters.len()];
        let Some(mut stream) = connect(addr).await else {
            target += 1;
            compio::time::sleep(RECONNECT).await;
            continue;
        };
        loop {
            let mut out = BytesMut::new();
            let fetch = PeerFrame::Fetch {
                node: quorum.node(),
                applied: quorum.applied(),
            };
            put_frame(&mut out, &fetch);
            let compio::BufResult(res, _) = stream.write_all(out.freeze()).await;
            if res.is_err() {
                target += 1;
                break;
            }
            let reply =
                compio::time::timeout(OBSERVER_POLL + REPLY_GRACE, read_frame(&mut stream, &addr));
            let Ok(Some(reply)) = reply.await else {
                tracing::debug!(voter, %addr, "no metadata from this voter; trying the next");
                target += 1;
                break;
            };
            match quorum.observed(reply) {
                Some(leader) if leader != voter => {
                    if let Some(i) = voters.iter().position(|(n, _)| *n == leader) {
                        target = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        compio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Observer: hands its proposals to the active controller (or any voter,
/// which forwards them to it). A proposal lost on the way is proposed again
/// by the quorum member.
async fn forward_loop(quorum: Rc<Quorum>, voters: Vec<(NodeId, SocketAddr)>) {
    let mut conn: Option<(NodeId, TcpStream)> = None;
    let mut next = 0;
    loop {
        let proposals = quorum.forwarded().await;
        let wanted = quorum.leader();
        if conn
            .as_ref()
            .is_some_and(|(n, _)| wanted.is_some_and(|w| w != *n))
        {
            conn = None;
        }
        if conn.is_none() {
            let (voter, addr) = match wanted.and_then(|w| voters.iter().find(|(n, _)| *n == w)) {
                Some(&v) => v,
                None => {
                    next += 1;
                    voters[next % voters.len()]
                }
            };
            conn = connect(addr).await.map(|s| (voter, s));
        }
        let Some((_, stream)) = conn.as_mut() else {
            continue;
        };
        let mut out = BytesMut::new();
        for data in proposals {
            put_frame(&mut out, &PeerFrame::Propose { data });
        }
        let sent = compio::time::timeout(CONNECT_TIMEOUT, stream.write_all(out.freeze())).await;
        if !matches!(sent, Ok(compio::BufResult(Ok(_), _))) {
            conn = None;
        }
    }
}
