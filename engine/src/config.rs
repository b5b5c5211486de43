//! Broker-wide settings and per-topic settings, under Kafka's own property names.
//!
//! A topic's effective config is the broker default overlaid with the topic's own
//! overrides (`segment.bytes`, `retention.ms`, …), exactly as Kafka resolves
//! `log.segment.bytes` → `segment.bytes`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::EngineError;

/// When a partition's appended batches are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fdatasync before acknowledging (Brook's default, stronger than Kafka's).
    /// Group commit: one write and one fdatasync cover every batch that arrived
    /// while the previous flush was in flight.
    EveryBatch,
    /// Write as batches arrive, fdatasync at most every interval (Kafka's `flush.ms`).
    /// Acknowledged data not yet synced can be lost on power failure.
    Interval(Duration),
}

/// Settings of one topic after defaults are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicConfig {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: u32,
    pub flush: FlushPolicy,
    /// How far ahead of the broker clock a CreateTime timestamp may be (Kafka's
    /// `message.timestamp.after.max.ms`; 1 hour by default since Kafka 4.0, so a
    /// producer with a wrong clock cannot push time-based retention out of reach).
    pub timestamp_after_max_ms: u64,
    /// How far behind the broker clock it may be (`message.timestamp.before.max.ms`,
    /// unlimited by default).
    pub timestamp_before_max_ms: u64,
    /// Kafka's `min.insync.replicas`: fewer ISR members refuse acks=all
    /// produce with NOT_ENOUGH_REPLICAS.
    pub min_insync_replicas: u32,
    /// Kafka's `unclean.leader.election.enable`: a partition whose in-sync
    /// replicas are all down may be led by an out-of-sync one (losing what
    /// only the ISR had) rather than stay offline.
    pub unclean_leader_election: bool,
    /// Kafka's `cleanup.policy`: `delete` applies retention, `compact` runs
    /// the log cleaner; `compact,delete` does both.
    pub cleanup_delete: bool,
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long a tombstone (a null value) outlives
    /// its batch's timestamp before the cleaner removes it.
    pub delete_retention_ms: u64,
    /// `min.cleanable.dirty.ratio`: the share of the cleanable log not yet
    /// cleaned at which the cleaner takes the partition.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: u64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned
    /// whatever the dirty ratio.
    pub max_compaction_lag_ms: u64,
    /// `leader.replication.throttled.replicas`: the partitions whose
    /// replication is throttled on their leader (this broker, when it leads
    /// them) while a follower outside the ISR catches up.
    pub leader_throttled: ThrottledReplicas,
    /// `follower.replication.throttled.replicas`: the partitions whose
    /// replication this broker throttles as a follower outside the ISR.
    pub follower_throttled: ThrottledReplicas,
}

/// Kafka's `*.replication.throttled.replicas` value: `*` (every replica), or
/// a list of `partition:broker` pairs (`kafka-reassign-partitions --throttle`
/// writes the replicas being moved from and to).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ThrottledReplicas {
    #[default]
    None,
    All,
    Listed(Vec<(u32, i32)>),
}

impl ThrottledReplicas {
    /// Kafka's `ThrottledReplicaListValidator`: `*`, or comma-separated
    /// `partition:broker` entries (blanks around them allowed).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if value == "*" {
            return Some(ThrottledReplicas::All);
        }
        let mut listed = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (p, b) = entry.split_once(':')?;
            let p = p.trim().parse::<u32>().ok()?;
            let b = b.trim().parse::<i32>().ok().filter(|b| *b >= 0)?;
            listed.push((p, b));
        }
        Some(match listed.is_empty() {
            true => ThrottledReplicas::None,
            false => ThrottledReplicas::Listed(listed),
        })
    }

    /// Whether partition `partition`'s replica on broker `node` is named.
    pub fn contains(&self, partition: u32, node: i32) -> bool {
        match self {
            ThrottledReplicas::None => false,
            ThrottledReplicas::All => true,
            ThrottledReplicas::Listed(l) => l.contains(&(partition, node)),
        }
    }

    fn describe(&self) -> String {
        match self {
            ThrottledReplicas::None => String::new(),
            ThrottledReplicas::All => "*".to_string(),
            ThrottledReplicas::Listed(l) => (l.iter())
                .map(|(p, b)| format!("{p}:{b}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            flush: FlushPolicy::EveryBatch,
            timestamp_after_max_ms: 3_600_000,
            timestamp_before_max_ms: i64::MAX as u64,
            min_insync_replicas: 1,
            unclean_leader_election: false,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX as u64,
            leader_throttled: ThrottledReplicas::None,
            follower_throttled: ThrottledReplicas::None,
        }
    }
}

/// Topic-level property names this broker understands.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "retention.ms",
    "retention.bytes",
    "max.message.bytes",
    "flush.ms",
    "cleanup.policy",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "message.timestamp.type",
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
];

impl TopicConfig {
    /// `self` with Kafka-named overrides applied. Unknown names are rejected so a
    /// typo is an error rather than a silently ignored setting.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, EngineError> {
        let mut c = self.clone();
        for (k, v) in overrides {
            c.apply(k, v)?;
        }
        Ok(c)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), EngineError> {
        let bad = || EngineError::InvalidConfig(format!("{key}={value}"));
        let int = |v: &str| v.trim().parse::<i64>().map_err(|_| bad());
        match key {
            "segment.bytes" => {
                let n = int(value)?;
                if n < 14 {
                    return Err(bad());
                }
                self.segment_bytes = n as u64;
            }
            "segment.ms" => self.segment_ms = u64::try_from(int(value)?).map_err(|_| bad())?,
            "retention.ms" => self.retention_ms = u64::try_from(int(value)?).ok(),
            "retention.bytes" => self.retention_bytes = u64::try_from(int(value)?).ok(),
            "max.message.bytes" => {
                self.max_message_bytes = u32::try_from(int(value)?).map_err(|_| bad())?
            }
            "flush.ms" => {
                let ms = int(value)?;
                self.flush = match ms {
                    i64::MAX => FlushPolicy::EveryBatch,
                    ms if ms > 0 => FlushPolicy::Interval(Duration::from_millis(ms as u64)),
                    _ => FlushPolicy::EveryBatch,
                };
            }
            "message.timestamp.after.max.ms" => {
                self.timestamp_after_max_ms = u64::try_from(int(value)?).map_err(|_| bad())?
            }
            "message.timestamp.before.max.ms" => {
                self.timestamp_before_max_ms = u64::try_from(int(value)?).map_err(|_| bad())?
            }
            "min.insync.replicas" => {
                let n = int(value)?;
                if n < 1 {
                    return Err(bad());
                }
                self.min_insync_replicas = u32::try_from(n).map_err(|_| bad())?;
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad()),
                }
            }
            // Kafka Streams names it on every topic it creates.
            "message.timestamp.type" if value == "CreateTime" => {}
            "message.timestamp.type" => {
                return Err(EngineError::InvalidConfig(format!(
                    "message.timestamp.type={value}: only CreateTime is supported"
                )));
            }
            "cleanup.policy" => {
                let (mut delete, mut compact) = (false, false);
                for p in value.split(',').map(str::trim) {
                    match p {
                        "delete" => delete = true,
                        "compact" => compact = true,
                        _ => return Err(bad()),
                    }
                }
                if !(delete || compact) {
                    return Err(bad());
                }
                (self.cleanup_delete, self.cleanup_compact) = (delete, compact);
            }
            "delete.retention.ms" => {
                self.delete_retention_ms = u64::try_from(int(value)?).map_err(|_| bad())?
            }
            "min.compaction.lag.ms" => {
                self.min_compaction_lag_ms = u64::try_from(int(value)?).map_err(|_| bad())?
            }
            "max.compaction.lag.ms" => {
                let n = int(value)?;
                if n < 1 {
                    return Err(bad());
                }
                self.max_compaction_lag_ms = n as u64;
            }
            "min.cleanable.dirty.ratio" => {
                let r: f64 = value.trim().parse().map_err(|_| bad())?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(bad());
                }
                self.min_cleanable_dirty_ratio = r;
            }
            "leader.replication.throttled.replicas" => {
                self.leader_throttled = ThrottledReplicas::parse(value).ok_or_else(bad)?
            }
            "follower.replication.throttled.replicas" => {
                self.follower_throttled = ThrottledReplicas::parse(value).ok_or_else(bad)?
            }
            _ => {
                return Err(EngineError::InvalidConfig(format!(
                    "unknown topic config {key}"
                )));
            }
        }
        Ok(())
    }

    /// `cleanup.policy` as Kafka spells it.
    pub fn cleanup_policy(&self) -> String {
        match (self.cleanup_compact, self.cleanup_delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
        .to_string()
    }

    /// The effective values as Kafka-named strings, for DescribeConfigs-style answers.
    pub fn describe(&self) -> BTreeMap<&'static str, String> {
        let opt = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
        let flush = match self.flush {
            FlushPolicy::EveryBatch => i64::MAX.to_string(),
            FlushPolicy::Interval(d) => d.as_millis().to_string(),
        };
        BTreeMap::from([
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("retention.ms", opt(self.retention_ms)),
            ("retention.bytes", opt(self.retention_bytes)),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            ("flush.ms", flush),
            ("cleanup.policy", self.cleanup_policy()),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            (
                "min.cleanable.dirty.ratio",
                self.min_cleanable_dirty_ratio.to_string(),
            ),
            (
                "min.compaction.lag.ms",
                self.min_compaction_lag_ms.to_string(),
            ),
            (
                "max.compaction.lag.ms",
                self.max_compaction_lag_ms.to_string(),
            ),
            ("message.timestamp.type", "CreateTime".to_string()),
            (
                "message.timestamp.after.max.ms",
                self.timestamp_after_max_ms.to_string(),
            ),
            (
                "message.timestamp.before.max.ms",
                self.timestamp_before_max_ms.to_string(),
            ),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            (
                "unclean.leader.election.enable",
                self.unclean_leader_election.to_string(),
            ),
            (
                "leader.replication.throttled.replicas",
                self.leader_throttled.describe(),
            ),
            (
                "follower.replication.throttled.replicas",
                self.follower_throttled.describe(),
            ),
        ])
    }
}

/// A change to a topic's config overrides (AlterConfigs replaces them all,
/// IncrementalAlterConfigs sets and deletes single ones). Applied to the
/// overrides current where it is applied — on shard 0 under the topic lock,
/// or in the image as the quorum applies it — so two changes of different
/// settings never undo each other.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConfigChange {
    Replace(BTreeMap<String, String>),
    /// Each setting to its new value, or back to its default (`None`).
    Update(Vec<(String, Option<String>)>),
}

impl ConfigChange {
    pub fn applied_to(&self, current: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match self {
            ConfigChange::Replace(all) => all.clone(),
            ConfigChange::Update(changes) => {
                let mut next = current.clone();
                for (k, v) in changes {
                    match v {
                        Some(v) => next.insert(k.clone(), v.clone()),
                        None => next.remove(k),
                    };
                }
                next
            }
        }
    }
}

/// Group coordinator settings (Kafka's names).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long an empty group waits for more
    /// members before its first rebalance completes.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// `offset.metadata.max.bytes`: the longest metadata string an offset commit
    /// may carry (Kafka's default 4096), so a client cannot grow the offsets log
    /// and every consumer's OffsetFetch answer without bound.
    pub offset_metadata_max_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(3000),
            min_session_timeout: Duration::from_millis(6000),
            max_session_timeout: Duration::from_millis(1_800_000),
            offset_metadata_max_bytes: 4096,
        }
    }
}

/// Default for the idle write buffers each shard keeps
/// (`brook.write.buffer.pool.bytes`; see `log::writer`).
pub const DEFAULT_WRITE_POOL_BYTES: usize = 64 << 20;

/// The log cleaner's settings (Kafka's `log.cleaner.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enabled: bool,
    /// `log.cleaner.backoff.ms`: how long a shard's cleaner sleeps when no
    /// partition needs cleaning.
    pub backoff: Duration,
    /// `log.cleaner.dedupe.buffer.size`: memory for one pass's key map; a
    /// dirty section with more keys is cleaned over several passes.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`: read and write bandwidth one
    /// shard's cleaner may use (`None`: unlimited).
    pub io_max_bytes_per_second: Option<u64>,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            enabled: true,
            backoff: Duration::from_secs(15),
            dedupe_buffer_bytes: 128 << 20,
            io_max_bytes_per_second: None,
        }
    }
}

/// Settings of the whole engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The first log directory: it also holds the broker's metadata (`__brook/`).
    pub data_dir: PathBuf,
    /// Every log directory (Kafka's `log.dirs`), `data_dir` first.
    pub log_dirs: Vec<PathBuf>,
    pub shards: usize,
    /// Pin shard i to core i (off in tests that run many brokers on two cores).
    pub pin_cores: bool,
    /// Partition count for topics created without one (Kafka's `num.partitions`).
    pub default_partitions: u32,
    pub auto_create_topics: bool,
    pub topic_defaults: TopicConfig,
    /// Bytes of recent batches each partition keeps in memory for tailing consumers.
    pub cache_bytes_per_partition: usize,
    /// How often retention is applied (Kafka's `log.retention.check.interval.ms`).
    pub retention_check_interval: Duration,
    /// How often partitions that took writes record a recovery checkpoint
    /// (Kafka's `log.flush.offset.checkpoint.interval.ms`): a crash restart
    /// reads at most about this long's worth of writes per partition.
    pub checkpoint_interval: Duration,
    /// Idle write buffers each shard keeps for partitions being written
    /// (`brook.write.buffer.pool.bytes`; see `writer`).
    pub write_pool_bytes: usize,
    pub cleaner: CleanerConfig,
    /// `offsets.topic.segment.bytes`: segment size of the internal topics,
    /// which the cleaner compacts segment by segment.
    pub offsets_segment_bytes: u64,
    pub group: GroupConfig,
    /// Kafka's `node.id` (a single broker's too: its per-broker dynamic
    /// settings are stored under it).
    pub node_id: i32,
    /// Set when this broker is one node of a cluster.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl EngineConfig {
    pub fn new(data_dir: PathBuf, shards: usize) -> Self {
        EngineConfig {
            log_dirs: vec![data_dir.clone()],
            data_dir,
            shards,
            pin_cores: true,
            default_partitions: 1,
            auto_create_topics: true,
            topic_defaults: TopicConfig::default(),
            cache_bytes_per_partition: 8 << 20,
            retention_check_interval: Duration::from_secs(300),
            checkpoint_interval: Duration::from_secs(10),
            write_pool_bytes: DEFAULT_WRITE_POOL_BYTES,
            cleaner: CleanerConfig::default(),
            offsets_segment_bytes: 100 << 20,
            group: GroupConfig::default(),
            node_id: 1,
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_reject_unknown() {
        let base = TopicConfig::default();
        let o = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("flush.ms".to_string(), "1000".to_string()),
        ]);
        let c = base.with_overrides(&o).unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.flush, FlushPolicy::Interval(Duration::from_secs(1)));
        let bad = BTreeMap::from([("no.such".to_string(), "1".to_string())]);
        assert!(base.with_overrides(&bad).is_err());
        let policy = |p: &str| {
            let o = BTreeMap::from([("cleanup.policy".to_string(), p.to_string())]);
            base.with_overrides(&o)
                .map(|c| (c.cleanup_compact, c.cleanup_delete, c.cleanup_policy()))
        };
        assert_eq!(policy("compact").unwrap(), (true, false, "compact".into()));
        for both in ["compact,delete", "delete, compact"] {
            assert_eq!(policy(both).unwrap(), (true, true, "compact,delete".into()));
        }
        for bad in ["", "shred", "compact,shred"] {
            assert!(
                matches!(policy(bad), Err(EngineError::InvalidConfig(_))),
                "{bad}"
            );
        }
        let ratio = |r: &str| {
            let o = BTreeMap::from([("min.cleanable.dirty.ratio".to_string(), r.to_string())]);
            base.with_overrides(&o).map(|c| c.min_cleanable_dirty_ratio)
        };
        assert_eq!(ratio("0.01").unwrap(), 0.01);
        assert!(ratio("1.5").is_err() && ratio("x").is_err());
    }

    #[test]
    fn timestamp_bounds_take_kafka_names() {
        let base = TopicConfig::default();
        assert_eq!(base.timestamp_after_max_ms, 3_600_000);
        let o = BTreeMap::from([
            (
                "message.timestamp.after.max.ms".to_string(),
                "5".to_string(),
            ),
            (
                "message.timestamp.before.max.ms".to_string(),
                "7".to_string(),
            ),
        ]);
        let c = base.with_overrides(&o).unwrap();
        assert_eq!(
            (c.timestamp_after_max_ms, c.timestamp_before_max_ms),
            (5, 7)
        );
        let negative = BTreeMap::from([(
            "message.timestamp.after.max.ms".to_string(),
            "-1".to_string(),
        )]);
        assert!(base.with_overrides(&negative).is_err());
    }
}
