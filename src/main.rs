//! The `brook` binary: wires config, engine and network together. Nothing else.
//!
//! One thread per shard, each running its own compio (io_uring) runtime pinned to
//! a core; the main thread only waits for SIGTERM/SIGINT and then asks every shard
//! to stop accepting, finish in-flight requests, flush, and exit.

mod config;
mod listeners;

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use brook_engine::meta::data_dir::DataDir;
use brook_engine::{EngineShared, Shard, ShardId};
use brook_net::{ConnectionCounts, NetConfig, ShardServer};
use clap::Parser;
use futures::channel::oneshot;

/// Descriptors kept aside from the partitions' in the start-up estimate: the
/// runtimes, listeners, data-dir lock, and a hundred connections.
const FDS_RESERVED: u64 = 128;

/// How long a stopping shard waits for connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The phases of one shard's life: open its partitions and report ready; once
/// every shard is ready, take its listening socket and accept; drain
/// connections, then (once every shard has drained) close partitions.
struct Phases {
    /// This shard's socket of each listener, in `NetConfig::listeners` order.
    listen: oneshot::Receiver<Vec<std::net::TcpListener>>,
    drain: oneshot::Receiver<()>,
    drained: mpsc::Sender<()>,
    close: oneshot::Receiver<()>,
}

fn run_shard(
    id: usize,
    shared: Arc<EngineShared>,
    net: Arc<NetConfig>,
    connections: Arc<ConnectionCounts>,
    ready: mpsc::Sender<Result<(), String>>,
    stop: Phases,
) {
    let mut builder = compio::runtime::RuntimeBuilder::new();
    if shared.config.pin_cores {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.thread_affinity(HashSet::from([id % cores]));
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {id}: io_uring runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let shard = match Shard::open(ShardId(id), shared) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(format!("shard {id}: opening partitions: {e}")));
                return;
            }
        };
        if let Err(e) = shard.start_background() {
            let _ = ready.send(Err(format!("shard {id}: {e}")));
            return;
        }
        if let (Some(q), Some(c)) = (shard.quorum(), shard.shared.config.cluster.as_ref())
            && let Err(e) = brook_net::peer::start(q, c.controller_listen, &c.voters)
        {
            let at = c
                .controller_listen
                .map(|a| a.to_string())
                .unwrap_or_default();
            let _ = ready.send(Err(format!("controller listener {at}: {e}")));
            return;
        }
        if id == 0
            && let Some(at) = net.metrics_listen
            && let Err(e) = brook_net::metrics::start(shard.clone(), at)
        {
            let _ = ready.send(Err(format!("metrics listener {at}: {e}")));
            return;
        }
        brook_net::replica_fetcher::start(shard.clone());
        brook_net::txn_calls::install(&shard);
        let server = ShardServer::new(shard.clone(), net.clone(), connections);
        let _ = ready.send(Ok(()));
        let Ok(sockets) = stop.listen.await else {
            return; // start-up failed elsewhere
        };
        for (index, socket) in sockets.into_iter().enumerate() {
            if let Err(e) = brook_net::listener::listen(&server, socket, index) {
                let _ = ready.send(Err(format!("shard {id}: listen: {e}")));
                return;
            }
        }
        // Serving: the quorum member keeps this broker registered.
        let endpoints = (net.listeners.iter())
            .map(|l| brook_engine::cluster::image::Endpoint {
                name: l.name.clone(),
                host: l.advertise_host.clone(),
                port: l.advertise_port,
                protocol: l.protocol.id(),
            })
            .collect();
        shard.serve_in_cluster(net.advertise_host.clone(), net.advertise_port, endpoints);
        let _ = ready.send(Ok(()));
        let _ = stop.drain.await;
        server.shutdown(SHUTDOWN_GRACE).await;
        // Other shards may still need this one's partitions for requests they are
        // finishing: keep serving the ring until every shard has drained.
        let _ = stop.drained.send(());
        let _ = stop.close.await;
        shard.close_all().await;
    });
}

fn main() -> ExitCode {
    let cli = config::Cli::parse();
    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        );
    // One line per event either way; JSON (timestamp, level, target, fields)
    // for log pipelines.
    match cli.log_format {
        config::LogFormat::Text => log.init(),
        config::LogFormat::Json => log.json().flatten_event(true).init(),
    }
    let settings = match config::settings(cli) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: config::Settings) -> Result<(), String> {
    let config::Settings { engine, mut net } = settings;
    let fds = raise_fd_limit();
    tracing::info!(
        limit = fds,
        partitions = fds.saturating_sub(FDS_RESERVED) / 2,
        "file descriptor limit: this many partitions can be written and read from disk at once (an idle partition holds none; each connection holds one)"
    );
    let held = DataDir::lock(&engine.data_dir)
        .map_err(|e| format!("{}: {e}", engine.data_dir.display()))?;
    for l in &net.listeners {
        brook_net::listener::ensure_port_free(l.addr)?;
    }
    net.cluster_id = match &engine.cluster {
        // Every node of a cluster reports the same id: one derived from its voters.
        Some(c) => cluster_id_of(&c.voters),
        None => held.cluster_id().map_err(|e| format!("cluster id: {e}"))?,
    };
    let shards = engine.shards;
    let data_dir = engine.data_dir.clone();
    let shared =
        EngineShared::new(engine).map_err(|e| format!("opening {}: {e}", data_dir.display()))?;
    let net = Arc::new(net);
    let connections = Arc::new(ConnectionCounts::default());
    // Bound here, in shard order, so that listener i is socket i of the
    // reuseport group that the steering program indexes.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let steer = net.steer_connections && shared.config.pin_cores && shards <= cores;
    // One reuseport group per listener, each with one socket per shard.
    let mut groups = Vec::new();
    for l in &net.listeners {
        let g = brook_net::listener::bind_listeners(l.addr, shards)
            .map_err(|e| format!("bind {}: {e}", l.addr))?;
        groups.push(g);
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    let (drained_tx, drained_rx) = mpsc::channel();
    let mut drains = Vec::new();
    let mut closes = Vec::new();
    let mut listens = Vec::new();
    let mut threads = Vec::new();
    for id in 0..shards {
        let (listen_tx, listen) = oneshot::channel();
        let (drain_tx, drain) = oneshot::channel();
        let (close_tx, close) = oneshot::channel();
        listens.push(listen_tx);
        drains.push(drain_tx);
        closes.push(close_tx);
        let phases = Phases {
            listen,
            drain,
            drained: drained_tx.clone(),
            close,
        };
        let (shared, net, ready) = (shared.clone(), net.clone(), ready_tx.clone());
        let connections = connections.clone();
        let t = std::thread::Builder::new()
            .name(format!("brook-shard-{id}"))
            .spawn(move || run_shard(id, shared, net, connections, ready, phases))
            .map_err(|e| format!("spawning shard {id}: {e}"))?;
        threads.push(t);
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("signal handler: {e}"))?;
    let wait_all = || {
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("a shard thread died during start-up".to_string()),
            }
        }
        Ok(())
    };
    // Every shard has opened its partitions before the port takes a connection.
    wait_all()?;
    for (l, g) in net.listeners.iter().zip(&groups) {
        brook_net::listener::start_listening(g, steer)
            .map_err(|e| format!("listen on {}: {e}", l.addr))?;
    }
    let mut per_shard: Vec<Vec<std::net::TcpListener>> = (0..shards).map(|_| Vec::new()).collect();
    for g in groups {
        for (shard, socket) in g.into_iter().enumerate() {
            per_shard[shard].push(socket);
        }
    }
    for (tx, sockets) in listens.into_iter().zip(per_shard) {
        let _ = tx.send(sockets);
    }
    wait_all()?;
    let listening: Vec<String> = (net.listeners.iter())
        .map(|l| format!("{}://{}", l.name, l.addr))
        .collect();
    tracing::info!(listeners = ?listening, shards, data_dir = %data_dir.display(), "brook ready");
    if let Some(sig) = signals.forever().next() {
        tracing::info!(
            signal = sig,
            "stopping: no new connections, finishing in-flight requests, flushing"
        );
    }
    if shared.cluster.is_some() {
        controlled_shutdown(&shared);
    }
    for d in drains {
        let _ = d.send(());
    }
    for _ in 0..shards {
        let _ = drained_rx.recv();
    }
    for c in closes {
        let _ = c.send(());
    }
    for t in threads {
        t.join()
            .map_err(|_| "a shard thread panicked during shutdown".to_string())?;
    }
    tracing::info!("brook stopped cleanly");
    Ok(())
}

/// How long a stopping cluster member waits for its leaderships to move.
const CONTROLLED_SHUTDOWN: Duration = Duration::from_secs(15);

/// Asks shard 0 to move this broker's leaderships away through the quorum
/// (Kafka's controlled shutdown) while every shard still serves, and waits
/// for that, or at most `CONTROLLED_SHUTDOWN`.
fn controlled_shutdown(shared: &Arc<EngineShared>) {
    let (tx, rx) = mpsc::channel();
    shared.mailboxes[0].push(Box::new(move |shard: &std::rc::Rc<Shard>| {
        let shard = shard.clone();
        compio::runtime::spawn(async move {
            shard.leave_cluster().await;
            let _ = tx.send(());
        })
        .detach();
    }));
    if rx.recv_timeout(CONTROLLED_SHUTDOWN).is_err() {
        tracing::warn!("controlled shutdown did not finish in time; stopping anyway");
    }
}

/// The cluster id every node of a cluster reports: a hash of its voters.
fn cluster_id_of(voters: &[(i32, std::net::SocketAddr)]) -> String {
    let mut sorted: Vec<String> = voters.iter().map(|(n, a)| format!("{n}@{a}")).collect();
    sorted.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    for round in 0..2u8 {
        for b in sorted.join(",").bytes().chain([round]) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// Segments and connections are file descriptors: lift the soft limit to the
/// hard one. Returns the soft limit in force.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                ..lim
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}
