//! The transaction coordinator's state, independent of where it runs: one
//! [`TxnMeta`] per transactional id, kept in `__transaction_state` in Kafka's
//! own record format so that a restarted or newly elected coordinator rebuilds
//! it from the (replicated) log, as Kafka's `TransactionStateManager` does.
//!
//! Key (version 0): `i16 0 | string transactional_id`.
//! Value (version 0): `i16 0 | i64 producer_id | i16 producer_epoch |
//! i32 transaction_timeout_ms | i8 state | array topics (i32 count; each:
//! string topic, array i32 partitions) | i64 last_update_ms | i64 start_ms`.
//! Strings are `i16 length | UTF-8`. A null value removes the id.
//!
//! The state machine (Kafka's `TransactionState`), transaction version 1:
//! `Empty → Ongoing` (AddPartitionsToTxn / AddOffsetsToTxn),
//! `Ongoing → PrepareCommit | PrepareAbort` (EndTxn, a timeout, a new
//! instance's InitProducerId), `Prepare* → Complete*` once every partition has
//! its marker, `Complete* → Ongoing | Empty` (the next transaction, or a new
//! InitProducerId). A `Prepare*` state found on load means markers may be
//! missing: the coordinator writes them all again (a marker is idempotent for
//! the reader: a second one ends nothing).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::coord::group::offsets_partition_of;
use crate::coord::group_log::Reader;
use crate::log::batch::{self, BatchInfo};
use crate::log::records::uncompressed_records;
use crate::types::{Offset, TopicPartition};

pub const TXN_TOPIC: &str = "__transaction_state";
/// Kafka's `transaction.state.log.num.partitions` default.
pub const TXN_PARTITIONS: u32 = 50;
/// Kafka's `transaction.max.timeout.ms` default.
pub const MAX_TIMEOUT_MS: i32 = 900_000;

/// The `__transaction_state` partition of `transactional_id` (Kafka's
/// `abs(hashCode) % partitions`, the same hash as groups).
pub fn txn_partition_of(transactional_id: &str) -> u32 {
    // Both topics have 50 partitions; the hash is Java's String.hashCode.
    const _: () = assert!(TXN_PARTITIONS == crate::coord::group::OFFSETS_PARTITIONS);
    offsets_partition_of(transactional_id)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    fn code(self) -> i8 {
        self as i8
    }

    fn from_code(c: i8) -> Option<TxnState> {
        use TxnState::*;
        [
            Empty,
            Ongoing,
            PrepareCommit,
            PrepareAbort,
            CompleteCommit,
            CompleteAbort,
            Dead,
            PrepareEpochFence,
        ]
        .get(usize::try_from(c).ok()?)
        .copied()
    }

    /// The name DescribeTransactions and ListTransactions report.
    pub fn kafka_name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are being written: the next operation must wait.
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// One transactional id's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: u64,
    pub epoch: u16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub last_update_ms: i64,
    /// When the current transaction began (-1 when none is open).
    pub start_ms: i64,
}

impl TxnMeta {
    pub fn new(transactional_id: String, producer_id: u64, timeout_ms: i32, now_ms: i64) -> Self {
        TxnMeta {
            transactional_id,
            producer_id,
            epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            start_ms: -1,
        }
    }

    /// Whether `now_ms` is past the open transaction's timeout.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.start_ms >= 0
            && now_ms.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

pub fn key(transactional_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + transactional_id.len());
    k.extend_from_slice(&0i16.to_be_bytes());
    put_str(&mut k, transactional_id);
    k
}

pub fn value(m: &TxnMeta) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&0i16.to_be_bytes());
    v.extend_from_slice(&(m.producer_id as i64).to_be_bytes());
    v.extend_from_slice(&(m.epoch as i16).to_be_bytes());
    v.extend_from_slice(&m.timeout_ms.to_be_bytes());
    v.push(m.state.code() as u8);
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in &m.partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    v.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
    for (topic, parts) in by_topic {
        put_str(&mut v, topic);
        v.extend_from_slice(&(parts.len() as i32).to_be_bytes());
        for p in parts {
            v.extend_from_slice(&(p as i32).to_be_bytes());
        }
    }
    v.extend_from_slice(&m.last_update_ms.to_be_bytes());
    v.extend_from_slice(&m.start_ms.to_be_bytes());
    v
}

/// One record of `__transaction_state` ready to append, as a batch.
pub fn record_batch(m: &TxnMeta, now_ms: i64) -> Vec<u8> {
    let (k, v) = (key(&m.transactional_id), value(m));
    batch::build_batch(Offset(0), &[(Some(&k), Some(&v))], now_ms, None)
}

/// The transactional id of a key; `None` for another key version.
pub fn decode_key(k: &[u8]) -> Option<String> {
    let mut r = Reader(k, 0);
    (r.i16()? == 0).then_some(())?;
    r.string()
}

pub fn decode_value(transactional_id: String, v: &[u8]) -> Option<TxnMeta> {
    let mut r = Reader(v, 0);
    let version = r.i16()?;
    if version != 0 {
        return None;
    }
    let producer_id = u64::try_from(r.i64()?).ok()?;
    let epoch = u16::try_from(r.i16()?).ok()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_code(r.take(1)?[0] as i8)?;
    let mut partitions = BTreeSet::new();
    // Counts come from the bytes: each element takes bytes, so the loop ends
    // with the input whatever the count says.
    for _ in 0..r.i32()?.max(0) {
        let topic = r.string()?;
        for _ in 0..r.i32()?.max(0) {
            let partition = u32::try_from(r.i32()?).ok()?;
            partitions.insert(TopicPartition {
                topic: topic.clone(),
                partition,
            });
        }
    }
    Some(TxnMeta {
        transactional_id,
        producer_id,
        epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms: r.i64()?,
        start_ms: r.i64()?,
    })
}

/// Applies one stored batch of `__transaction_state`; returns its records.
fn apply_batch(buf: &[u8], info: &BatchInfo, txns: &mut HashMap<String, TxnMeta>) -> usize {
    let Ok(records) = uncompressed_records(buf, info) else {
        tracing::warn!(offset = %info.base_offset, "unreadable __transaction_state batch skipped");
        return 0;
    };
    let mut n = 0;
    for r in records {
        let Some(id) = r.key.and_then(decode_key) else {
            continue;
        };
        match r.value {
            None => {
                txns.remove(&id);
            }
            Some(v) => match decode_value(id.clone(), v) {
                Some(m) => {
                    txns.insert(id, m);
                }
                None => {
                    tracing::warn!(transactional_id = %id, "unreadable transaction state skipped")
                }
            },
        }
        n += 1;
    }
    n
}

/// Rebuilds the transactions of one `__transaction_state` partition from its
/// directory (the last record per id wins); returns the records read.
pub fn replay_partition(dir: &Path, txns: &mut HashMap<String, TxnMeta>) -> std::io::Result<usize> {
    crate::coord::group_log::for_each_batch(dir, |buf, info| apply_batch(buf, info, txns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TxnMeta {
        let mut m = TxnMeta::new("app-1".into(), 4711, 60_000, 1_000);
        m.epoch = 3;
        m.state = TxnState::Ongoing;
        m.start_ms = 900;
        for (t, p) in [("out", 2), ("out", 0), ("__consumer_offsets", 17)] {
            m.partitions.insert(TopicPartition {
                topic: t.into(),
                partition: p,
            });
        }
        m
    }

    #[test]
    fn value_round_trips_and_damage_is_refused() {
        let m = meta();
        let v = value(&m);
        assert_eq!(decode_value("app-1".into(), &v), Some(m.clone()));
        assert_eq!(decode_key(&key("app-1")).as_deref(), Some("app-1"));
        for cut in 0..v.len() {
            assert_eq!(
                decode_value("app-1".into(), &v[..cut]),
                None,
                "cut at {cut}"
            );
        }
        let mut bad_state = v.clone();
        bad_state[16] = 9;
        assert_eq!(decode_value("app-1".into(), &bad_state), None);
    }

    #[test]
    fn replay_keeps_the_last_state_per_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = meta();
        let mut batches = Vec::new();
        let mut offset = 0u64;
        for state in [
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::CompleteCommit,
        ] {
            m.state = state;
            let mut b = record_batch(&m, 5);
            batch::set_base_offset(&mut b, Offset(offset));
            offset += 1;
            batches.extend_from_slice(&b);
        }
        std::fs::write(
            crate::log::segment::log_path(dir.path(), Offset(0)),
            &batches,
        )
        .unwrap();
        let mut txns = HashMap::new();
        assert_eq!(replay_partition(dir.path(), &mut txns).unwrap(), 3);
        assert_eq!(txns["app-1"].state, TxnState::CompleteCommit);
        assert_eq!(txns["app-1"], m);
    }

    #[test]
    fn timeouts_count_from_the_transaction_start() {
        let m = meta();
        assert!(!m.timed_out(900 + 60_000));
        assert!(m.timed_out(900 + 60_001));
        let idle = TxnMeta {
            state: TxnState::Empty,
            ..m
        };
        assert!(!idle.timed_out(i64::MAX));
    }
}
