//! Client quotas as Kafka defines them: byte rates for produce and fetch per
//! user principal, per client id, or per both, each with a default entity.
//!
//! A request's limit for one quota type is taken from the first entity, in
//! Kafka's order, that sets it: (user, client-id), (user, default client),
//! (user), (default user, client-id), (default user, default client),
//! (default user), (client-id), (default client). The limit is shared by the
//! requests the entity covers: a user's quota by all of that user's clients.
//!
//! The configuration is changed at run time (AlterClientQuotas) on shard 0, which
//! persists it to `<data-dir>/__brook/quotas.json` (temp file, fsync, rename) and
//! sends every shard the new immutable copy — the same path as the topic catalog.
//! Measuring rates and throttling is the protocol layer's job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// Quota keys this broker enforces (Kafka's names).
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";

/// Limits of one entity; `None` means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientQuota {
    pub producer_byte_rate: Option<f64>,
    pub consumer_byte_rate: Option<f64>,
}

impl ClientQuota {
    fn slot(&mut self, key: &str) -> Result<&mut Option<f64>, EngineError> {
        match key {
            PRODUCER_BYTE_RATE => Ok(&mut self.producer_byte_rate),
            CONSUMER_BYTE_RATE => Ok(&mut self.consumer_byte_rate),
            other => Err(EngineError::InvalidRequest(format!(
                "quota key {other} is not supported"
            ))),
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        match key {
            PRODUCER_BYTE_RATE => self.producer_byte_rate,
            CONSUMER_BYTE_RATE => self.consumer_byte_rate,
            _ => None,
        }
    }

    /// The (key, value) pairs that are set.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let mut v = Vec::new();
        if let Some(r) = self.producer_byte_rate {
            v.push((PRODUCER_BYTE_RATE, r));
        }
        if let Some(r) = self.consumer_byte_rate {
            v.push((CONSUMER_BYTE_RATE, r));
        }
        v
    }
}

/// One change of an AlterClientQuotas entry: set `key` to `value`, or remove it.
#[derive(Clone, Debug)]
pub struct QuotaOp {
    pub key: String,
    pub value: Option<f64>,
}

/// A named entity, or Kafka's default entity of its type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

/// A quota entity: a user, a client id, or both (at least one is set).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client: Option<EntityName>,
}

impl QuotaEntity {
    pub fn client(name: Option<&str>) -> QuotaEntity {
        QuotaEntity {
            user: None,
            client: Some(name.map_or(EntityName::Default, |n| EntityName::Named(n.into()))),
        }
    }
}

/// All quotas, by entity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quotas {
    pub entities: BTreeMap<QuotaEntity, ClientQuota>,
}

/// The file: client-id entities in the fields of the first version (which
/// knew only those), the rest in `entities`.
#[derive(Serialize, Deserialize)]
struct Stored {
    default: Option<ClientQuota>,
    clients: BTreeMap<String, ClientQuota>,
    #[serde(default)]
    entities: Vec<(QuotaEntity, ClientQuota)>,
}

impl Quotas {
    fn path(data_dir: &Path) -> PathBuf {
        crate::meta::data_dir::quotas_path(data_dir)
    }

    /// The limit of quota `key` for requests of `user` (the principal's
    /// name) from `client_id`, and the name of what it is measured against:
    /// every request that resolves to the same entity and names shares it.
    pub fn limit(&self, key: &str, user: &str, client_id: &str) -> Option<(f64, String)> {
        use EntityName::{Default, Named};
        let (u, c) = (Named(user.to_string()), Named(client_id.to_string()));
        let order = [
            (Some(u.clone()), Some(c.clone())),
            (Some(u.clone()), Some(Default)),
            (Some(u.clone()), None),
            (Some(Default), Some(c.clone())),
            (Some(Default), Some(Default)),
            (Some(Default), None),
            (None, Some(c)),
            (None, Some(Default)),
        ];
        order.into_iter().find_map(|(user_e, client_e)| {
            let key_name = format!(
                "user={};client-id={}",
                if user_e.is_some() { user } else { "" },
                if client_e.is_some() { client_id } else { "" }
            );
            let e = QuotaEntity {
                user: user_e,
                client: client_e,
            };
            Some((self.entities.get(&e)?.get(key)?, key_name))
        })
    }

    /// `self` with `ops` applied to `entity`; entities left with no limits disappear.
    pub fn with_changes(
        &self,
        entity: &QuotaEntity,
        ops: &[QuotaOp],
    ) -> Result<Quotas, EngineError> {
        if entity.user.is_none() && entity.client.is_none() {
            return Err(EngineError::InvalidRequest(
                "a quota entity names a user, a client id or both".into(),
            ));
        }
        let mut next = self.clone();
        let q = next.entities.entry(entity.clone()).or_default();
        for op in ops {
            if op.value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(EngineError::InvalidRequest(format!(
                    "{} must be a positive number",
                    op.key
                )));
            }
            *q.slot(&op.key)? = op.value;
        }
        if q.values().is_empty() {
            next.entities.remove(entity);
        }
        Ok(next)
    }

    pub fn load(data_dir: &Path) -> Result<Quotas, EngineError> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Quotas::default()),
            Err(e) => return Err(e.into()),
        };
        let stored: Stored = serde_json::from_str(&text)
            .map_err(|e| EngineError::Storage(format!("{}: {e}", path.display())))?;
        let mut entities: BTreeMap<QuotaEntity, ClientQuota> = (stored.clients.into_iter())
            .map(|(k, v)| (QuotaEntity::client(Some(&k)), v))
            .collect();
        if let Some(d) = stored.default {
            entities.insert(QuotaEntity::client(None), d);
        }
        entities.extend(stored.entities);
        Ok(Quotas { entities })
    }

    pub fn store(&self, data_dir: &Path) -> Result<(), EngineError> {
        let path = Self::path(data_dir);
        let mut stored = Stored {
            default: None,
            clients: BTreeMap::new(),
            entities: Vec::new(),
        };
        for (e, q) in &self.entities {
            match (&e.user, &e.client) {
                (None, Some(EntityName::Default)) => stored.default = Some(q.clone()),
                (None, Some(EntityName::Named(n))) => {
                    stored.clients.insert(n.clone(), q.clone());
                }
                _ => stored.entities.push((e.clone(), q.clone())),
            }
        }
        let text =
            serde_json::to_vec_pretty(&stored).map_err(|e| EngineError::Storage(e.to_string()))?;
        crate::log::index::write_file_atomically(&path, &text)?;
        Ok(())
    }
}

/// Kafka measures rates over 11 one-second samples; a 10 s window is that span.
const WINDOW: Duration = Duration::from_secs(10);
/// Rates are computed over at least this long, so one request is not a burst.
const MIN_SPAN: Duration = Duration::from_secs(1);

/// Bytes over a sliding window of about ten seconds, for byte-rate limits
/// (client quotas, replication throttles).
#[derive(Clone, Debug)]
pub struct RateWindow {
    start: Instant,
    bytes: f64,
    pub last: Instant,
}

impl RateWindow {
    pub fn new(now: Instant) -> Self {
        RateWindow {
            start: now,
            bytes: 0.0,
            last: now,
        }
    }

    /// Past the window, keeps its second half at the average rate.
    fn slide(&mut self, now: Instant) {
        let span = now.saturating_duration_since(self.start);
        if span > WINDOW {
            self.bytes *= (WINDOW / 2).as_secs_f64() / span.as_secs_f64();
            self.start = now - WINDOW / 2;
        }
    }

    pub fn record(&mut self, bytes: usize, now: Instant) {
        self.slide(now);
        self.bytes += bytes as f64;
        self.last = now;
    }

    /// The bytes beyond what `rate` bytes/s allows over the window (zero or
    /// less: within the rate).
    pub fn excess(&mut self, rate: f64, now: Instant) -> f64 {
        self.slide(now);
        let span = now.saturating_duration_since(self.start).max(MIN_SPAN);
        self.bytes - rate * span.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_window_counts_bytes_against_a_rate_and_forgets_old_ones() {
        let now = Instant::now();
        let mut w = RateWindow::new(now);
        w.record(500, now);
        assert!(w.excess(1000.0, now) <= 0.0, "within the first second");
        w.record(2500, now);
        assert_eq!(w.excess(1000.0, now), 2000.0);
        // Four seconds on, 3000 bytes are within 1000 B/s.
        assert!(w.excess(1000.0, now + Duration::from_secs(4)) <= 0.0);
        // A minute later the window holds the average of that minute, 50 B/s.
        let later = now + Duration::from_secs(60);
        assert!(w.excess(100.0, later) <= 0.0);
        assert!(w.excess(40.0, later) > 0.0);
    }

    #[test]
    fn changes_defaults_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("__brook")).unwrap();
        let set = |k: &str, v: f64| QuotaOp {
            key: k.into(),
            value: Some(v),
        };
        let client = |n: Option<&str>| QuotaEntity::client(n);
        let q = Quotas::default()
            .with_changes(&client(None), &[set(PRODUCER_BYTE_RATE, 1000.0)])
            .unwrap()
            .with_changes(&client(Some("fast")), &[set(CONSUMER_BYTE_RATE, 5e6)])
            .unwrap();
        assert_eq!(
            q.limit(PRODUCER_BYTE_RATE, "ANONYMOUS", "anyone"),
            Some((1000.0, "user=;client-id=anyone".into()))
        );
        // Each quota type resolves on its own, as Kafka's quota managers do.
        assert_eq!(q.limit(PRODUCER_BYTE_RATE, "u", "fast").unwrap().0, 1000.0);
        assert_eq!(q.limit(CONSUMER_BYTE_RATE, "u", "fast").unwrap().0, 5e6);
        assert_eq!(q.limit(CONSUMER_BYTE_RATE, "u", "slow"), None);
        assert!(
            q.with_changes(&client(None), &[set("request_percentage", 1.0)])
                .is_err()
        );
        assert!(
            q.with_changes(&client(None), &[set(PRODUCER_BYTE_RATE, -1.0)])
                .is_err()
        );
        q.store(dir.path()).unwrap();
        assert_eq!(Quotas::load(dir.path()).unwrap(), q);
        let cleared = q
            .with_changes(
                &client(None),
                &[QuotaOp {
                    key: PRODUCER_BYTE_RATE.into(),
                    value: None,
                }],
            )
            .unwrap();
        assert!(!cleared.entities.contains_key(&client(None)));
    }

    #[test]
    fn user_quotas_take_kafkas_precedence_and_are_shared_by_the_users_clients() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("__brook")).unwrap();
        let set = |v: f64| {
            [QuotaOp {
                key: PRODUCER_BYTE_RATE.into(),
                value: Some(v),
            }]
        };
        let e = |user: Option<EntityName>, client: Option<EntityName>| QuotaEntity { user, client };
        let named = |s: &str| Some(EntityName::Named(s.into()));
        let mut q = Quotas::default();
        for (entity, rate) in [
            (e(None, Some(EntityName::Default)), 8.0),
            (e(None, named("c")), 7.0),
            (e(Some(EntityName::Default), None), 6.0),
            (e(Some(EntityName::Default), Some(EntityName::Default)), 5.0),
            (e(Some(EntityName::Default), named("c")), 4.0),
            (e(named("alice"), None), 3.0),
            (e(named("alice"), Some(EntityName::Default)), 2.0),
            (e(named("alice"), named("c")), 1.0),
        ] {
            q = q.with_changes(&entity, &set(rate)).unwrap();
            // The entity just added is the most specific for alice and c.
            assert_eq!(q.limit(PRODUCER_BYTE_RATE, "alice", "c").unwrap().0, rate);
        }
        assert_eq!(
            q.limit(PRODUCER_BYTE_RATE, "alice", "other"),
            Some((2.0, "user=alice;client-id=other".into()))
        );
        let q = q
            .with_changes(
                &e(named("alice"), Some(EntityName::Default)),
                &[QuotaOp {
                    key: PRODUCER_BYTE_RATE.into(),
                    value: None,
                }],
            )
            .unwrap();
        // alice's own quota is shared by all of her clients.
        assert_eq!(
            q.limit(PRODUCER_BYTE_RATE, "alice", "other"),
            Some((3.0, "user=alice;client-id=".into()))
        );
        assert_eq!(q.limit(PRODUCER_BYTE_RATE, "bob", "c").unwrap().0, 4.0);
        assert!(q.with_changes(&e(None, None), &set(1.0)).is_err());
        q.store(dir.path()).unwrap();
        assert_eq!(Quotas::load(dir.path()).unwrap(), q);
    }
}
