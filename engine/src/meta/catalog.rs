//! The topic catalog: which topics exist, their ids, partition counts and config.
//!
//! Shard 0 owns the authoritative copy and persists it to
//! `<data-dir>/__brook/topics.json` (written to a temporary file, fsynced, renamed,
//! directory fsynced) before any change is acknowledged. Every shard keeps its own
//! immutable `Rc<Catalog>` copy, replaced by a message from shard 0 after each
//! change, so reading metadata never crosses cores.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{EngineConfig, TopicConfig};
use crate::error::EngineError;
use crate::meta::acls::Acls;
use crate::meta::broker_configs::{BrokerConfigs, BrokerSettings};
use crate::meta::scram::ScramCredentials;

/// Everything the broker knows about one topic.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: u32,
    /// Only the settings the topic overrides, as given (Kafka names).
    pub overrides: BTreeMap<String, String>,
    /// Defaults with overrides applied.
    pub config: TopicConfig,
}

/// An immutable snapshot of all topics, and of the dynamic broker settings
/// their defaults come from.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub topics: HashMap<String, TopicMeta>,
    /// The dynamic broker settings as stored (every broker's).
    pub broker_configs: BrokerConfigs,
    /// What this broker runs with (see [`Catalog::resolve`]).
    pub settings: BrokerSettings,
    /// Every user's SCRAM credentials (shared: they change rarely and are
    /// read on every SCRAM authentication).
    pub scram: Arc<ScramCredentials>,
    /// Every ACL (read on every authorized request).
    pub acls: Arc<Acls>,
}

#[derive(Serialize, Deserialize)]
struct StoredTopic {
    id: String,
    partitions: u32,
    configs: BTreeMap<String, String>,
}

/// Kafka's topic name rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), EngineError> {
    let bad = |why: &str| Err(EngineError::InvalidTopicName(format!("{name:?}: {why}")));
    if name.is_empty() || name.len() > 249 {
        return bad("length must be 1 to 249");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    if name.starts_with("__brook") {
        return bad("the __brook prefix is reserved");
    }
    Ok(())
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    let mut id = [0u8; 16];
    if s.len() != 32 {
        return None;
    }
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

impl Catalog {
    /// An existing topic whose name differs from `name` only in '.' versus '_'.
    /// Kafka refuses the second of such a pair (`Topic.hasCollision`) because
    /// metric names replace '.' with '_', so the two would share their metrics.
    pub fn colliding_topic(&self, name: &str) -> Option<&str> {
        let unify = |n: &str| n.replace('.', "_");
        let key = unify(name);
        self.topics
            .keys()
            .find(|existing| existing.as_str() != name && unify(existing) == key)
            .map(String::as_str)
    }

    pub fn path(data_dir: &Path) -> PathBuf {
        crate::meta::data_dir::catalog_path(data_dir)
    }

    /// Resolves the broker settings of broker `node` from `engine`'s static
    /// ones and `broker_configs`, and every topic's config from them and its
    /// overrides. A topic whose overrides no longer apply (a static setting
    /// changed under them) runs with the defaults, logged.
    pub fn resolve(&mut self, engine: &EngineConfig, node: i32) {
        self.settings = self.broker_configs.resolve_or_static(engine, node);
        let defaults = &self.settings.topic_defaults;
        for t in self.topics.values_mut() {
            t.config = defaults.with_overrides(&t.overrides).unwrap_or_else(|e| {
                tracing::warn!(topic = %t.name, error = %e, "topic config no longer valid; using defaults");
                defaults.clone()
            });
        }
    }

    /// Loads a single broker's catalog and dynamic settings (empty when it
    /// never stored them), resolved.
    pub fn load(engine: &EngineConfig) -> Result<Catalog, EngineError> {
        let data_dir = &engine.data_dir;
        let mut catalog = Catalog {
            broker_configs: BrokerConfigs::load(data_dir)?,
            scram: Arc::new(ScramCredentials::load(data_dir)?),
            acls: Arc::new(Acls::load(data_dir)?),
            ..Catalog::default()
        };
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                catalog.resolve(engine, engine.node_id);
                return Ok(catalog);
            }
            Err(e) => return Err(e.into()),
        };
        let stored: BTreeMap<String, StoredTopic> = serde_json::from_str(&text)
            .map_err(|e| EngineError::Storage(format!("{}: {e}", path.display())))?;
        for (name, t) in stored {
            let id = unhex(&t.id).ok_or_else(|| {
                EngineError::Storage(format!("{}: bad id for {name}", path.display()))
            })?;
            let meta = TopicMeta {
                name: name.clone(),
                id,
                partitions: t.partitions,
                overrides: t.configs,
                config: TopicConfig::default(),
            };
            catalog.topics.insert(name, meta);
        }
        catalog.resolve(engine, engine.node_id);
        Ok(catalog)
    }

    /// Writes the topics durably: temp file, fsync, rename, fsync of the
    /// directory. (The dynamic broker settings have their own file.)
    pub fn store(&self, data_dir: &Path) -> Result<(), EngineError> {
        let path = Self::path(data_dir);
        let dir = path.parent().expect("catalog path has a parent");
        std::fs::create_dir_all(dir)?;
        let stored: BTreeMap<&str, StoredTopic> = self
            .topics
            .values()
            .map(|t| {
                let st = StoredTopic {
                    id: hex(&t.id),
                    partitions: t.partitions,
                    configs: t.overrides.clone(),
                };
                (t.name.as_str(), st)
            })
            .collect();
        let text =
            serde_json::to_vec_pretty(&stored).map_err(|e| EngineError::Storage(e.to_string()))?;
        crate::log::index::write_file_atomically(&path, &text)?;
        Ok(())
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_and_underscores_collide() {
        let mut c = Catalog::default();
        let meta = |name: &str| TopicMeta {
            name: name.to_string(),
            id: [0; 16],
            partitions: 1,
            overrides: Default::default(),
            config: TopicConfig::default(),
        };
        c.topics.insert("a.b".into(), meta("a.b"));
        assert_eq!(c.colliding_topic("a_b"), Some("a.b"));
        assert_eq!(c.colliding_topic("a.b"), None);
        assert_eq!(c.colliding_topic("a-b"), None);
    }

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn store_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let engine = EngineConfig::new(dir.path().into(), 1);
        let defaults = TopicConfig::default();
        let overrides = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let config = defaults.with_overrides(&overrides).unwrap();
        let meta = TopicMeta {
            name: "t".into(),
            id: crate::ids::random_uuid(),
            partitions: 3,
            overrides,
            config,
        };
        let mut c = Catalog::default();
        c.topics.insert("t".into(), meta.clone());
        c.store(dir.path()).unwrap();
        let back = Catalog::load(&engine).unwrap();
        assert_eq!(back.topics["t"], meta);
        assert_ne!(crate::ids::random_uuid(), crate::ids::random_uuid());
    }
}
