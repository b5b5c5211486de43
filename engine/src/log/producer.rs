//! Idempotent-producer state of one partition: which batches each producer id
//! has already written, so that a retried batch is acknowledged with its
//! original offset instead of being appended twice, and a lost batch is
//! reported instead of silently skipped.
//!
//! Each producer id maps to its current epoch and the sequence ranges of its
//! last [`NUM_BATCHES_TO_RETAIN`] = 5 batches: Kafka clients keep at most 5
//! requests in flight per connection (`max.in.flight.requests.per.connection`
//! must be <= 5 with idempotence), so any retry is one of the last 5 batches.
//!
//! # Rules for a batch from a client (Kafka 4.x `ProducerAppendInfo`)
//!
//! Sequence numbers are per producer and partition, count records, and wrap
//! from i32::MAX to 0. For a batch with epoch `e` and base sequence `s`,
//! checked in this order:
//!
//! 1. **Duplicate**: the producer is known, `e` is its current epoch and the
//!    batch's (first, last) sequence equals that of a retained batch: answer
//!    `Duplicate` with the base offset the original got; nothing is written.
//! 2. **Fenced**: `e` is older than the current epoch: `InvalidProducerEpoch`.
//! 3. **Bumped epoch**: `e` is newer than the current epoch: `s` must be 0,
//!    else `OutOfOrderSequence { expected: 0 }`.
//! 4. **Same epoch**: `s` must be the last retained sequence + 1 (or 0 when no
//!    batch of this epoch is retained, e.g. after a transaction marker), else
//!    `OutOfOrderSequence`. This includes a retry older than the last 5 batches.
//! 5. **Unknown producer id**: any `s` is accepted. Since Kafka 2.5 (KIP-360)
//!    the broker no longer answers UNKNOWN_PRODUCER_ID: a producer's state can
//!    vanish legitimately (retention or DeleteRecords removed all its batches),
//!    and the client, not the broker, decides whether that was a loss.
//!    (Kafka 4 makes one exception for transaction version 2, which Brook
//!    does not make: a transactional producer with no state must start at 0.)
//!
//! # Source of truth and crashes
//!
//! The table is derived from the log: every producer batch's header carries
//! its producer id, epoch and base sequence. Recovery replays the batches it
//! scans through [`ProducerStateTable::rebuild_from`]. Kafka bounds that replay
//! with periodic snapshots; Brook replays the segments it scans, so a producer
//! whose last batches lie only in older segments comes back as unknown (rule 5).
//! Expiring idle producer ids (`producer.id.expiration.ms`) is the owner's job.

use std::collections::{HashMap, VecDeque};

use crate::log::batch::{BatchInfo, Marker, NO_SEQUENCE, ProducerBatchInfo};
use crate::types::Offset;

/// Batches remembered per producer for duplicate detection (Kafka's
/// `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`).
pub const NUM_BATCHES_TO_RETAIN: usize = 5;

/// Sequences live in `0..=i32::MAX`.
const SEQUENCE_MODULUS: u64 = 1 << 31;
const _: () = assert!(SEQUENCE_MODULUS == i32::MAX as u64 + 1);

/// `seq + delta` in sequence space: i32::MAX + 1 wraps to 0, as Kafka's
/// `DefaultRecordBatch.incrementSequence`.
pub fn increment_sequence(seq: u32, delta: u32) -> u32 {
    assert!(
        u64::from(seq) < SEQUENCE_MODULUS && u64::from(delta) < SEQUENCE_MODULUS,
        "sequence {seq} + {delta} outside 0..=i32::MAX"
    );
    ((u64::from(seq) + u64::from(delta)) % SEQUENCE_MODULUS) as u32
}

/// Why a producer's batch was refused.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum ProducerError {
    #[error("producer epoch {received} is older than the current epoch {current}")]
    InvalidProducerEpoch { current: u16, received: u16 },
    #[error("out of order sequence: received {received}, expected {expected}")]
    OutOfOrderSequence { expected: u32, received: u32 },
    #[error("marker from transaction coordinator epoch {received}, older than {current}")]
    CoordinatorFenced { current: i32, received: i32 },
}

/// What to do with a batch that passed the checks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SequenceVerdict {
    /// Append it.
    Append,
    /// Already in the log at `base_offset`: acknowledge that, append nothing.
    Duplicate { base_offset: Offset },
}

/// Sequence and offset range of one retained batch.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: u32,
    pub last_seq: u32,
    pub base_offset: Offset,
    pub last_offset: Offset,
}

/// One producer id's current epoch and its last batches of that epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    epoch: u16,
    /// Oldest first; at most [`NUM_BATCHES_TO_RETAIN`], all of `epoch`.
    batches: VecDeque<BatchMetadata>,
    /// The transaction coordinator epoch of the last marker (-1: none):
    /// a marker from an older coordinator is refused.
    coordinator_epoch: i32,
}

impl ProducerEntry {
    fn new(epoch: u16) -> Self {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(NUM_BATCHES_TO_RETAIN),
            coordinator_epoch: -1,
        }
    }

    pub fn epoch(&self) -> u16 {
        self.epoch
    }

    /// The coordinator epoch of the last marker stored (-1: none).
    pub fn coordinator_epoch(&self) -> i32 {
        self.coordinator_epoch
    }

    /// Retained batches of the current epoch, oldest first.
    pub fn batches(&self) -> &VecDeque<BatchMetadata> {
        &self.batches
    }

    fn last_seq(&self) -> Option<u32> {
        self.batches.back().map(|b| b.last_seq)
    }

    fn find_duplicate(&self, first_seq: u32, last_seq: u32) -> Option<&BatchMetadata> {
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
    }

    /// A new epoch starts with no batches.
    fn set_epoch(&mut self, epoch: u16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    fn push(&mut self, batch: BatchMetadata) {
        if self.batches.len() == NUM_BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }
}

/// A transaction that ended with an abort marker: read_committed consumers
/// skip `producer_id`'s batches from `first_offset` up to the marker at
/// `last_offset` (Kafka's `AbortedTxn`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: u64,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

/// A transaction a marker just ended in this partition.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: u64,
    pub first_offset: Offset,
    pub marker_offset: Offset,
    pub commit: bool,
}

/// Producer state of one partition; owned by the partition's shard.
///
/// Besides the sequences it tracks transactions, like Kafka's
/// `ProducerStateManager`: the first offset of each producer's open
/// transaction here (the first unstable offset is their minimum) and the
/// aborted transactions, which read_committed fetches report.
#[derive(Clone, Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<u64, ProducerEntry>,
    /// Producer id → offset of its open transaction's first batch here.
    ongoing: HashMap<u64, Offset>,
    /// Ascending by `last_offset`.
    aborted: Vec<AbortedTxn>,
}

impl ProducerStateTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the rules in the module doc to a client batch of
    /// `record_count >= 1` records. Check and [`record`](Self::record) one
    /// batch before checking the next batch of the same producer.
    pub fn check(
        &self,
        p: &ProducerBatchInfo,
        record_count: u32,
    ) -> Result<SequenceVerdict, ProducerError> {
        assert!(
            record_count >= 1,
            "producer {} sent an empty batch",
            p.producer_id
        );
        let Some(entry) = self.producers.get(&p.producer_id) else {
            return Ok(SequenceVerdict::Append);
        };
        let last_seq = increment_sequence(p.base_sequence, record_count - 1);
        if p.epoch == entry.epoch
            && let Some(dup) = entry.find_duplicate(p.base_sequence, last_seq)
        {
            let base_offset = dup.base_offset;
            return Ok(SequenceVerdict::Duplicate { base_offset });
        }
        check_epoch_and_sequence(entry, p)
    }

    /// Checks every batch of one Produce request before any is appended, each as
    /// if the ones before it had been, because a request's batches are appended
    /// all or none (as Kafka's `analyzeAndValidateProducerState` does). A batch
    /// that duplicates one already in the log makes the whole request a
    /// duplicate: it is answered with the original's offset, nothing is appended.
    pub fn check_all<'a>(
        &self,
        batches: impl IntoIterator<Item = (&'a ProducerBatchInfo, u32)>,
    ) -> Result<SequenceVerdict, ProducerError> {
        // The request's own batches, staged on copies of the entries they touch.
        let mut staged = ProducerStateTable::new();
        for (p, record_count) in batches {
            let committed = self.producers.get(&p.producer_id);
            match staged.producers.get(&p.producer_id) {
                None => {
                    if let dup @ SequenceVerdict::Duplicate { .. } = self.check(p, record_count)? {
                        return Ok(dup);
                    }
                    if let Some(entry) = committed {
                        staged.producers.insert(p.producer_id, entry.clone());
                    }
                }
                Some(entry) => {
                    let last_seq = increment_sequence(p.base_sequence, record_count - 1);
                    if let Some(dup) = committed
                        .filter(|c| c.epoch == p.epoch)
                        .and_then(|c| c.find_duplicate(p.base_sequence, last_seq))
                    {
                        let base_offset = dup.base_offset;
                        return Ok(SequenceVerdict::Duplicate { base_offset });
                    }
                    check_epoch_and_sequence(entry, p)?;
                }
            }
            // Offsets are not assigned yet and no check reads them.
            staged.apply(p, record_count - 1, Offset(0));
        }
        Ok(SequenceVerdict::Append)
    }

    /// Remembers a batch appended at `base_offset` after [`check`](Self::check)
    /// said `Append`.
    pub fn record(&mut self, p: &ProducerBatchInfo, record_count: u32, base_offset: Offset) {
        assert!(
            record_count >= 1,
            "producer {} wrote an empty batch",
            p.producer_id
        );
        if let Some(entry) = self.producers.get(&p.producer_id) {
            assert!(
                p.epoch >= entry.epoch,
                "producer {} appended with epoch {} after epoch {}",
                p.producer_id,
                p.epoch,
                entry.epoch
            );
        }
        self.apply(p, record_count - 1, base_offset);
    }

    /// Replays a batch read back from the log (recovery, replication). The
    /// log is the source of truth, so nothing is refused; an end-transaction
    /// marker (a control batch) moves the producer to its epoch.
    pub fn rebuild_from(&mut self, info: &BatchInfo, marker: Option<Marker>) {
        let Some(p) = info.producer else { return };
        if let Some(entry) = self.producers.get(&p.producer_id)
            && p.epoch < entry.epoch
        {
            tracing::warn!(
                producer_id = p.producer_id,
                epoch = p.epoch,
                current = entry.epoch,
                offset = %info.base_offset,
                "log holds an older producer epoch after a newer one"
            );
        }
        self.stored(info, marker);
    }

    /// Brings the table up to a batch just stored (by the leader, a follower
    /// or recovery): sequences of a client batch, the epoch of a marker or
    /// of a coordinator's batch, and the transaction it opens or ends.
    pub fn stored(&mut self, info: &BatchInfo, marker: Option<Marker>) -> Option<CompletedTxn> {
        let p = info.producer?;
        if info.is_control || p.base_sequence == NO_SEQUENCE {
            let entry = self.entry(p.producer_id, p.epoch);
            entry.set_epoch(p.epoch);
            if let Some(m) = marker {
                entry.coordinator_epoch = entry.coordinator_epoch.max(m.coordinator_epoch);
            }
        } else {
            self.apply(&p, info.last_offset_delta, info.base_offset);
        }
        if !info.is_transactional {
            return None;
        }
        if !info.is_control {
            self.ongoing
                .entry(p.producer_id)
                .or_insert(info.base_offset);
            return None;
        }
        let marker = marker?;
        let first_offset = self.ongoing.remove(&p.producer_id)?;
        if !marker.commit {
            self.aborted.push(AbortedTxn {
                producer_id: p.producer_id,
                first_offset,
                last_offset: info.base_offset,
            });
        }
        Some(CompletedTxn {
            producer_id: p.producer_id,
            first_offset,
            marker_offset: info.base_offset,
            commit: marker.commit,
        })
    }

    /// Whether a marker for `producer_id` at `epoch` from a coordinator at
    /// `coordinator_epoch` may be appended: not from an older producer epoch
    /// (a fenced transaction), nor from an older coordinator than the last
    /// marker's (one that lost its partition and does not know it yet), as
    /// Kafka's `ProducerAppendInfo.appendEndTxnMarker`.
    pub fn check_marker(
        &self,
        producer_id: u64,
        epoch: u16,
        coordinator_epoch: i32,
    ) -> Result<(), ProducerError> {
        let Some(e) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < e.epoch {
            let (current, received) = (e.epoch, epoch);
            return Err(ProducerError::InvalidProducerEpoch { current, received });
        }
        if coordinator_epoch < e.coordinator_epoch {
            let (current, received) = (e.coordinator_epoch, coordinator_epoch);
            return Err(ProducerError::CoordinatorFenced { current, received });
        }
        Ok(())
    }

    /// Coordinator epochs of the last markers, as [`Self::restore`] left
    /// them -1 (a checkpoint keeps them apart): (producer id, epoch).
    pub fn coordinator_epochs(&self) -> impl Iterator<Item = (u64, i32)> + '_ {
        (self.producers.iter())
            .filter(|(_, e)| e.coordinator_epoch >= 0)
            .map(|(id, e)| (*id, e.coordinator_epoch))
    }

    /// Restores what [`Self::coordinator_epochs`] listed.
    pub fn restore_coordinator_epochs(&mut self, epochs: impl IntoIterator<Item = (u64, i32)>) {
        for (id, epoch) in epochs {
            if let Some(e) = self.producers.get_mut(&id) {
                e.coordinator_epoch = epoch;
            }
        }
    }

    /// The first offset of the oldest transaction still open here.
    pub fn first_unstable(&self) -> Option<Offset> {
        self.ongoing.values().min().copied()
    }

    /// Whether `producer_id` has a transaction open here.
    pub fn in_transaction(&self, producer_id: u64) -> bool {
        self.ongoing.contains_key(&producer_id)
    }

    /// Open transactions: (producer id, first offset).
    pub fn ongoing(&self) -> impl Iterator<Item = (u64, Offset)> + '_ {
        self.ongoing.iter().map(|(p, o)| (*p, *o))
    }

    /// Every aborted transaction known, oldest marker first.
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Aborted transactions a fetch of `from..to` must report: those whose
    /// marker is at or after `from` and which began before `to`.
    pub fn aborted_between(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions wholly before `log_start` (retention).
    pub fn drop_aborted_before(&mut self, log_start: Offset) {
        let n = self.aborted.partition_point(|a| a.last_offset < log_start);
        self.aborted.drain(..n);
    }

    /// Puts back an open transaction and the aborted ones (a snapshot).
    pub fn restore_transactions(
        &mut self,
        ongoing: impl IntoIterator<Item = (u64, Offset)>,
        aborted: Vec<AbortedTxn>,
    ) {
        self.ongoing.extend(ongoing);
        self.aborted = aborted;
    }

    /// Every producer id with its state, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// Puts back a producer's state as [`iter`](Self::iter) showed it (a
    /// snapshot being loaded); at most the last [`NUM_BATCHES_TO_RETAIN`]
    /// batches are kept.
    pub fn restore(&mut self, producer_id: u64, epoch: u16, batches: &[BatchMetadata]) {
        let entry = self.entry(producer_id, epoch);
        entry.set_epoch(epoch);
        for b in batches {
            entry.push(*b);
        }
    }

    /// The state kept for `producer_id`, if any.
    pub fn get(&self, producer_id: u64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of producer ids tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    fn entry(&mut self, producer_id: u64, epoch: u16) -> &mut ProducerEntry {
        self.producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch))
    }

    /// `last_offset_delta` rather than a record count: after compaction a
    /// stored batch may hold fewer records than its offset (and sequence) span.
    fn apply(&mut self, p: &ProducerBatchInfo, last_offset_delta: u32, base_offset: Offset) {
        let entry = self.entry(p.producer_id, p.epoch);
        entry.set_epoch(p.epoch);
        entry.push(BatchMetadata {
            first_seq: p.base_sequence,
            last_seq: increment_sequence(p.base_sequence, last_offset_delta),
            base_offset,
            last_offset: base_offset.next(u64::from(last_offset_delta)),
        });
    }
}

/// Rules 2 to 4 of the module doc, for a known producer.
fn check_epoch_and_sequence(
    entry: &ProducerEntry,
    p: &ProducerBatchInfo,
) -> Result<SequenceVerdict, ProducerError> {
    if p.epoch < entry.epoch {
        let (current, received) = (entry.epoch, p.epoch);
        return Err(ProducerError::InvalidProducerEpoch { current, received });
    }
    let expected = match entry.last_seq() {
        Some(last) if p.epoch == entry.epoch => increment_sequence(last, 1),
        _ => 0,
    };
    if p.base_sequence != expected {
        let received = p.base_sequence;
        return Err(ProducerError::OutOfOrderSequence { expected, received });
    }
    Ok(SequenceVerdict::Append)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TimestampMs;

    const PID: u64 = 42;

    fn pb(epoch: u16, base_sequence: u32) -> ProducerBatchInfo {
        ProducerBatchInfo {
            producer_id: PID,
            epoch,
            base_sequence,
        }
    }

    /// Checks and records a batch of `count` records; returns its verdict.
    fn produce(
        t: &mut ProducerStateTable,
        p: ProducerBatchInfo,
        count: u32,
        at: u64,
    ) -> SequenceVerdict {
        let verdict = t.check(&p, count).unwrap();
        if verdict == SequenceVerdict::Append {
            t.record(&p, count, Offset(at));
        }
        verdict
    }

    fn out_of_order(expected: u32, received: u32) -> Result<SequenceVerdict, ProducerError> {
        Err(ProducerError::OutOfOrderSequence { expected, received })
    }

    #[test]
    fn a_marker_from_an_older_coordinator_is_refused() {
        let mut t = ProducerStateTable::new();
        assert_eq!(t.check_marker(PID, 0, 0), Ok(()), "unknown producer");
        t.restore(PID, 2, &[]);
        t.restore_coordinator_epochs([(PID, 5)]);
        assert_eq!(t.check_marker(PID, 2, 5), Ok(()));
        assert_eq!(t.check_marker(PID, 3, 7), Ok(()));
        assert_eq!(
            t.check_marker(PID, 2, 4),
            Err(ProducerError::CoordinatorFenced {
                current: 5,
                received: 4
            })
        );
        assert_eq!(
            t.check_marker(PID, 1, 9),
            Err(ProducerError::InvalidProducerEpoch {
                current: 2,
                received: 1
            })
        );
        assert_eq!(t.coordinator_epochs().collect::<Vec<_>>(), vec![(PID, 5)]);
    }

    #[test]
    fn unknown_producer_is_accepted_at_any_sequence() {
        let mut t = ProducerStateTable::new();
        assert_eq!(produce(&mut t, pb(0, 17), 3, 0), SequenceVerdict::Append);
        assert_eq!(t.check(&pb(0, 20), 1), Ok(SequenceVerdict::Append));
    }

    #[test]
    fn duplicates_of_the_last_five_batches_return_their_offsets() {
        let mut t = ProducerStateTable::new();
        for i in 0..7u32 {
            assert_eq!(
                produce(&mut t, pb(1, i * 2), 2, 100 + u64::from(i) * 10),
                SequenceVerdict::Append
            );
        }
        for i in 2..7u32 {
            let base_offset = Offset(100 + u64::from(i) * 10);
            assert_eq!(
                t.check(&pb(1, i * 2), 2),
                Ok(SequenceVerdict::Duplicate { base_offset })
            );
        }
        // Older than the retained five: a sequence below the expected one.
        assert_eq!(t.check(&pb(1, 2), 2), out_of_order(14, 2));
        // Same first sequence but a different length is not a duplicate.
        assert_eq!(t.check(&pb(1, 12), 1), out_of_order(14, 12));
        assert_eq!(t.get(PID).unwrap().batches().len(), NUM_BATCHES_TO_RETAIN);
    }

    #[test]
    fn gap_is_out_of_order() {
        let mut t = ProducerStateTable::new();
        produce(&mut t, pb(0, 0), 5, 0);
        assert_eq!(t.check(&pb(0, 6), 1), out_of_order(5, 6));
        assert_eq!(t.check(&pb(0, 5), 1), Ok(SequenceVerdict::Append));
    }

    #[test]
    fn new_epoch_restarts_at_zero_and_fences_the_old_one() {
        let mut t = ProducerStateTable::new();
        produce(&mut t, pb(3, 0), 5, 0);
        assert_eq!(t.check(&pb(4, 5), 1), out_of_order(0, 5));
        // A retry under the old epoch's numbers in the new epoch is no duplicate.
        assert_eq!(t.check(&pb(4, 0), 5), Ok(SequenceVerdict::Append));
        produce(&mut t, pb(4, 0), 1, 5);
        let fenced = ProducerError::InvalidProducerEpoch {
            current: 4,
            received: 3,
        };
        assert_eq!(t.check(&pb(3, 5), 1), Err(fenced.clone()));
        assert_eq!(t.check(&pb(3, 0), 5), Err(fenced));
        assert_eq!(t.get(PID).unwrap().batches().len(), 1);
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut t = ProducerStateTable::new();
        let max = i32::MAX as u32;
        produce(&mut t, pb(0, max - 1), 3, 0);
        assert_eq!(t.get(PID).unwrap().batches()[0].last_seq, 0);
        assert_eq!(t.check(&pb(0, 1), 1), Ok(SequenceVerdict::Append));
        assert_eq!(
            t.check(&pb(0, max - 1), 3),
            Ok(SequenceVerdict::Duplicate {
                base_offset: Offset(0)
            })
        );
    }

    fn stored(p: ProducerBatchInfo, base: u64, count: u32, is_control: bool) -> BatchInfo {
        BatchInfo {
            base_offset: Offset(base),
            len: 100,
            last_offset_delta: count - 1,
            record_count: count,
            first_timestamp: TimestampMs(0),
            max_timestamp: TimestampMs(0),
            producer: Some(p),
            is_transactional: is_control,
            is_control,
            compression: 0,
            leader_epoch: 0,
        }
    }

    #[test]
    fn rebuild_matches_live_recording() {
        let (mut live, mut rebuilt) = (ProducerStateTable::new(), ProducerStateTable::new());
        for i in 0..8u32 {
            produce(&mut live, pb(2, i * 3), 3, u64::from(i) * 3);
            rebuilt.rebuild_from(&stored(pb(2, i * 3), u64::from(i) * 3, 3, false), None);
        }
        assert_eq!(live.get(PID), rebuilt.get(PID));
        let mut no_producer = stored(pb(0, 0), 0, 1, false);
        no_producer.producer = None;
        rebuilt.rebuild_from(&no_producer, None);
        assert_eq!(rebuilt.len(), 1);
    }

    #[test]
    fn control_marker_moves_the_epoch_and_clears_batches() {
        let mut t = ProducerStateTable::new();
        t.rebuild_from(&stored(pb(1, 0), 0, 4, false), None);
        t.rebuild_from(&stored(pb(2, 0), 4, 1, true), None);
        let entry = t.get(PID).unwrap();
        assert_eq!((entry.epoch(), entry.batches().len()), (2, 0));
        assert_eq!(t.check(&pb(2, 4), 1), out_of_order(0, 4));
        assert_eq!(t.check(&pb(2, 0), 1), Ok(SequenceVerdict::Append));
    }

    fn txn_batch(pid: u64, base: u64, count: u32) -> BatchInfo {
        let mut b = stored(
            ProducerBatchInfo {
                producer_id: pid,
                epoch: 0,
                base_sequence: 0,
            },
            base,
            count,
            false,
        );
        b.is_transactional = true;
        b
    }

    fn marker(pid: u64, at: u64) -> BatchInfo {
        stored(
            ProducerBatchInfo {
                producer_id: pid,
                epoch: 0,
                base_sequence: NO_SEQUENCE,
            },
            at,
            1,
            true,
        )
    }

    const COMMIT: Marker = Marker {
        commit: true,
        coordinator_epoch: 0,
    };
    const ABORT: Marker = Marker {
        commit: false,
        coordinator_epoch: 0,
    };

    #[test]
    fn transactions_open_at_their_first_batch_and_end_at_their_marker() {
        let mut t = ProducerStateTable::new();
        assert_eq!(t.stored(&txn_batch(7, 10, 2), None), None);
        assert_eq!(t.stored(&txn_batch(8, 12, 1), None), None);
        // A second batch of an open transaction does not move its start.
        assert_eq!(t.stored(&txn_batch(7, 13, 1), None), None);
        assert_eq!(t.first_unstable(), Some(Offset(10)));
        assert!(t.in_transaction(7) && t.in_transaction(8));
        let done = t.stored(&marker(7, 14), Some(ABORT)).unwrap();
        assert_eq!(
            (done.first_offset, done.marker_offset, done.commit),
            (Offset(10), Offset(14), false)
        );
        assert_eq!(t.first_unstable(), Some(Offset(12)));
        assert!(t.stored(&marker(8, 15), Some(COMMIT)).unwrap().commit);
        assert_eq!(t.first_unstable(), None);
        // Only the abort is listed, for any fetch range that overlaps it.
        let aborted = AbortedTxn {
            producer_id: 7,
            first_offset: Offset(10),
            last_offset: Offset(14),
        };
        assert_eq!(t.aborted(), &[aborted]);
        assert_eq!(t.aborted_between(Offset(0), Offset(11)), vec![aborted]);
        assert_eq!(t.aborted_between(Offset(14), Offset(20)), vec![aborted]);
        assert!(t.aborted_between(Offset(15), Offset(20)).is_empty());
        assert!(t.aborted_between(Offset(0), Offset(10)).is_empty());
        // A marker for a producer with nothing open here ends nothing.
        assert_eq!(t.stored(&marker(9, 16), Some(ABORT)), None);
        t.drop_aborted_before(Offset(15));
        assert!(t.aborted().is_empty());
    }

    #[test]
    fn replay_rebuilds_open_and_aborted_transactions() {
        let mut live = ProducerStateTable::new();
        let mut rebuilt = ProducerStateTable::new();
        for (b, m) in [
            (txn_batch(1, 0, 3), None),
            (txn_batch(2, 3, 1), None),
            (marker(1, 4), Some(ABORT)),
            (txn_batch(1, 5, 1), None),
        ] {
            live.stored(&b, m);
            rebuilt.rebuild_from(&b, m);
        }
        assert_eq!(live.aborted(), rebuilt.aborted());
        let mut open: Vec<_> = rebuilt.ongoing().collect();
        open.sort();
        assert_eq!(open, vec![(1, Offset(5)), (2, Offset(3))]);
        assert_eq!(rebuilt.first_unstable(), Some(Offset(3)));
    }
}
