//! One shard's protocol state (`ShardServer`): its engine shard, settings,
//! request memory budget, quotas, and the connection registry used for a
//! graceful stop.
//!
//! Every shard listens on the same address with SO_REUSEPORT, and each
//! connection lives on the shard that accepted it. A request for a partition
//! owned by another shard is routed by the engine over the cross-shard rings.
//!
//! Listening and accepting (and steering) live in `listener`.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use brook_engine::Shard;

use crate::security::Listener;
use futures::FutureExt;
use futures::channel::oneshot;

/// Settings of the protocol layer, shared read-only by all shards.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The first listener's address and advertised address: the one the
    /// broker registers in a cluster and other brokers reach it on.
    pub listen: SocketAddr,
    pub advertise_host: String,
    pub advertise_port: i32,
    /// Every client listener, the first being the one above (Kafka's
    /// `listeners` without the CONTROLLER listener).
    pub listeners: Vec<Arc<Listener>>,
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
    /// Where shard 0 serves Prometheus metrics (`crate::metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// ACL enforcement (`security::authz`).
    pub authz: crate::security::authz::AuthzConfig,
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
            listeners: vec![Arc::new(Listener::plaintext(
                listen,
                advertise_host.clone(),
                advertise_port,
            ))],
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
            metrics_listen: None,
            authz: Default::default(),
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
    pub(crate) fn admit(&self, ip: std::net::IpAddr, cfg: &NetConfig) -> Result<(), &'static str> {
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

    pub(crate) fn release(&self, ip: std::net::IpAddr) {
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
    pub(crate) fn log_refusal(&self, peer: SocketAddr, limit: &str) {
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
    pub(crate) connections: Arc<ConnectionCounts>,
    open_connections: Cell<usize>,
    drained: StopSignal,
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

    pub(crate) fn connection_opened(&self) {
        self.open_connections.set(self.open_connections.get() + 1);
        crate::metrics::record_connection(true);
    }

    pub(crate) fn connection_closed(&self) {
        crate::metrics::record_connection(false);
        let n = self.open_connections.get() - 1;
        self.open_connections.set(n);
        if n == 0 && self.stop.is_fired() {
            self.drained.fire();
        }
    }

    /// How long to throttle `client` after it moved `bytes`, under the
    /// quota of its user and client id (zero when none applies).
    pub fn throttle(
        &self,
        client: &crate::handlers::ClientInfo,
        dir: crate::quota::Direction,
        bytes: usize,
    ) -> Duration {
        use brook_engine::meta::quota::{CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE};
        let quotas = self.shard.quotas();
        let key = match dir {
            crate::quota::Direction::Produce => PRODUCER_BYTE_RATE,
            crate::quota::Direction::Fetch => CONSUMER_BYTE_RATE,
        };
        let user = client
            .principal
            .strip_prefix("User:")
            .unwrap_or(&client.principal);
        let wait = match quotas.limit(key, user, &client.client_id) {
            Some((rate, measured)) => {
                (self.throttler).record(&measured, dir, bytes, rate, std::time::Instant::now())
            }
            None => Duration::ZERO,
        };
        if !wait.is_zero() {
            crate::metrics::record_throttle(match dir {
                crate::quota::Direction::Produce => "produce",
                crate::quota::Direction::Fetch => "fetch",
            });
        }
        wait
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
