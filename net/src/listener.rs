//! Listening: one SO_REUSEPORT listener per shard, bound in shard order, and
//! each shard's accept loop, which admits a connection (connection limits) and
//! hands it to `conn`.
//!
//! **Steering.** Which listener gets a new connection is decided by a classic BPF
//! program attached to the reuseport group ([`bind_listeners`]): the index of the
//! shard running on the CPU that processed the connection's SYN. With the NIC's
//! receive queues' interrupts (RSS, `/proc/irq/*/smp_affinity_list`) spread one
//! queue per core, a connection's packets, its socket and its requests then all
//! stay on one core, as the design asks. Without a program the kernel hashes the
//! 4-tuple and a connection usually lands on another core than its packets.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;

use crate::server::ShardServer;

fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Checks that `addr` can be listened on: a plain bind (not SO_REUSEPORT), so
/// that another process's listener on the port is an error, as it is for
/// Kafka, rather than a reuseport group shared with it. Nothing listens, so
/// no connection is accepted by the check. A broker killed just before may
/// still be closing its listeners: this waits up to 10 s.
pub fn ensure_port_free(addr: SocketAddr) -> Result<(), String> {
    use socket2::{Domain, Socket, Type};
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let bound = Socket::new(Domain::for_address(addr), Type::STREAM, None).and_then(|s| {
            s.set_reuse_address(true)?;
            s.bind(&addr.into())
        });
        match bound {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(format!("cannot listen on {addr}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Binds one SO_REUSEPORT socket per shard, in shard order, without listening:
/// until [`start_listening`], a connection to the port is refused, so no
/// client reaches a broker whose shards are still opening their partitions.
pub fn bind_listeners(
    addr: SocketAddr,
    shards: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    (0..shards).map(|_| bind_reuseport(addr)).collect()
}

/// Listens on the sockets of [`bind_listeners`], in shard order, so socket `i`
/// is socket `i` of the reuseport group. With `steer`, attaches the program
/// that picks socket `cpu % shards` for each new connection: shard `i` runs
/// pinned on core `i`, so the connection goes to the shard on the CPU that
/// received it. Callers steer only when shards are pinned and no more numerous
/// than cores (otherwise some shards would never be picked). If the kernel
/// refuses the program, the group falls back to hashing, with a warning.
pub fn start_listening(listeners: &[std::net::TcpListener], steer: bool) -> std::io::Result<()> {
    for l in listeners {
        socket2::SockRef::from(l).listen(1024)?;
    }
    let shards = listeners.len();
    if steer && let Some(first) = listeners.first() {
        match attach_cpu_steering(first, shards) {
            Ok(()) => tracing::info!(
                shards,
                "connections steered to the shard on their receiving CPU"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot steer connections by CPU; the kernel hashes them over the shards")
            }
        }
    }
    Ok(())
}

/// `SO_ATTACH_REUSEPORT_CBPF`: `A = cpu; A %= shards; return A`.
fn attach_cpu_steering(listener: &std::net::TcpListener, shards: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let program = [
        stmt(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        ),
        stmt(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, shards as u32),
        stmt(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    /// Linux's SO_ATTACH_REUSEPORT_CBPF (asm-generic/socket.h).
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    // SAFETY: `prog` points at `program`, both alive for the call; the kernel
    // copies the program.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Accepts on this shard's listener (from [`start_listening`]) in a background
/// task, until the server's stop signal.
/// `index` is the listener's place in `NetConfig::listeners`.
pub fn listen(
    server: &Rc<ShardServer>,
    std_listener: std::net::TcpListener,
    index: usize,
) -> std::io::Result<()> {
    let listener = compio::net::TcpListener::from_std(std_listener)?;
    let me = server.clone();
    compio::runtime::spawn(async move { accept_loop(me, listener, index).await }).detach();
    Ok(())
}

async fn accept_loop(server: Rc<ShardServer>, listener: compio::net::TcpListener, index: usize) {
    let mut stop = server.stop.wait().fuse();
    loop {
        let accepted = futures::select_biased! {
            _ = stop => return,
            r = listener.accept().fuse() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::debug!(shard = server.shard.id.0, %peer, "accepted");
                if let Err(limit) = server.connections.admit(peer.ip(), &server.config) {
                    server.connections.log_refusal(peer, limit);
                    drop(stream);
                    continue;
                }
                server.connection_opened();
                let me = server.clone();
                compio::runtime::spawn(async move {
                    crate::conn::serve(&me, stream, peer, index).await;
                    me.connections.release(peer.ip());
                    me.connection_closed();
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                compio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
