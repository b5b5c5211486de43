//! Dynamic broker settings: the broker configs changed at run time
//! (`kafka-configs --entity-type brokers --alter`, IncrementalAlterConfigs),
//! as a cluster-wide default and per broker, as Kafka keeps them.
//!
//! A broker runs with its static settings (`brook.toml`, flags) overlaid by
//! the cluster-wide dynamic default and then by its own dynamic value, Kafka's
//! precedence. What they resolve to ([`BrokerSettings`]) is part of every
//! shard's catalog, so a change reaches every partition the way a topic
//! config change does: the topic defaults (`log.retention.ms` and the other
//! `log.*` synonyms of topic settings) are re-resolved for every topic that
//! does not override them, the cleaner takes its limits on its next pass, and
//! the replication throttles apply to the next fetch.
//!
//! A cluster stores the settings in the metadata quorum (an
//! `AlterBrokerConfigs` record); a single broker in
//! `<data-dir>/__brook/broker-configs.json` (temp file, fsync, rename), before
//! the change is answered.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{CleanerConfig, ConfigChange, EngineConfig, TopicConfig};
use crate::error::EngineError;

pub const LEADER_REPLICATION_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_REPLICATION_RATE: &str = "follower.replication.throttled.rate";
const CLEANER_IO: &str = "log.cleaner.io.max.bytes.per.second";
const CLEANER_BACKOFF: &str = "log.cleaner.backoff.ms";
const CLEANER_DEDUPE: &str = "log.cleaner.dedupe.buffer.size";

/// The broker settings that change at run time, with the topic setting each
/// is the broker-wide default of (Kafka's synonyms), if any.
pub const DYNAMIC: &[(&str, Option<&str>)] = &[
    (LEADER_REPLICATION_RATE, None),
    (FOLLOWER_REPLICATION_RATE, None),
    (CLEANER_IO, None),
    (CLEANER_BACKOFF, None),
    (CLEANER_DEDUPE, None),
    ("log.segment.bytes", Some("segment.bytes")),
    ("log.roll.ms", Some("segment.ms")),
    ("log.retention.ms", Some("retention.ms")),
    ("log.retention.bytes", Some("retention.bytes")),
    ("log.flush.interval.ms", Some("flush.ms")),
    ("log.cleanup.policy", Some("cleanup.policy")),
    (
        "log.cleaner.delete.retention.ms",
        Some("delete.retention.ms"),
    ),
    (
        "log.cleaner.min.cleanable.ratio",
        Some("min.cleanable.dirty.ratio"),
    ),
    (
        "log.cleaner.min.compaction.lag.ms",
        Some("min.compaction.lag.ms"),
    ),
    (
        "log.cleaner.max.compaction.lag.ms",
        Some("max.compaction.lag.ms"),
    ),
    ("message.max.bytes", Some("max.message.bytes")),
    (
        "log.message.timestamp.after.max.ms",
        Some("message.timestamp.after.max.ms"),
    ),
    (
        "log.message.timestamp.before.max.ms",
        Some("message.timestamp.before.max.ms"),
    ),
    ("min.insync.replicas", Some("min.insync.replicas")),
];

pub fn is_dynamic(name: &str) -> bool {
    DYNAMIC.iter().any(|(n, _)| *n == name)
}

/// The broker setting whose value is the default of topic setting `topic_key`.
pub fn broker_synonym(topic_key: &str) -> Option<&'static str> {
    (DYNAMIC.iter())
        .find(|(_, t)| *t == Some(topic_key))
        .map(|(n, _)| *n)
}

/// Where a dynamic value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Set for this broker (Kafka's DYNAMIC_BROKER_CONFIG).
    Broker,
    /// The cluster-wide default (DYNAMIC_DEFAULT_BROKER_CONFIG).
    ClusterDefault,
}

/// The dynamic settings as stored: the cluster-wide default and each
/// broker's own, Kafka-named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerConfigs {
    #[serde(default)]
    pub default: BTreeMap<String, String>,
    #[serde(default)]
    pub brokers: BTreeMap<i32, BTreeMap<String, String>>,
}

/// What this broker runs with: static settings and the dynamic ones resolved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokerSettings {
    /// The default of every topic setting a topic does not override.
    pub topic_defaults: TopicConfig,
    pub cleaner: CleanerConfig,
    /// Bytes per second of throttled replication this broker serves as a
    /// leader, and fetches as a follower (`None`: unlimited).
    pub leader_replication_rate: Option<u64>,
    pub follower_replication_rate: Option<u64>,
}

impl BrokerConfigs {
    /// The settings of one scope: `None` is the cluster-wide default.
    pub fn scope(&self, node: Option<i32>) -> Option<&BTreeMap<String, String>> {
        match node {
            None => Some(&self.default),
            Some(n) => self.brokers.get(&n),
        }
    }

    /// Every dynamic value of `name` on broker `node`, most precedent first.
    pub fn levels(&self, node: i32, name: &str) -> Vec<(&str, Scope)> {
        let own = self.brokers.get(&node).and_then(|m| m.get(name));
        let own = own.map(|v| (v.as_str(), Scope::Broker));
        let default = (self.default.get(name)).map(|v| (v.as_str(), Scope::ClusterDefault));
        own.into_iter().chain(default).collect()
    }

    /// The dynamic value of `name` on broker `node`, and where it comes from.
    pub fn value(&self, node: i32, name: &str) -> Option<(&str, Scope)> {
        self.levels(node, name).into_iter().next()
    }

    /// `self` with `change` applied to one scope, unchecked (the quorum
    /// applies what its proposer checked).
    pub fn changed(&self, node: Option<i32>, change: &ConfigChange) -> BrokerConfigs {
        let mut next = self.clone();
        let empty = BTreeMap::new();
        let current = self.scope(node).unwrap_or(&empty);
        let changed = change.applied_to(current);
        match node {
            None => next.default = changed,
            Some(n) if changed.is_empty() => {
                next.brokers.remove(&n);
            }
            Some(n) => {
                next.brokers.insert(n, changed);
            }
        }
        next
    }

    /// `self` with `change` applied to one scope, refused as Kafka refuses
    /// it: a setting that cannot change at run time is INVALID_REQUEST
    /// (deleting one succeeds: it cannot be set), a value that does not
    /// read is INVALID_CONFIG.
    pub fn checked_change(
        &self,
        engine: &EngineConfig,
        node: Option<i32>,
        change: &ConfigChange,
    ) -> Result<BrokerConfigs, EngineError> {
        let set: Vec<(&str, &str)> = match change {
            ConfigChange::Replace(all) => {
                all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
            }
            ConfigChange::Update(ops) => (ops.iter())
                .filter_map(|(k, v)| Some((k.as_str(), v.as_deref()?)))
                .collect(),
        };
        let fixed: Vec<&str> = (set.iter())
            .map(|(k, _)| *k)
            .filter(|k| !is_dynamic(k))
            .collect();
        if !fixed.is_empty() {
            return Err(EngineError::InvalidRequest(format!(
                "Cannot update these configs dynamically: Set({}) (Brook's other broker settings are static: set them in brook.toml or on the command line and restart)",
                fixed.join(", ")
            )));
        }
        for (k, v) in &set {
            check_value(engine, k, v)?;
        }
        let next = self.changed(node, change);
        // The whole set must make a topic config (a segment size under a
        // topic's minimum, say, fails here rather than on every broker).
        next.resolve(engine, node.unwrap_or(engine.node_id))?;
        Ok(next)
    }

    /// What broker `node` runs with.
    pub fn resolve(&self, engine: &EngineConfig, node: i32) -> Result<BrokerSettings, EngineError> {
        let value = |name: &str| self.value(node, name).map(|(v, _)| v);
        let mut topic = BTreeMap::new();
        for (name, synonym) in DYNAMIC {
            if let (Some(t), Some(v)) = (synonym, value(name)) {
                topic.insert(t.to_string(), v.to_string());
            }
        }
        let mut cleaner = engine.cleaner.clone();
        if let Some(v) = value(CLEANER_IO) {
            cleaner.io_max_bytes_per_second = rate(CLEANER_IO, v)?;
        }
        if let Some(v) = value(CLEANER_BACKOFF) {
            cleaner.backoff = Duration::from_millis(long(CLEANER_BACKOFF, v, 0)? as u64);
        }
        if let Some(v) = value(CLEANER_DEDUPE) {
            cleaner.dedupe_buffer_bytes = long(CLEANER_DEDUPE, v, 1 << 20)? as usize;
        }
        let replication = |name| value(name).map_or(Ok(None), |v| rate(name, v));
        Ok(BrokerSettings {
            topic_defaults: engine.topic_defaults.with_overrides(&topic)?,
            cleaner,
            leader_replication_rate: replication(LEADER_REPLICATION_RATE)?,
            follower_replication_rate: replication(FOLLOWER_REPLICATION_RATE)?,
        })
    }

    /// What broker `node` runs with; a stored value that no longer reads
    /// (a static setting changed under it) is logged and left out.
    pub fn resolve_or_static(&self, engine: &EngineConfig, node: i32) -> BrokerSettings {
        self.resolve(engine, node).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "dynamic broker configs do not apply; using the static ones");
            BrokerSettings {
                topic_defaults: engine.topic_defaults.clone(),
                cleaner: engine.cleaner.clone(),
                ..BrokerSettings::default()
            }
        })
    }

    fn path(data_dir: &Path) -> std::path::PathBuf {
        crate::meta::data_dir::broker_configs_path(data_dir)
    }

    /// A single broker's stored settings (none when it never stored any).
    pub fn load(data_dir: &Path) -> Result<BrokerConfigs, EngineError> {
        crate::meta::json_file::load(&Self::path(data_dir))
    }

    pub fn store(&self, data_dir: &Path) -> Result<(), EngineError> {
        crate::meta::json_file::store(&Self::path(data_dir), self)
    }
}

fn invalid(name: &str, value: &str, why: &str) -> EngineError {
    EngineError::InvalidConfig(format!(
        "Invalid value {value} for configuration {name}: {why}"
    ))
}

fn long(name: &str, value: &str, min: i64) -> Result<i64, EngineError> {
    let n = (value.trim().parse::<i64>()).map_err(|_| invalid(name, value, "not a number"))?;
    if n < min {
        return Err(invalid(
            name,
            value,
            &format!("Value must be at least {min}"),
        ));
    }
    Ok(n)
}

/// A byte rate; Kafka's "unlimited" (Long.MAX_VALUE, or a Double's maximum
/// for the cleaner) is `None`.
fn rate(name: &str, value: &str) -> Result<Option<u64>, EngineError> {
    let r: f64 = (value.trim().parse()).map_err(|_| invalid(name, value, "not a number"))?;
    if r.is_nan() || r < 0.0 {
        return Err(invalid(name, value, "Value must be at least 0"));
    }
    Ok((r < i64::MAX as f64).then_some(r as u64))
}

fn check_value(engine: &EngineConfig, name: &str, value: &str) -> Result<(), EngineError> {
    match name {
        LEADER_REPLICATION_RATE | FOLLOWER_REPLICATION_RATE | CLEANER_IO => {
            rate(name, value).map(drop)
        }
        CLEANER_BACKOFF => long(name, value, 0).map(drop),
        CLEANER_DEDUPE => long(name, value, 1 << 20).map(drop),
        _ => {
            let synonym = DYNAMIC.iter().find(|(n, _)| *n == name).and_then(|d| d.1);
            let Some(topic_key) = synonym else {
                return Ok(());
            };
            let one = BTreeMap::from([(topic_key.to_string(), value.to_string())]);
            (engine.topic_defaults.with_overrides(&one))
                .map(drop)
                .map_err(|_| invalid(name, value, "not a valid value"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(kv: &[(&str, Option<&str>)]) -> ConfigChange {
        ConfigChange::Update(
            (kv.iter())
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        )
    }

    #[test]
    fn a_brokers_own_value_wins_over_the_cluster_default() {
        let engine = EngineConfig::new("/nonexistent".into(), 1);
        let c = BrokerConfigs::default()
            .checked_change(
                &engine,
                None,
                &update(&[("log.retention.ms", Some("1000"))]),
            )
            .unwrap()
            .checked_change(
                &engine,
                Some(2),
                &update(&[("log.retention.ms", Some("2000"))]),
            )
            .unwrap();
        assert_eq!(
            c.value(2, "log.retention.ms"),
            Some(("2000", Scope::Broker))
        );
        assert_eq!(
            c.value(3, "log.retention.ms"),
            Some(("1000", Scope::ClusterDefault))
        );
        let on2 = c.resolve(&engine, 2).unwrap();
        let on3 = c.resolve(&engine, 3).unwrap();
        assert_eq!(on2.topic_defaults.retention_ms, Some(2000));
        assert_eq!(on3.topic_defaults.retention_ms, Some(1000));
        // Deleting broker 2's value falls back to the default; its scope goes.
        let c = c
            .checked_change(&engine, Some(2), &update(&[("log.retention.ms", None)]))
            .unwrap();
        assert!(c.brokers.is_empty());
        assert_eq!(
            c.resolve(&engine, 2).unwrap().topic_defaults.retention_ms,
            Some(1000)
        );
    }

    #[test]
    fn rates_read_as_kafka_writes_them() {
        let engine = EngineConfig::new("/nonexistent".into(), 1);
        let c = BrokerConfigs::default()
            .checked_change(
                &engine,
                Some(1),
                &update(&[
                    (LEADER_REPLICATION_RATE, Some("1000000")),
                    (FOLLOWER_REPLICATION_RATE, Some(&i64::MAX.to_string())),
                ]),
            )
            .unwrap();
        let s = c.resolve(&engine, 1).unwrap();
        assert_eq!(s.leader_replication_rate, Some(1_000_000));
        assert_eq!(
            s.follower_replication_rate, None,
            "Long.MAX_VALUE: no limit"
        );
        assert_eq!(
            BrokerConfigs::default().resolve(&engine, 1).unwrap(),
            BrokerSettings {
                topic_defaults: engine.topic_defaults.clone(),
                cleaner: engine.cleaner.clone(),
                ..BrokerSettings::default()
            }
        );
    }

    #[test]
    fn static_settings_and_bad_values_are_refused() {
        let engine = EngineConfig::new("/nonexistent".into(), 1);
        let none = BrokerConfigs::default();
        let fixed = none.checked_change(&engine, None, &update(&[("log.dirs", Some("/x"))]));
        assert!(
            matches!(&fixed, Err(EngineError::InvalidRequest(m)) if m.contains("Cannot update these configs dynamically")),
            "{fixed:?}"
        );
        // Deleting a static one changes nothing and succeeds.
        assert_eq!(
            none.checked_change(&engine, None, &update(&[("log.dirs", None)])),
            Ok(none.clone())
        );
        for (k, v) in [
            (LEADER_REPLICATION_RATE, "-1"),
            (LEADER_REPLICATION_RATE, "fast"),
            ("log.segment.bytes", "3"),
            ("log.cleanup.policy", "shred"),
            (CLEANER_DEDUPE, "10"),
        ] {
            let r = none.checked_change(&engine, Some(1), &update(&[(k, Some(v))]));
            assert!(
                matches!(r, Err(EngineError::InvalidConfig(_))),
                "{k}={v}: {r:?}"
            );
        }
    }

    #[test]
    fn store_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate::meta::data_dir::meta_dir(dir.path())).unwrap();
        assert_eq!(
            BrokerConfigs::load(dir.path()).unwrap(),
            BrokerConfigs::default()
        );
        let engine = EngineConfig::new(dir.path().into(), 1);
        let c = BrokerConfigs::default()
            .checked_change(&engine, Some(1), &update(&[(CLEANER_BACKOFF, Some("50"))]))
            .unwrap();
        c.store(dir.path()).unwrap();
        assert_eq!(BrokerConfigs::load(dir.path()).unwrap(), c);
    }
}
