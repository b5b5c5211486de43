//! Per-shard listeners and the connection registry used for a graceful stop.
//!
//! Every shard listens on the same address with SO_REUSEPORT, and each
//! connection lives on the shard that accepted it. A request for a partition
//! owned by another shard is routed by the engine over the cross-shard rings.
//!
//! **Steering.** Which listener gets a new connection is decided by a classic BPF
//! program attached to the reuseport group ([`bind_listeners`]): the index of the
//! shard running on the CPU that processed the connection's SYN. With the NIC's
//! receive queues' interrupts (RSS, `/proc/irq/*/smp_affinity_list`) spread one
//! queue per core, a connection's packets, its socket and its requests then all
//! stay on one core, as the design asks. Without a program the kernel hashes the
//! 4-tuple and a connection usually lands on another core than its packets.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use brook_engine::Shard;
use futures::FutureExt;
use futures::channel::oneshot;

/// Settings of the protocol layer, shared read-only by all shards.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub listen: SocketAddr,
    pub advertise_host: String,
    pub advertise_port: i32,
    pub node_id: i32,
    pub cluster_id: String,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Requests read ahead of their responses on one connection.
    pub max_in_flight_per_connection: usize,
    /// Bytes of requests (from their length prefix until their response is
    /// written) one shard may hold; beyond it connections stop reading.
    pub request_memory_per_shard: usize,
    /// Kafka's `max.connections` (all shards) and `max.connections.per.ip`.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Kafka's `connections.max.idle.ms`: a connection with nothing to say is closed.
    pub connections_max_idle: Duration,
    /// A connection that stops in the middle of a request frame is closed after this.
    pub partial_request_timeout: Duration,
    /// Hand each new connection to the shard on the CPU that received it (when
    /// shards are pinned and no more numerous than cores); see the module doc.
    pub steer_connections: bool,
}

impl NetConfig {
    /// Defaults for everything but the addresses and identity.
    pub fn new(
        listen: SocketAddr,
        advertise_host: String,
        advertise_port: i32,
        node_id: i32,
    ) -> NetConfig {
        NetConfig {
            listen,
            advertise_host,
            advertise_port,
            node_id,
            cluster_id: String::new(),
            max_request_bytes: 100 << 20,
            max_in_flight_per_connection: 64,
            request_memory_per_shard: 512 << 20,
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            connections_max_idle: Duration::from_secs(600),
            partial_request_timeout: Duration::from_secs(60),
            steer_connections: true,
        }
    }
}

/// Open connections, counted across shards: touched on accept and close only.
#[derive(Default)]
pub struct ConnectionCounts {
    total: std::sync::atomic::AtomicUsize,
    per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    refusals_logged: std::sync::atomic::AtomicUsize,
}

impl ConnectionCounts {
    /// Counts a new connection, or says which limit it would break.
    fn admit(&self, ip: std::net::IpAddr, cfg: &NetConfig) -> Result<(), &'static str> {
        use std::sync::atomic::Ordering;
        if self.total.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("max.connections");
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_ip.entry(ip).or_default();
        if *n >= cfg.max_connections_per_ip {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("max.connections.per.ip");
        }
        *n += 1;
        Ok(())
    }

    fn release(&self, ip: std::net::IpAddr) {
        self.total.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// Logs the first refusals, then every 1000th, so a flood does not flood the log.
    fn log_refusal(&self, peer: SocketAddr, limit: &str) {
        let n = self
            .refusals_logged
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n < 10 || n.is_multiple_of(1000) {
            tracing::warn!(%peer, limit, refused_so_far = n + 1, "refusing connection: limit reached");
        }
    }
}

/// A one-shot broadcast: once fired, every current and future waiter returns.
#[derive(Default)]
pub struct StopSignal {
    fired: Cell<bool>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

impl StopSignal {
    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    pub fn wait(&self) -> impl std::future::Future<Output = ()> + use<> {
        let (tx, rx) = oneshot::channel();
        if self.fired.get() {
            let _ = tx.send(());
        } else {
            let mut waiters = self.waiters.borrow_mut();
            // Connections that closed leave cancelled senders: prune as the list doubles.
            if waiters.len() >= 64 && waiters.len().is_power_of_two() {
                waiters.retain(|w| !w.is_canceled());
            }
            waiters.push(tx);
        }
        rx.map(|_| ())
    }
}

/// The protocol side of one shard.
pub struct ShardServer {
    pub shard: Rc<Shard>,
    pub config: Arc<NetConfig>,
    pub stop: StopSignal,
    pub memory: Rc<crate::memory::MemoryBudget>,
    throttler: crate::quota::Throttler,
    connections: Arc<ConnectionCounts>,
    open_connections: Cell<usize>,
    drained: StopSignal,
}

fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// Binds one SO_REUSEPORT listener per shard, in shard order, so listener `i`
/// is socket `i` of the reuseport group. With `steer`, attaches the program
/// that picks socket `cpu % shards` for each new connection: shard `i` runs
/// pinned on core `i`, so the connection goes to the shard on the CPU that
/// received it. Callers steer only when shards are pinned and no more numerous
/// than cores (otherwise some shards would never be picked). If the kernel
/// refuses the program, the group falls back to hashing, with a warning.
pub fn bind_listeners(
    addr: SocketAddr,
    shards: usize,
    steer: bool,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let listeners = (0..shards)
        .map(|_| bind_reuseport(addr))
        .collect::<std::io::Result<Vec<_>>>()?;
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
    Ok(listeners)
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

impl ShardServer {
    pub fn new(
        shard: Rc<Shard>,
        config: Arc<NetConfig>,
        connections: Arc<ConnectionCounts>,
    ) -> Rc<ShardServer> {
        Rc::new(ShardServer {
            shard,
            memory: crate::memory::MemoryBudget::new(config.request_memory_per_shard),
            throttler: crate::quota::Throttler::default(),
            connections,
            config,
            stop: StopSignal::default(),
            open_connections: Cell::new(0),
            drained: StopSignal::default(),
        })
    }

    /// Accepts on this shard's listener (from [`bind_listeners`]) in a
    /// background task.
    pub fn listen(self: &Rc<Self>, std_listener: std::net::TcpListener) -> std::io::Result<()> {
        let listener = compio::net::TcpListener::from_std(std_listener)?;
        let me = self.clone();
        compio::runtime::spawn(async move { me.accept_loop(listener).await }).detach();
        Ok(())
    }

    async fn accept_loop(self: Rc<Self>, listener: compio::net::TcpListener) {
        let mut stop = self.stop.wait().fuse();
        loop {
            let accepted = futures::select_biased! {
                _ = stop => return,
                r = listener.accept().fuse() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(shard = self.shard.id.0, %peer, "accepted");
                    if let Err(limit) = self.connections.admit(peer.ip(), &self.config) {
                        self.connections.log_refusal(peer, limit);
                        drop(stream);
                        continue;
                    }
                    self.open_connections.set(self.open_connections.get() + 1);
                    let me = self.clone();
                    compio::runtime::spawn(async move {
                        crate::conn::serve(&me, stream, peer).await;
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

    fn connection_closed(&self) {
        let n = self.open_connections.get() - 1;
        self.open_connections.set(n);
        if n == 0 && self.stop.is_fired() {
            self.drained.fire();
        }
    }

    /// How long to throttle `client_id` after it moved `bytes`, under its quota
    /// (zero when it has none).
    pub fn throttle(
        &self,
        client_id: &str,
        dir: crate::quota::Direction,
        bytes: usize,
    ) -> Duration {
        let quotas = self.shard.quotas();
        let rate = quotas.for_client(client_id).and_then(|q| match dir {
            crate::quota::Direction::Produce => q.producer_byte_rate,
            crate::quota::Direction::Fetch => q.consumer_byte_rate,
        });
        match rate {
            Some(r) => self
                .throttler
                .record(client_id, dir, bytes, r, std::time::Instant::now()),
            None => Duration::ZERO,
        }
    }

    /// Stops accepting, lets every connection finish the requests it has read,
    /// and waits (at most `grace`) for them to close.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.fire();
        if self.open_connections.get() == 0 {
            return;
        }
        if compio::time::timeout(grace, self.drained.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.open_connections.get(),
                "connections still open after the shutdown grace period"
            );
        }
    }
}
