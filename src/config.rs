//! Command-line flags and the optional TOML file, merged into engine and network
//! settings. The file uses Kafka's own property names (quoted TOML keys), e.g.
//!
//! ```toml
//! "log.dirs" = "./data"
//! "listeners" = "PLAINTEXT://127.0.0.1:9092"
//! "num.partitions" = 3
//! "log.retention.hours" = 168
//! ```
//!
//! Precedence: built-in defaults, then the file, then flags.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use brook_engine::{EngineConfig, TopicConfig};
use brook_net::NetConfig;
use brook_net::security::SecurityProtocol;
use clap::Parser;

#[derive(Parser, Debug, Default)]
#[command(
    name = "brook",
    about = "A Kafka-compatible streaming log on a thread-per-core io_uring engine"
)]
pub struct Cli {
    /// TOML file of Kafka-named settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where partitions and metadata live (Kafka's log.dirs); repeat it for
    /// several disks (JBOD): partitions spread over them, the first also holds
    /// the broker's metadata.
    #[arg(long)]
    pub data_dir: Vec<PathBuf>,
    /// Address to listen on, HOST:PORT.
    #[arg(long)]
    pub listen: Option<String>,
    /// Address clients are told to connect to, HOST:PORT (defaults to --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Shards (one thread pinned per core); defaults to the number of cores.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Partitions of auto-created topics and of CreateTopics without a count (num.partitions).
    #[arg(long)]
    pub default_partitions: Option<u32>,
    /// This broker's node id.
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Do not pin shard threads to cores (useful when many brokers share a machine).
    #[arg(long)]
    pub no_pin: bool,
    /// Let the kernel hash new connections over the shards instead of handing
    /// each to the shard on the CPU that received it.
    #[arg(long)]
    pub no_steer: bool,
    /// The metadata quorum's voters, ID@HOST:PORT,... (Kafka's
    /// controller.quorum.voters): makes this broker one node of a cluster.
    #[arg(long)]
    pub voters: Option<String>,
    /// Where this node's quorum member listens, HOST:PORT (the CONTROLLER listener).
    #[arg(long)]
    pub controller_listen: Option<String>,
    /// Serve Prometheus metrics over HTTP at HOST:PORT (`GET /metrics`); off
    /// unless set (also `brook.metrics.listen` in the config file).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Log lines as text (default) or as one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub struct Settings {
    pub engine: EngineConfig,
    pub net: NetConfig,
}

fn strip_scheme(s: &str) -> &str {
    let first = s.split(',').next().unwrap_or(s).trim();
    first.split_once("://").map_or(first, |(_, rest)| rest)
}

/// Kafka's `listeners`: the client listener (the first not named CONTROLLER)
/// and the CONTROLLER listener, if any.
fn split_listeners(s: &str) -> (Option<String>, Option<String>) {
    let mut client = None;
    let mut controller = None;
    for l in s.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        match l.split_once("://") {
            Some((name, addr)) if name.eq_ignore_ascii_case("CONTROLLER") => {
                controller.get_or_insert_with(|| addr.to_string());
            }
            _ => {
                client.get_or_insert_with(|| l.to_string());
            }
        }
    }
    (client, controller)
}

/// `controller.quorum.voters`: `ID@HOST:PORT,...`.
fn parse_voters(s: &str) -> Result<Vec<(i32, SocketAddr)>, String> {
    let mut voters = Vec::new();
    for v in s.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let (id, addr) = v
            .split_once('@')
            .ok_or_else(|| format!("voter {v:?}: expected ID@HOST:PORT"))?;
        let id = id
            .parse::<i32>()
            .ok()
            .filter(|&i| i >= 0)
            .ok_or_else(|| format!("voter {v:?}: bad node id"))?;
        if voters.iter().any(|(n, _)| *n == id) {
            return Err(format!("voter id {id} given twice"));
        }
        voters.push((id, resolve(addr)?));
    }
    if voters.is_empty() {
        return Err("controller.quorum.voters: no voters".into());
    }
    Ok(voters)
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    strip_scheme(s)
        .to_socket_addrs()
        .map_err(|e| format!("bad address {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {s:?} resolves to nothing"))
}

fn load_file(path: &PathBuf) -> Result<BTreeMap<String, toml::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn as_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn settings(cli: Cli) -> Result<Settings, String> {
    let file = match &cli.config {
        Some(p) => load_file(p)?,
        None => BTreeMap::new(),
    };
    let get = |k: &str| file.get(k).map(as_string);
    let num = |k: &str| -> Result<Option<i64>, String> {
        get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("{k}: expected an integer, got {v:?}"))
            })
            .transpose()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = cli
        .shards
        .or(num("brook.shards")?.map(|n| n as usize))
        .unwrap_or(cores)
        .max(1);
    // `log.dirs`: a list, or Kafka's comma-separated string.
    let file_dirs: Vec<PathBuf> = match file.get("log.dirs") {
        Some(toml::Value::Array(a)) => a.iter().map(|v| PathBuf::from(as_string(v))).collect(),
        Some(v) => as_string(v)
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect(),
        None => Vec::new(),
    };
    let mut log_dirs = if cli.data_dir.is_empty() {
        file_dirs
    } else {
        cli.data_dir.clone()
    };
    if log_dirs.is_empty() {
        log_dirs.push(PathBuf::from("./data"));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = log_dirs.iter().find(|d| !seen.insert(d.to_path_buf())) {
        return Err(format!("log.dirs: {} given twice", dup.display()));
    }
    let data_dir = log_dirs[0].clone();
    let (_, file_controller) = get("listeners")
        .map(|l| split_listeners(&l))
        .unwrap_or_default();
    let client_listeners =
        crate::listeners::listeners(&get, cli.listen.clone(), cli.advertise.clone())?;
    let first = &client_listeners[0];
    let listen = first.addr;
    let (advertise_host, advertise_port) = (first.advertise_host.clone(), first.advertise_port);

    let mut topic = TopicConfig::default();
    let mut overrides = BTreeMap::new();
    for (broker_key, topic_key) in [
        ("log.segment.bytes", "segment.bytes"),
        ("log.segment.ms", "segment.ms"),
        ("log.retention.ms", "retention.ms"),
        ("log.retention.bytes", "retention.bytes"),
        ("message.max.bytes", "max.message.bytes"),
        ("log.flush.interval.ms", "flush.ms"),
        (
            "log.message.timestamp.after.max.ms",
            "message.timestamp.after.max.ms",
        ),
        (
            "log.message.timestamp.before.max.ms",
            "message.timestamp.before.max.ms",
        ),
        ("min.insync.replicas", "min.insync.replicas"),
        ("log.cleanup.policy", "cleanup.policy"),
        ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
        (
            "log.cleaner.min.cleanable.ratio",
            "min.cleanable.dirty.ratio",
        ),
        ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
        ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
        (
            "unclean.leader.election.enable",
            "unclean.leader.election.enable",
        ),
    ] {
        if let Some(v) = get(broker_key) {
            overrides.insert(topic_key.to_string(), v);
        }
    }
    if let (Some(h), false) = (
        num("log.retention.hours")?,
        overrides.contains_key("retention.ms"),
    ) {
        overrides.insert("retention.ms".into(), (h * 3_600_000).to_string());
    }
    topic = topic
        .with_overrides(&overrides)
        .map_err(|e| e.to_string())?;

    let mut engine = EngineConfig::new(data_dir, shards);
    engine.log_dirs = log_dirs;
    engine.pin_cores = !cli.no_pin;
    engine.topic_defaults = topic;
    engine.default_partitions = cli
        .default_partitions
        .or(num("num.partitions")?.map(|n| n as u32))
        .unwrap_or(1)
        .max(1);
    engine.auto_create_topics = get("auto.create.topics.enable").is_none_or(|v| v == "true");
    if let Some(b) = num("offsets.topic.segment.bytes")? {
        engine.offsets_segment_bytes = b.max(1 << 12) as u64;
    }
    if let Some(v) = get("log.cleaner.enable") {
        engine.cleaner.enabled = v.trim() == "true";
    }
    if let Some(ms) = num("log.cleaner.backoff.ms")? {
        engine.cleaner.backoff = Duration::from_millis(ms.max(10) as u64);
    }
    if let Some(b) = num("log.cleaner.dedupe.buffer.size")? {
        engine.cleaner.dedupe_buffer_bytes = b.max(1 << 20) as usize;
    }
    if let Some(b) = num("log.cleaner.io.max.bytes.per.second")? {
        engine.cleaner.io_max_bytes_per_second = (b > 0).then_some(b as u64);
    }
    if let Some(ms) = num("log.retention.check.interval.ms")? {
        engine.retention_check_interval = Duration::from_millis(ms.max(100) as u64);
    }
    for (key, slot) in [
        (
            "group.initial.rebalance.delay.ms",
            &mut engine.group.initial_rebalance_delay,
        ),
        (
            "group.min.session.timeout.ms",
            &mut engine.group.min_session_timeout,
        ),
        (
            "group.max.session.timeout.ms",
            &mut engine.group.max_session_timeout,
        ),
    ] {
        if let Some(ms) = num(key)? {
            *slot = Duration::from_millis(ms.max(0) as u64);
        }
    }
    if let Some(b) = num("offset.metadata.max.bytes")? {
        engine.group.offset_metadata_max_bytes = b.max(0) as usize;
    }
    if let Some(b) = num("brook.cache.partition.bytes")? {
        engine.cache_bytes_per_partition = b.max(0) as usize;
    }
    if let Some(ms) = num("log.flush.offset.checkpoint.interval.ms")? {
        engine.checkpoint_interval = Duration::from_millis(ms.max(100) as u64);
    }
    if let Some(b) = num("brook.write.buffer.pool.bytes")? {
        engine.write_pool_bytes = b.max(0) as usize;
    }
    let node_id = cli
        .node_id
        .or(num("node.id")?.map(|n| n as i32))
        .unwrap_or(1);
    engine.node_id = node_id;
    let voters = cli.voters.clone().or(get("controller.quorum.voters"));
    if let Some(voters) = voters {
        let voters = parse_voters(&voters)?;
        let controller = cli.controller_listen.clone().or(file_controller);
        let in_voters = voters.iter().find(|(n, _)| *n == node_id).map(|(_, a)| *a);
        let controller_listen = match (controller, in_voters) {
            (Some(controller), Some(addr)) => {
                let controller_listen = resolve(&controller)?;
                if addr.port() != controller_listen.port() {
                    return Err(format!(
                        "node {node_id}: --voters gives it {addr} but its controller listens on {controller_listen}"
                    ));
                }
                if controller_listen.port() == listen.port()
                    && controller_listen.ip() == listen.ip()
                {
                    return Err(
                        "the controller listener must differ from the client listener".into(),
                    );
                }
                Some(controller_listen)
            }
            (Some(_), None) => return Err(format!("node {node_id} is not one of the voters")),
            (None, Some(addr)) => {
                return Err(format!(
                    "node {node_id} is a voter ({addr}): it needs its controller listener \
                     (--controller-listen {addr})"
                ));
            }
            // Kafka's process.roles=broker: it observes the quorum.
            (None, None) => None,
        };
        let session_ms = num("broker.session.timeout.ms")?.unwrap_or(9000).max(100);
        engine.cluster = Some(brook_engine::cluster::ClusterConfig {
            node_id,
            voters,
            controller_listen,
            session_timeout: Duration::from_millis(session_ms as u64),
            rack: get("broker.rack"),
            default_replication_factor: num("default.replication.factor")?.map(|n| n as i16),
            replica_lag: Duration::from_millis(
                num("replica.lag.time.max.ms")?.unwrap_or(30_000).max(100) as u64,
            ),
            rebalance_every: (get("auto.leader.rebalance.enable").is_none_or(|v| v == "true"))
                .then(|| -> Result<Duration, String> {
                    let s = num("leader.imbalance.check.interval.seconds")?.unwrap_or(300);
                    Ok(Duration::from_secs(s.max(1) as u64))
                })
                .transpose()?,
        });
    } else if cli.controller_listen.is_some() {
        return Err("--controller-listen needs --voters".into());
    }
    if engine.cluster.is_some() && first.protocol != SecurityProtocol::Plaintext {
        return Err(format!(
            "listener {}: in a cluster the first listener is the one brokers use between them, and it must be PLAINTEXT for now (Brook's brokers do not speak TLS or SASL to each other yet); list a PLAINTEXT listener first",
            first.name
        ));
    }
    let mut net = NetConfig::new(listen, advertise_host, advertise_port, node_id);
    net.listeners = client_listeners;
    net.authz.enabled = get("authorizer.class.name").is_some_and(|a| !a.trim().is_empty());
    net.authz.super_users = (get("super.users").unwrap_or_default().split(';'))
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    net.authz.allow_if_no_acl = match get("allow.everyone.if.no.acl.found").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "allow.everyone.if.no.acl.found: expected true or false, got {other:?}"
            ));
        }
    };
    net.steer_connections = !cli.no_steer;
    let positive =
        |k: &str| -> Result<Option<usize>, String> { Ok(num(k)?.map(|n| n.max(1) as usize)) };
    if let Some(n) = positive("socket.request.max.bytes")? {
        net.max_request_bytes = n.max(1024);
    }
    if let Some(n) = positive("max.connections")? {
        net.max_connections = n;
    }
    if let Some(n) = positive("max.connections.per.ip")? {
        net.max_connections_per_ip = n;
    }
    if let Some(n) = positive("queued.max.request.bytes")? {
        net.request_memory_per_shard = n;
    }
    if let Some(n) = positive("brook.max.inflight.requests.per.connection")? {
        net.max_in_flight_per_connection = n;
    }
    if let Some(ms) = positive("connections.max.idle.ms")? {
        net.connections_max_idle = Duration::from_millis(ms as u64);
    }
    if let Some(ms) = positive("brook.partial.request.timeout.ms")? {
        net.partial_request_timeout = Duration::from_millis(ms as u64);
    }
    if let Some(m) = cli.metrics_listen.clone().or(get("brook.metrics.listen")) {
        let addr = resolve(&m).map_err(|e| format!("--metrics-listen {m}: {e}"))?;
        if addr == listen {
            return Err("the metrics listener must differ from the client listener".into());
        }
        net.metrics_listen = Some(addr);
    }
    Ok(Settings { engine, net })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_file_and_flags() {
        let s = settings(Cli::default()).unwrap();
        assert_eq!(s.net.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(s.engine.data_dir, PathBuf::from("./data"));
        let dir = std::env::temp_dir().join(format!("brook-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("b.toml");
        std::fs::write(&f, "\"listeners\" = \"PLAINTEXT://127.0.0.1:9999\"\n\"num.partitions\" = 4\n\"log.retention.hours\" = 1\n\"group.initial.rebalance.delay.ms\" = 0\n\"log.message.timestamp.after.max.ms\" = 60000\n\"offset.metadata.max.bytes\" = 100\n").unwrap();
        let cli = Cli {
            config: Some(f),
            listen: None,
            advertise: Some("example:1234".into()),
            ..Cli::default()
        };
        let s = settings(cli).unwrap();
        assert_eq!(s.net.listen.port(), 9999);
        assert_eq!(
            (s.net.advertise_host.as_str(), s.net.advertise_port),
            ("example", 1234)
        );
        assert_eq!(s.engine.default_partitions, 4);
        assert_eq!(s.engine.topic_defaults.retention_ms, Some(3_600_000));
        assert_eq!(s.engine.group.initial_rebalance_delay, Duration::ZERO);
        assert_eq!(s.engine.topic_defaults.timestamp_after_max_ms, 60_000);
        assert_eq!(s.engine.group.offset_metadata_max_bytes, 100);
    }

    #[test]
    fn cluster_flags_and_kafka_names() {
        let cli = Cli {
            node_id: Some(2),
            listen: Some("127.0.0.1:9192".into()),
            controller_listen: Some("127.0.0.1:9193".into()),
            voters: Some("1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293".into()),
            ..Cli::default()
        };
        let c = settings(cli).unwrap().engine.cluster.unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.voters.len(), 3);
        assert_eq!(c.controller_listen.map(|a| a.port()), Some(9193));
        // Not among the voters and no controller listener: a broker-only node.
        let cli = Cli {
            node_id: Some(4),
            listen: Some("127.0.0.1:9392".into()),
            voters: Some("1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293".into()),
            ..Cli::default()
        };
        let c = settings(cli).unwrap().engine.cluster.unwrap();
        assert_eq!((c.node_id, c.controller_listen), (4, None));
        let (client, controller) =
            split_listeners("PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093");
        assert_eq!(client.as_deref(), Some("PLAINTEXT://127.0.0.1:9092"));
        assert_eq!(controller.as_deref(), Some("127.0.0.1:9093"));
        // A controller that is not a voter, a voter without its controller
        // listener, a duplicate id: refused at once.
        for (node, ctl, voters) in [
            (4, Some("127.0.0.1:9493"), "1@127.0.0.1:9093"),
            (1, None, "1@127.0.0.1:9093"),
            (
                1,
                Some("127.0.0.1:9093"),
                "1@127.0.0.1:9093,1@127.0.0.1:9193",
            ),
        ] {
            let cli = Cli {
                node_id: Some(node),
                controller_listen: ctl.map(String::from),
                voters: Some(voters.into()),
                ..Cli::default()
            };
            assert!(settings(cli).is_err());
        }
    }
}
