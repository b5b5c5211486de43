//! The transaction coordinator's state, independent of where it runs: one
//! [`TxnMeta`] per transactional id, kept in `__transaction_state` in Kafka's
//! own record format so that a restarted or newly elected coordinator rebuilds
//! it from the (replicated) log, as Kafka's `TransactionStateManager` does.
//!
//! Key (version 0): `i16 0 | string transactional_id`.
//! Value version 1 (written; Kafka's `TransactionLogValue` v1, flexible):
//! `i16 1 | i64 producer_id | i16 producer_epoch | i32 transaction_timeout_ms |
//! i8 state | compact array topics (each: compact string topic, compact
//! array i32 partitions, tagged fields) | i64 last_update_ms | i64 start_ms |
//! tagged fields` (0: previous producer id, 1: next producer id, 2: client
//! transaction version). Version 0 (read too): the same fields without the
//! tagged ones, with `i32` array counts and `i16`-length strings. A null value
//! removes the id.
//!
//! The state machine (Kafka's `TransactionState`):
//! `Empty → Ongoing` (AddPartitionsToTxn / AddOffsetsToTxn, or under
//! transaction version 2 a partition leader adding the partition),
//! `Ongoing → PrepareCommit | PrepareAbort` (EndTxn, a timeout, a new
//! instance's InitProducerId), `Prepare* → Complete*` once every partition has
//! its marker, `Complete* → Ongoing | Empty` (the next transaction, or a new
//! InitProducerId). Version 2 bumps the epoch with every EndTxn (a new
//! producer id once it is exhausted). A `Prepare*` state found on load means
//! markers may be missing: the coordinator writes them all again (a marker is
//! idempotent for the reader: a second one ends nothing). Every transition is
//! a method of [`TxnMeta`] that decides and returns the next state; the
//! caller (`shard::txns`) stores it before it takes effect.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::coord::group::offsets_partition_of;
use crate::coord::group_log::Reader;
use crate::error::EngineError;
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

/// The highest `transaction.version` Brook serves: 2 bumps the producer
/// epoch at every commit or abort (KIP-890 part 2).
pub const TRANSACTION_VERSION: i16 = 2;

/// Kafka's `isEpochExhausted`: the coordinator keeps the last epoch for
/// itself so that it can always fence.
pub const EPOCH_EXHAUSTED: u16 = i16::MAX as u16 - 1;

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
    /// The producer id in use before an epoch overflow gave a new one
    /// (transaction version 2), so that a retried EndTxn is recognised; -1.
    pub prev_producer_id: i64,
    /// The producer id the prepared transaction moves to when it completes
    /// (its epoch overflowed, transaction version 2); -1.
    pub next_producer_id: i64,
    /// The transaction version the client speaks: 2 bumps the epoch at every
    /// end, 0 and 1 do not.
    pub client_version: i16,
}

/// What an EndTxn does, decided by [`TxnMeta::end`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndStep {
    /// Already done (a retry): answer with this producer id and epoch.
    Done { producer_id: u64, epoch: u16 },
    /// Store this prepared state, answer, then write its markers.
    Prepare(TxnMeta),
}

/// What an InitProducerId does, decided by [`TxnMeta::init`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitStep {
    /// The previous instance's transaction must be aborted first: store this
    /// (PrepareAbort at a bumped epoch), write its markers, and answer
    /// CONCURRENT_TRANSACTIONS meanwhile.
    FenceFirst(TxnMeta),
    /// Store this and answer with its producer id and epoch.
    Ready(TxnMeta),
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
            prev_producer_id: -1,
            next_producer_id: -1,
            client_version: 0,
        }
    }

    /// Whether `now_ms` is past the open transaction's timeout.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.start_ms >= 0
            && now_ms.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }

    fn bumps_epoch(&self) -> bool {
        self.client_version >= 2
    }

    /// A client at `epoch` whose EndTxn was done (transaction version 2: the
    /// end bumped the epoch by one).
    fn ended_from(&self, epoch: i16) -> bool {
        self.bumps_epoch() && i32::from(self.epoch) == i32::from(epoch) + 1
    }

    /// A client whose EndTxn (or a fence) at the exhausted epoch moved the
    /// id to a new producer id (transaction version 2).
    fn overflowed_from(&self, producer_id: i64, epoch: i16) -> bool {
        self.bumps_epoch()
            && self.prev_producer_id == producer_id
            && producer_id >= 0
            && epoch >= EPOCH_EXHAUSTED as i16
            && self.epoch == 0
    }

    fn fenced(&self, epoch: i16) -> EngineError {
        EngineError::ProducerFenced {
            current: self.epoch,
            given: epoch.max(0) as u16,
        }
    }

    /// The producer id and epoch a request names must be the current ones.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), EngineError> {
        if producer_id != self.producer_id as i64 {
            return Err(EngineError::InvalidProducerIdMapping { given: producer_id });
        }
        if epoch != self.epoch as i16 {
            return Err(self.fenced(epoch));
        }
        Ok(())
    }

    /// InitProducerId: the next epoch for a new instance (a new producer id
    /// when the epoch is exhausted: `fresh_id`, asked for only then, see
    /// [`Self::init_needs_id`]). `expected` is KIP-360's (producer id, epoch)
    /// of a producer re-initialising itself, -1 when new.
    pub fn init(
        &self,
        expected: (i64, i16),
        timeout_ms: i32,
        fresh_id: Option<u64>,
    ) -> Result<InitStep, EngineError> {
        let (pid, epoch) = expected;
        if pid >= 0
            && (pid as u64 != self.producer_id || epoch != self.epoch as i16)
            && !self.overflowed_from(pid, epoch)
        {
            return Err(self.fenced(epoch));
        }
        match self.state {
            TxnState::Ongoing => return Ok(InitStep::FenceFirst(self.fence(fresh_id)?)),
            st if st.is_prepared() => return Err(EngineError::ConcurrentTransactions),
            _ => {}
        }
        let mut m = self.clone();
        if self.init_needs_id() {
            m.prev_producer_id = m.producer_id as i64;
            m.producer_id = fresh_id.ok_or(EngineError::ConcurrentTransactions)?;
            m.epoch = 0;
        } else {
            m.epoch += 1;
        }
        m.state = TxnState::Empty;
        m.partitions.clear();
        m.start_ms = -1;
        m.next_producer_id = -1;
        m.timeout_ms = timeout_ms;
        Ok(InitStep::Ready(m))
    }

    /// Whether [`Self::init`] needs a new producer id (also to fence an open
    /// transaction first).
    pub fn init_needs_id(&self) -> bool {
        self.epoch >= EPOCH_EXHAUSTED
    }

    /// Whether [`Self::end`] needs a new producer id.
    pub fn end_needs_id(&self, client_version: i16) -> bool {
        client_version >= 2 && self.epoch >= EPOCH_EXHAUSTED
    }

    /// Aborts the open transaction at a bumped epoch, fencing the producer
    /// that opened it (a new instance or a timeout). At an exhausted epoch
    /// the abort uses the last epoch, which no client ever holds, and the id
    /// moves to `fresh_id` when it completes (see [`Self::fence_needs_id`]).
    pub fn fence(&self, fresh_id: Option<u64>) -> Result<TxnMeta, EngineError> {
        let mut m = self.clone();
        m.next_producer_id = -1;
        if self.fence_needs_id() {
            m.next_producer_id = fresh_id.ok_or(EngineError::ConcurrentTransactions)? as i64;
        }
        m.epoch = (m.epoch + 1).min(i16::MAX as u16);
        m.state = TxnState::PrepareAbort;
        Ok(m)
    }

    /// Whether [`Self::fence`] needs a new producer id.
    pub fn fence_needs_id(&self) -> bool {
        self.epoch >= EPOCH_EXHAUSTED
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn, or a partition leader adding a
    /// partition for a transaction version 2 producer: `tps` join the
    /// transaction, which begins with the first. `None`: nothing changes.
    pub fn add(
        &self,
        producer_id: i64,
        epoch: i16,
        tps: &[TopicPartition],
        client_version: i16,
        now_ms: i64,
    ) -> Result<Option<TxnMeta>, EngineError> {
        self.check_producer(producer_id, epoch)?;
        let mut m = self.clone();
        match self.state {
            TxnState::Ongoing if tps.iter().all(|tp| self.partitions.contains(tp)) => {
                return Ok(None);
            }
            TxnState::Ongoing => {}
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                m.state = TxnState::Ongoing;
                m.partitions.clear();
                m.start_ms = now_ms;
                m.client_version = client_version;
            }
            _ => return Err(EngineError::ConcurrentTransactions),
        }
        m.partitions.extend(tps.iter().cloned());
        Ok(Some(m))
    }

    /// A partition leader's check (KIP-890 part 1) that a transactional
    /// batch belongs to the producer's open transaction.
    pub fn verify(
        &self,
        producer_id: i64,
        epoch: i16,
        tp: &TopicPartition,
    ) -> Result<(), EngineError> {
        self.check_producer(producer_id, epoch)?;
        match self.state {
            TxnState::Ongoing if self.partitions.contains(tp) => Ok(()),
            st if st.is_prepared() => Err(EngineError::ConcurrentTransactions),
            st => Err(EngineError::InvalidTxnState(format!(
                "{tp} is not part of the transaction ({})",
                st.kafka_name()
            ))),
        }
    }

    /// EndTxn: commit or abort. Transaction version 2 bumps the epoch (to a
    /// new producer id `fresh_id` when exhausted, see [`Self::end_needs_id`]),
    /// and recognises a retry by the epoch it was sent with.
    pub fn end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        client_version: i16,
        fresh_id: Option<u64>,
    ) -> Result<EndStep, EngineError> {
        use TxnState::*;
        let overflow_retry = self.overflowed_from(producer_id, epoch);
        let retry = self.ended_from(epoch) || overflow_retry;
        if producer_id != self.producer_id as i64 && !overflow_retry {
            return Err(EngineError::InvalidProducerIdMapping { given: producer_id });
        }
        let current = epoch == self.epoch as i16;
        let valid = match self.state {
            Ongoing | Empty | Dead | PrepareEpochFence => current,
            PrepareCommit | PrepareAbort if self.bumps_epoch() => retry,
            CompleteCommit | CompleteAbort if self.bumps_epoch() => retry || current,
            _ => current,
        };
        if !valid {
            return Err(self.fenced(epoch));
        }
        let wrong = |st: TxnState| {
            EngineError::InvalidTxnState(format!(
                "cannot {} a transaction in state {}",
                if commit { "commit" } else { "abort" },
                st.kafka_name()
            ))
        };
        let done = EndStep::Done {
            producer_id: self.producer_id,
            epoch: self.epoch,
        };
        let v2 = client_version >= 2;
        match (self.state, commit) {
            (Ongoing, _) => {}
            // A retry of an EndTxn that was done.
            (CompleteCommit, true) | (CompleteAbort, false) if retry || !self.bumps_epoch() => {
                return Ok(done);
            }
            (PrepareCommit, true) | (PrepareAbort, false) => {
                return Err(EngineError::ConcurrentTransactions);
            }
            // A version 2 client cannot know whether its first send reached
            // a partition: aborting an empty transaction is allowed.
            (Empty | CompleteCommit | CompleteAbort, false) if v2 => {}
            (st, _) => return Err(wrong(st)),
        }
        let mut m = self.clone();
        m.client_version = client_version;
        if v2 {
            if self.end_needs_id(client_version) {
                m.next_producer_id = fresh_id.ok_or(EngineError::ConcurrentTransactions)? as i64;
            }
            // At most EPOCH_EXHAUSTED + 1: the exhausted epoch moves on to a
            // new producer id above.
            m.epoch = (m.epoch + 1).min(i16::MAX as u16);
        }
        if m.state != Ongoing {
            m.partitions.clear();
        }
        m.state = if commit { PrepareCommit } else { PrepareAbort };
        Ok(EndStep::Prepare(m))
    }

    /// The state once every marker of a prepared transaction is written.
    pub fn complete(&self) -> TxnMeta {
        let mut m = self.clone();
        m.state = if self.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        m.partitions.clear();
        m.start_ms = -1;
        if m.next_producer_id >= 0 {
            m.prev_producer_id = m.producer_id as i64;
            m.producer_id = m.next_producer_id as u64;
            m.epoch = 0;
            m.next_producer_id = -1;
        }
        m
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_compact_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64 + 1);
    out.extend_from_slice(s.as_bytes());
}

pub fn key(transactional_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + transactional_id.len());
    k.extend_from_slice(&0i16.to_be_bytes());
    put_str(&mut k, transactional_id);
    k
}

/// The value in version 1 (Kafka's `TransactionLogValue` v1, flexible, as
/// Kafka writes it once `transaction.version` ≥ 1): the version 2 fields are
/// tagged fields 0–2.
pub fn value(m: &TxnMeta) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&1i16.to_be_bytes());
    v.extend_from_slice(&(m.producer_id as i64).to_be_bytes());
    v.extend_from_slice(&(m.epoch as i16).to_be_bytes());
    v.extend_from_slice(&m.timeout_ms.to_be_bytes());
    v.push(m.state.code() as u8);
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in &m.partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    put_uvarint(&mut v, by_topic.len() as u64 + 1);
    for (topic, parts) in by_topic {
        put_compact_str(&mut v, topic);
        put_uvarint(&mut v, parts.len() as u64 + 1);
        for p in parts {
            v.extend_from_slice(&(p as i32).to_be_bytes());
        }
        put_uvarint(&mut v, 0);
    }
    v.extend_from_slice(&m.last_update_ms.to_be_bytes());
    v.extend_from_slice(&m.start_ms.to_be_bytes());
    let mut tags: Vec<(u64, Vec<u8>)> = Vec::new();
    if m.prev_producer_id != -1 {
        tags.push((0, m.prev_producer_id.to_be_bytes().to_vec()));
    }
    if m.next_producer_id != -1 {
        tags.push((1, m.next_producer_id.to_be_bytes().to_vec()));
    }
    if m.client_version != 0 {
        tags.push((2, m.client_version.to_be_bytes().to_vec()));
    }
    put_uvarint(&mut v, tags.len() as u64);
    for (tag, data) in tags {
        put_uvarint(&mut v, tag);
        put_uvarint(&mut v, data.len() as u64);
        v.extend_from_slice(&data);
    }
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

impl Reader<'_> {
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A compact array or string length (`None` for null or past the end).
    fn compact_len(&mut self) -> Option<usize> {
        usize::try_from(self.uvarint()?.checked_sub(1)?).ok()
    }

    fn compact_string(&mut self) -> Option<String> {
        let len = self.compact_len()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// Skips a struct's tagged fields, handing each (tag, bytes) to `f`.
    fn tagged(&mut self, mut f: impl FnMut(u64, &[u8]) -> Option<()>) -> Option<()> {
        for _ in 0..self.uvarint()? {
            let tag = self.uvarint()?;
            let len = usize::try_from(self.uvarint()?).ok()?;
            f(tag, self.take(len)?)?;
        }
        Some(())
    }
}

/// Reads a value of version 0 or 1; `None` for anything else or damage.
pub fn decode_value(transactional_id: String, v: &[u8]) -> Option<TxnMeta> {
    let mut r = Reader(v, 0);
    let version = r.i16()?;
    if !(0..=1).contains(&version) {
        return None;
    }
    let flexible = version >= 1;
    let producer_id = u64::try_from(r.i64()?).ok()?;
    let epoch = u16::try_from(r.i16()?).ok()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_code(r.take(1)?[0] as i8)?;
    let mut partitions = BTreeSet::new();
    // Counts come from the bytes: each element takes bytes, so the loop ends
    // with the input whatever the count says.
    let topics = if flexible {
        r.compact_len()?
    } else {
        usize::try_from(r.i32()?.max(0)).ok()?
    };
    for _ in 0..topics {
        let topic = if flexible {
            r.compact_string()?
        } else {
            r.string()?
        };
        let count = if flexible {
            r.compact_len()?
        } else {
            usize::try_from(r.i32()?.max(0)).ok()?
        };
        for _ in 0..count {
            let partition = u32::try_from(r.i32()?).ok()?;
            partitions.insert(TopicPartition {
                topic: topic.clone(),
                partition,
            });
        }
        if flexible {
            r.tagged(|_, _| Some(()))?;
        }
    }
    let mut m = TxnMeta {
        transactional_id,
        producer_id,
        epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms: r.i64()?,
        start_ms: r.i64()?,
        prev_producer_id: -1,
        next_producer_id: -1,
        client_version: 0,
    };
    if flexible {
        r.tagged(|tag, data| {
            match tag {
                0 => m.prev_producer_id = i64::from_be_bytes(data.try_into().ok()?),
                1 => m.next_producer_id = i64::from_be_bytes(data.try_into().ok()?),
                2 => m.client_version = i16::from_be_bytes(data.try_into().ok()?),
                _ => {}
            }
            Some(())
        })?;
    }
    Some(m)
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
        let states = [
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::CompleteCommit,
        ];
        for (offset, state) in (0u64..).zip(states) {
            m.state = state;
            let mut b = record_batch(&m, 5);
            batch::set_base_offset(&mut b, Offset(offset));
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

    /// Version 0, as Brook wrote it before transaction version 2 (and as
    /// Kafka 3.x does): non-flexible, no tagged fields.
    fn value_v0(m: &TxnMeta) -> Vec<u8> {
        let mut v = Vec::new();
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

    #[test]
    fn version_0_values_are_still_read_and_version_2_fields_round_trip() {
        let m = meta();
        assert_eq!(decode_value("app-1".into(), &value_v0(&m)), Some(m.clone()));
        let tv2 = TxnMeta {
            prev_producer_id: 17,
            next_producer_id: 4712,
            client_version: 2,
            ..m
        };
        let v = value(&tv2);
        assert_eq!(decode_value("app-1".into(), &v), Some(tv2.clone()));
        for cut in 0..v.len() {
            assert_eq!(
                decode_value("app-1".into(), &v[..cut]),
                None,
                "cut at {cut}"
            );
        }
    }

    fn ongoing(epoch: u16, client_version: i16) -> TxnMeta {
        let mut m = TxnMeta::new("app-1".into(), 4711, 60_000, 0);
        m.epoch = epoch;
        m.add(4711, epoch as i16, &[tp("out", 0)], client_version, 5)
            .unwrap()
            .unwrap()
    }

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    #[test]
    fn version_2_bumps_the_epoch_at_every_end_and_knows_a_retry() {
        let m = ongoing(5, 2);
        let EndStep::Prepare(prepared) = m.end(4711, 5, true, 2, None).unwrap() else {
            panic!("not prepared")
        };
        // Markers go out at the bumped epoch; the client continues at it.
        assert_eq!(
            (prepared.state, prepared.epoch),
            (TxnState::PrepareCommit, 6)
        );
        let done = prepared.complete();
        assert_eq!(
            (done.state, done.producer_id, done.epoch),
            (TxnState::CompleteCommit, 4711, 6)
        );
        // A retry (the old epoch) while markers are written, and after.
        assert_eq!(
            prepared.end(4711, 5, true, 2, None),
            Err(EngineError::ConcurrentTransactions)
        );
        assert_eq!(
            done.end(4711, 5, true, 2, None),
            Ok(EndStep::Done {
                producer_id: 4711,
                epoch: 6
            })
        );
        // An older epoch than that is a zombie.
        assert!(matches!(
            done.end(4711, 4, true, 2, None),
            Err(EngineError::ProducerFenced { .. })
        ));
        // The next transaction runs at the new epoch; the old one is refused.
        assert!(done.add(4711, 5, &[tp("out", 1)], 2, 9).is_err());
        assert!(done.add(4711, 6, &[tp("out", 1)], 2, 9).unwrap().is_some());
        // Version 1 keeps the epoch.
        let EndStep::Prepare(v1) = ongoing(5, 1).end(4711, 5, false, 1, None).unwrap() else {
            panic!("not prepared")
        };
        assert_eq!((v1.epoch, v1.complete().epoch), (5, 5));
    }

    #[test]
    fn version_2_moves_to_a_new_producer_id_when_the_epoch_runs_out() {
        let m = ongoing(EPOCH_EXHAUSTED, 2);
        assert!(m.end_needs_id(2));
        assert_eq!(
            m.end(4711, EPOCH_EXHAUSTED as i16, true, 2, None),
            Err(EngineError::ConcurrentTransactions)
        );
        let EndStep::Prepare(prepared) = m
            .end(4711, EPOCH_EXHAUSTED as i16, true, 2, Some(9000))
            .unwrap()
        else {
            panic!("not prepared")
        };
        // The markers use the old id at the last epoch, which nobody else
        // can hold; the client continues with the new id at epoch 0.
        assert_eq!(
            (prepared.producer_id, prepared.epoch),
            (4711, i16::MAX as u16)
        );
        let done = prepared.complete();
        assert_eq!(
            (done.producer_id, done.epoch, done.prev_producer_id),
            (9000, 0, 4711)
        );
        assert_eq!(
            done.end(4711, EPOCH_EXHAUSTED as i16, true, 2, None),
            Ok(EndStep::Done {
                producer_id: 9000,
                epoch: 0
            })
        );
        assert!(done.add(9000, 0, &[tp("out", 0)], 2, 9).unwrap().is_some());
    }

    #[test]
    fn version_2_may_abort_a_transaction_no_partition_joined() {
        let mut m = TxnMeta::new("app-1".into(), 4711, 60_000, 0);
        m.client_version = 2;
        let EndStep::Prepare(p) = m.end(4711, 0, false, 2, None).unwrap() else {
            panic!("not prepared")
        };
        assert!(p.partitions.is_empty());
        assert_eq!(p.complete().epoch, 1);
        assert!(matches!(
            m.end(4711, 0, true, 2, None),
            Err(EngineError::InvalidTxnState(_))
        ));
        // Version 1 refuses both, as Kafka.
        assert!(matches!(
            m.end(4711, 0, false, 1, None),
            Err(EngineError::InvalidTxnState(_))
        ));
    }

    #[test]
    fn a_new_instance_fences_the_open_transaction_first() {
        let m = ongoing(3, 2);
        let Ok(InitStep::FenceFirst(f)) = m.init((-1, -1), 30_000, None) else {
            panic!("no fence")
        };
        assert_eq!((f.state, f.epoch), (TxnState::PrepareAbort, 4));
        let Ok(InitStep::Ready(r)) = f.complete().init((-1, -1), 30_000, None) else {
            panic!("not ready")
        };
        assert_eq!(
            (r.state, r.epoch, r.timeout_ms),
            (TxnState::Empty, 5, 30_000)
        );
        // The fenced instance's end is refused.
        assert!(matches!(
            r.end(4711, 3, true, 2, None),
            Err(EngineError::ProducerFenced { .. })
        ));
    }

    #[test]
    fn a_fence_at_the_exhausted_epoch_moves_to_a_new_producer_id() {
        // Found by engine/tests/txn_sim.rs: a timeout at the exhausted epoch
        // bumped the client's epoch to the last one, where nothing could
        // fence it any more.
        let m = ongoing(EPOCH_EXHAUSTED, 2);
        assert!(m.fence_needs_id());
        assert_eq!(m.fence(None), Err(EngineError::ConcurrentTransactions));
        let f = m.fence(Some(9000)).unwrap();
        assert_eq!(
            (f.state, f.producer_id, f.epoch),
            (TxnState::PrepareAbort, 4711, i16::MAX as u16)
        );
        let done = f.complete();
        assert_eq!(
            (done.producer_id, done.epoch, done.prev_producer_id),
            (9000, 0, 4711)
        );
        // The fenced client's own abort is answered with the new id; its
        // commit and its batches' old id are refused.
        assert_eq!(
            done.end(4711, EPOCH_EXHAUSTED as i16, false, 2, None),
            Ok(EndStep::Done {
                producer_id: 9000,
                epoch: 0
            })
        );
        assert!(
            done.end(4711, EPOCH_EXHAUSTED as i16, true, 2, None)
                .is_err()
        );
        assert!(
            done.add(4711, EPOCH_EXHAUSTED as i16, &[tp("out", 0)], 2, 9)
                .is_err()
        );
    }

    #[test]
    fn verification_accepts_only_partitions_of_the_open_transaction() {
        let m = ongoing(2, 1);
        assert_eq!(m.verify(4711, 2, &tp("out", 0)), Ok(()));
        assert!(matches!(
            m.verify(4711, 2, &tp("out", 1)),
            Err(EngineError::InvalidTxnState(_))
        ));
        assert!(matches!(
            m.verify(4711, 1, &tp("out", 0)),
            Err(EngineError::ProducerFenced { .. })
        ));
        assert!(matches!(
            m.verify(99, 2, &tp("out", 0)),
            Err(EngineError::InvalidProducerIdMapping { .. })
        ));
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
