//! Client quotas as Kafka defines them: byte rates per client id for produce and
//! fetch, with a default entity for clients without their own entry.
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

/// All quotas: by client id, `None` being Kafka's default entity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quotas {
    pub clients: BTreeMap<Option<String>, ClientQuota>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    default: Option<ClientQuota>,
    clients: BTreeMap<String, ClientQuota>,
}

impl Quotas {
    fn path(data_dir: &Path) -> PathBuf {
        crate::meta::data_dir::quotas_path(data_dir)
    }

    /// The limits that apply to `client_id`: its own entry, else the default.
    pub fn for_client(&self, client_id: &str) -> Option<&ClientQuota> {
        self.clients
            .get(&Some(client_id.to_string()))
            .or_else(|| self.clients.get(&None))
    }

    /// `self` with `ops` applied to `entity`; entities left with no limits disappear.
    pub fn with_changes(
        &self,
        entity: &Option<String>,
        ops: &[QuotaOp],
    ) -> Result<Quotas, EngineError> {
        let mut next = self.clone();
        let q = next.clients.entry(entity.clone()).or_default();
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
            next.clients.remove(entity);
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
        let mut clients: BTreeMap<Option<String>, ClientQuota> = stored
            .clients
            .into_iter()
            .map(|(k, v)| (Some(k), v))
            .collect();
        if let Some(d) = stored.default {
            clients.insert(None, d);
        }
        Ok(Quotas { clients })
    }

    pub fn store(&self, data_dir: &Path) -> Result<(), EngineError> {
        let path = Self::path(data_dir);
        let stored = Stored {
            default: self.clients.get(&None).cloned(),
            clients: self
                .clients
                .iter()
                .filter_map(|(k, v)| Some((k.clone()?, v.clone())))
                .collect(),
        };
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
        let q = Quotas::default()
            .with_changes(&None, &[set(PRODUCER_BYTE_RATE, 1000.0)])
            .unwrap()
            .with_changes(&Some("fast".into()), &[set(CONSUMER_BYTE_RATE, 5e6)])
            .unwrap();
        assert_eq!(
            q.for_client("anyone").unwrap().producer_byte_rate,
            Some(1000.0)
        );
        assert_eq!(
            q.for_client("fast").unwrap().producer_byte_rate,
            None,
            "own entry wins"
        );
        assert!(
            q.with_changes(&None, &[set("request_percentage", 1.0)])
                .is_err()
        );
        assert!(
            q.with_changes(&None, &[set(PRODUCER_BYTE_RATE, -1.0)])
                .is_err()
        );
        q.store(dir.path()).unwrap();
        assert_eq!(Quotas::load(dir.path()).unwrap(), q);
        let cleared = q
            .with_changes(
                &None,
                &[QuotaOp {
                    key: PRODUCER_BYTE_RATE.into(),
                    value: None,
                }],
            )
            .unwrap();
        assert!(!cleared.clients.contains_key(&None));
    }
}
