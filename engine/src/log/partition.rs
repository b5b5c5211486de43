//! A partition: an ordered list of segments, the batch cache, producer state and
//! the group-commit flusher.
//!
//! **Lives on:** exactly one shard, the one `shard_of` names; it is `Rc`, never
//! shared across threads.
//!
//! ## Offsets
//! `log_start` ≤ `high_watermark` ≤ `log_end`. `log_end` is the next offset to
//! assign; offsets are dense and never reused. `high_watermark` is what consumers
//! may read: everything below it is on disk (fdatasynced under the default
//! [`FlushPolicy::EveryBatch`], written under `Interval`). Producers with acks ≥ 1
//! are answered when the high watermark passes their batch.
//!
//! ## Group commit
//! `append` is synchronous: it validates, assigns offsets, copies the batch into the
//! active segment's O_DIRECT buffer (its one copy), keeps the request's own bytes
//! in the batch cache (small batches copied, see [`CACHE_COPY_BELOW`]), and
//! wakes the flusher. The
//! flusher (one task per partition) takes everything appended so far, issues one
//! write and one fdatasync, advances the high watermark and answers every producer
//! covered — so all batches that arrive while a flush is in flight share the next
//! one. A failed write or fdatasync poisons the partition: nothing more is
//! acknowledged until a restart recovers it from disk.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;

use crate::config::{FlushPolicy, TopicConfig};
use crate::error::EngineError;
use crate::log::aligned::AlignedBuf;
use crate::log::batch::{self, BatchError, BatchInfo};
use crate::log::batch::{Marker, NO_SEQUENCE};
use crate::log::checkpoint::Checkpoint;
use crate::log::cleaner::{CleanOutcome, CleanPlan, SegmentFile};
use crate::log::index::DEFAULT_INDEX_INTERVAL_BYTES;
use crate::log::producer::{AbortedTxn, ProducerError, ProducerStateTable, SequenceVerdict};
use crate::log::read::{self, DiskRead, ReadAhead};
use crate::log::replica::{EpochCache, LeaderState};
use crate::log::segment::{self, SealJob, Segment};
use crate::log::writer::{PendingWrite, give_back};
use crate::types::{FilePos, Offset, TimestampMs, TopicPartition};

/// Outcome of a successful append.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Appended {
    /// New batches at `base_offset..end_offset`.
    New {
        base_offset: Offset,
        end_offset: Offset,
    },
    /// An idempotent producer resent a batch that is already in the log.
    Duplicate { base_offset: Offset },
}

/// Batches read for a fetch, with the partition's offsets at that moment.
#[derive(Clone, Debug)]
pub struct FetchedData {
    pub records: Bytes,
    pub high_watermark: Offset,
    pub log_start: Offset,
    /// The last stable offset: the high watermark, or the first offset of the
    /// oldest transaction not yet decided and replicated, if lower.
    pub last_stable: Offset,
    /// read_committed: the aborted transactions in the records returned.
    pub aborted: Option<Vec<AbortedTxn>>,
}

/// What a caller must do to finish a read: either the data is in memory, or a disk
/// read is needed (done without holding the partition).
pub enum ReadPlan {
    Ready(FetchedData),
    Disk {
        read: DiskRead,
        high_watermark: Offset,
        log_start: Offset,
        last_stable: Offset,
    },
}

/// Which records a consumer may see (Kafka's `IsolationLevel`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Up to the high watermark.
    ReadUncommitted,
    /// Up to the last stable offset, with the aborted transactions listed.
    ReadCommitted,
}

/// Batches smaller than this are copied into the cache; larger ones are kept as
/// slices of the request that brought them (no copy).
///
/// A slice keeps its whole allocation alive: the connection's read buffer
/// (at least 256 KiB, shared by every frame read into it) or a large frame's
/// own buffer. Counting only the slice's length let a quiet partition's
/// 2,000 cached one-record batches, each from a short connection, hold 501 MiB
/// against an 8 MiB budget (`perf-scripts/cache_memory.py`). A
/// copy of a small batch costs little next to handling its request, and a
/// batch of at least this size pins at most a few times its length.
const CACHE_COPY_BELOW: usize = 64 << 10;

/// Recent batches, kept so tailing consumers never touch the disk.
struct BatchCache {
    /// (base, next, leader epoch, bytes as received).
    batches: VecDeque<(Offset, Offset, i32, Bytes)>,
    bytes: usize,
    budget: usize,
}

impl BatchCache {
    fn push(&mut self, base: Offset, next: Offset, epoch: i32, b: Bytes) {
        if self.budget == 0 {
            return;
        }
        let b = if b.len() < CACHE_COPY_BELOW {
            Bytes::copy_from_slice(&b)
        } else {
            b
        };
        self.bytes += b.len();
        self.batches.push_back((base, next, epoch, b));
        while self.bytes > self.budget && self.batches.len() > 1 {
            let (_, _, _, old) = self.batches.pop_front().expect("non-empty cache");
            self.bytes -= old.len();
        }
    }

    fn evict_below(&mut self, offset: Offset) {
        while self
            .batches
            .front()
            .is_some_and(|(_, next, _, _)| *next <= offset)
        {
            let (_, _, _, old) = self.batches.pop_front().expect("non-empty cache");
            self.bytes -= old.len();
        }
    }

    /// Batches holding offsets >= `from` and below `visible_end`, if the cache
    /// reaches back far enough.
    fn read(&self, from: Offset, visible_end: Offset, max_bytes: usize) -> Option<Bytes> {
        let first = self.batches.front()?;
        if first.0 > from {
            return None;
        }
        let start = self
            .batches
            .partition_point(|(_, next, _, _)| *next <= from);
        let mut picked: Vec<(Offset, i32, &Bytes)> = Vec::new();
        let mut total = 0usize;
        for (base, _, epoch, b) in self.batches.range(start..) {
            if *base >= visible_end || (!picked.is_empty() && total + b.len() > max_bytes) {
                break;
            }
            total += b.len();
            picked.push((*base, *epoch, b));
        }
        // Cached batches are the clients' bytes: rewrite base offset and leader
        // epoch in the copy, exactly as the segment stored them.
        let mut out = BytesMut::with_capacity(total);
        for (base, epoch, b) in picked {
            let at = out.len();
            out.extend_from_slice(b);
            batch::set_base_offset(&mut out[at..], base);
            batch::set_partition_leader_epoch(&mut out[at..], epoch);
        }
        Some(out.freeze())
    }
}

/// A single-waiter wake-up flag local to one shard.
#[derive(Default)]
pub struct LocalEvent {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalEvent {
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

type Waiter = oneshot::Sender<Result<(), EngineError>>;

/// A partition's place in replication.
enum Role {
    /// A single broker's partition: the high watermark is the durable end.
    Alone,
    Leader(LeaderState),
    /// `leader_hw`: the leader's high watermark as of the last fetch.
    Follower {
        leader_hw: Offset,
    },
}

/// The mutable state of a partition.
pub struct Partition {
    pub tp: TopicPartition,
    pub dir: PathBuf,
    pub config: TopicConfig,
    /// Oldest first; the last one is active. Segments with a writer but not last
    /// are rolled but still have bytes in flight ("sealing").
    segments: Vec<Segment>,
    pub log_start: Offset,
    pub log_end: Offset,
    pub high_watermark: Offset,
    /// Everything below is fsynced here. Alone, the high watermark; in a
    /// replicated partition the high watermark also waits for the ISR.
    pub durable_end: Offset,
    /// The epoch this broker stamps on batches it appends as leader (0 alone).
    pub leader_epoch: i32,
    /// The first offset of each leader epoch in this log.
    pub epochs: EpochCache,
    role: Role,
    /// The epoch cache changed and is not stored yet.
    epochs_dirty: bool,
    cache: BatchCache,
    /// The next disk range for a catch-up consumer (see `read::ReadAhead`).
    read_ahead: Rc<ReadAhead>,
    producers: ProducerStateTable,
    /// Transactions whose marker is appended but not yet under the high
    /// watermark: (first offset, marker offset). They hold the last stable
    /// offset back as open ones do (Kafka's `unreplicatedTxns`).
    deciding: Vec<(Offset, Offset)>,
    /// Producers waiting for the high watermark to pass an offset, in offset order.
    waiters: VecDeque<(Offset, Waiter)>,
    /// acks=1 producers waiting for the local fsync to pass an offset.
    durable_waiters: VecDeque<(Offset, Waiter)>,
    /// Long-polling fetches waiting for the high watermark to move.
    data_watchers: Vec<oneshot::Sender<()>>,
    /// log_end when the in-flight or last flush was taken.
    taken_end: Offset,
    last_sync: Instant,
    unsynced: bool,
    /// A directory entry not yet fsynced: the partition's directory since it was
    /// opened, a segment file since it was created. The next sync covers it.
    dir_unsynced: bool,
    /// Rolled segments whose last write completed, to be sealed off the reactor
    /// by the flusher.
    to_seal: Vec<(Offset, SealJob)>,
    poisoned: Option<String>,
    /// The last reservation failed (e.g. ENOSPC); logged once until one succeeds.
    out_of_space: bool,
    closing: bool,
    /// The log end the recovery checkpoint on disk describes (`None`: none yet).
    checkpointed_end: Option<Offset>,
    /// A new checkpoint is wanted: the next flush that syncs captures one.
    checkpoint_due: bool,
    /// Captured with the flush in flight; written once that flush succeeds.
    checkpoint_ready: Option<Checkpoint>,
    /// The log was reopened at a clean-stop checkpoint: this copy, marked not
    /// clean, replaces it before the first write (see `checkpoint`).
    reopened_clean: Option<Checkpoint>,
    /// Bytes of batches read from disk to open this partition.
    pub recovery_read_bytes: u64,
    /// The first offset the log cleaner has not covered (see `cleaner`).
    pub first_dirty: Offset,
    /// A cleaner pass is rewriting sealed segments: retention and
    /// DeleteRecords leave segment files alone until it is installed.
    cleaning: bool,
}

/// A partition and its flusher's wake-up.
pub struct PartitionCell {
    pub state: RefCell<Partition>,
    pub flush_event: LocalEvent,
    /// A checkpoint write is running (at most one at a time).
    checkpoint_writing: Cell<bool>,
    /// The log start `log-start-offset` holds (or the open's), and the lock
    /// that keeps its writes in order.
    log_start_stored: Cell<Offset>,
    log_start_lock: futures::lock::Mutex<()>,
    /// The running cleaner pass's stop flag (`None`: no pass running).
    cleaner_stop: RefCell<Option<std::sync::Arc<std::sync::atomic::AtomicBool>>>,
    /// No pass may start (a move is copying the partition's files).
    cleaner_paused: Cell<bool>,
}

pub type PartitionRef = Rc<PartitionCell>;

impl Partition {
    pub fn dir_for(log_dir: &std::path::Path, tp: &TopicPartition) -> PathBuf {
        log_dir.join(format!("{}-{}", tp.topic, tp.partition))
    }

    /// Opens (recovering) or creates the partition's directory in log
    /// directory `log_dir`.
    pub fn open(
        log_dir: &std::path::Path,
        tp: TopicPartition,
        config: TopicConfig,
        cache_bytes: usize,
    ) -> Result<Partition, EngineError> {
        let dir = Self::dir_for(log_dir, &tp);
        std::fs::create_dir_all(&dir)?;
        let mut producers = ProducerStateTable::default();
        let crate::log::open::Recovered {
            segments,
            reopened_clean,
            checkpointed_end,
            read_bytes,
        } = crate::log::open::recover_partition(&dir, &tp, &mut producers)?;
        let log_end = segments
            .last()
            .expect("recovery yields a segment")
            .next_offset;
        let first_base = segments.first().expect("recovery yields a segment").base;
        let stored_start = crate::log::log_start::load(&dir).unwrap_or(first_base);
        let log_start = stored_start.min(log_end).max(first_base);
        let mut epochs = EpochCache::load(&dir);
        epochs.truncate_to(log_end);
        // Past the log end only if a follower's log was cut below it: what
        // is appended again there is dirty.
        let first_dirty = crate::log::cleaner::load_first_dirty(&dir)
            .unwrap_or(Offset(0))
            .min(log_end);
        Ok(Partition {
            tp,
            dir,
            config,
            segments,
            log_start,
            log_end,
            high_watermark: log_end,
            durable_end: log_end,
            leader_epoch: 0,
            epochs,
            role: Role::Alone,
            epochs_dirty: false,
            cache: BatchCache {
                batches: VecDeque::new(),
                bytes: 0,
                budget: cache_bytes,
            },
            read_ahead: Rc::default(),
            producers,
            deciding: Vec::new(),
            waiters: VecDeque::new(),
            durable_waiters: VecDeque::new(),
            data_watchers: Vec::new(),
            taken_end: log_end,
            last_sync: Instant::now(),
            unsynced: false,
            dir_unsynced: true,
            to_seal: Vec::new(),
            poisoned: None,
            out_of_space: false,
            closing: false,
            checkpointed_end,
            checkpoint_due: false,
            checkpoint_ready: None,
            reopened_clean,
            recovery_read_bytes: read_bytes,
            first_dirty,
            cleaning: false,
        })
    }

    fn check_writable(&self) -> Result<(), EngineError> {
        if let Some(why) = &self.poisoned {
            return Err(EngineError::Storage(format!(
                "partition {} is poisoned: {why}",
                self.tp
            )));
        }
        if self.closing {
            return Err(EngineError::ShuttingDown);
        }
        Ok(())
    }

    /// Validates and appends the batches of one Produce partition entry; `now` is
    /// the broker clock the CreateTime timestamps are checked against.
    pub fn append(&mut self, records: &Bytes, now: TimestampMs) -> Result<Appended, EngineError> {
        self.append_from(records, now, true)
    }

    /// Appends batches a coordinator built (transactional offset commits):
    /// their producer fields carry no sequence, so only the epoch is checked.
    pub fn append_as_coordinator(
        &mut self,
        records: &Bytes,
        now: TimestampMs,
    ) -> Result<Appended, EngineError> {
        self.append_from(records, now, false)
    }

    fn append_from(
        &mut self,
        records: &Bytes,
        now: TimestampMs,
        from_client: bool,
    ) -> Result<Appended, EngineError> {
        self.check_writable()?;
        let batches =
            batch::split_incoming(records, self.config.max_message_bytes).map_err(|e| match e {
                BatchError::TooLarge { len, max } => EngineError::BatchTooLarge { len, max },
                e => EngineError::CorruptBatch(e),
            })?;
        if from_client && self.config.cleanup_compact {
            for (range, b) in &batches {
                check_keys(&records[range.clone()], b)?;
            }
        }
        for (_, b) in &batches {
            check_timestamps(b, now, &self.config)?;
            if let Some(p) = b.producer {
                if from_client && p.base_sequence == NO_SEQUENCE {
                    return Err(EngineError::CorruptBatch(BatchError::BadProducerFields {
                        producer_id: p.producer_id as i64,
                        epoch: p.epoch as i16,
                        base_sequence: -1,
                    }));
                }
                self.check_producer_epoch(p.producer_id, p.epoch)?;
            }
        }
        // Every idempotent batch is checked before anything is written: the
        // request's batches go in all or none.
        let producers = batches
            .iter()
            .filter(|_| from_client)
            .filter_map(|(_, b)| b.producer.as_ref().map(|p| (p, b.record_count)));
        if let SequenceVerdict::Duplicate { base_offset } = self
            .producers
            .check_all(producers)
            .map_err(map_producer_error)?
        {
            return Ok(Appended::Duplicate { base_offset });
        }
        // Roll and reserve disk space for the whole request before any offset is
        // assigned: a full disk is then a clean error that loses and poisons nothing,
        // and writes into reserved space cannot fail for want of space.
        if let Err(e) = self.reserve(records.len() as u64) {
            if !self.out_of_space {
                tracing::warn!(partition = %self.tp, error = %e, "cannot reserve disk space; refusing appends until it can");
                self.out_of_space = true;
            }
            return Err(e);
        }
        if std::mem::take(&mut self.out_of_space) {
            tracing::info!(partition = %self.tp, "disk space available again; appends resume");
        }
        let base_offset = self.log_end;
        for (range, incoming) in batches {
            self.append_one(records.slice(range), incoming)?;
        }
        Ok(Appended::New {
            base_offset,
            end_offset: self.log_end,
        })
    }

    /// `bytes` is the batch as the client sent it: the segment stores a rewritten
    /// copy, the cache keeps the client's bytes (a slice of the request, or a copy
    /// of a small batch) and rewrites the two fields when it serves them.
    fn append_one(&mut self, bytes: Bytes, incoming: BatchInfo) -> Result<(), EngineError> {
        let info = BatchInfo {
            base_offset: self.log_end,
            leader_epoch: self.leader_epoch,
            ..incoming
        };
        self.store_batch(bytes, info);
        Ok(())
    }

    /// A batch or marker of `producer_id` at an epoch older than the one
    /// this partition knows is fenced (Kafka's `checkProducerEpoch`).
    fn check_producer_epoch(&self, producer_id: u64, epoch: u16) -> Result<(), EngineError> {
        match self.producers.get(producer_id) {
            Some(e) if epoch < e.epoch() => {
                Err(map_producer_error(ProducerError::InvalidProducerEpoch {
                    current: e.epoch(),
                    received: epoch,
                }))
            }
            _ => Ok(()),
        }
    }

    /// Appends a transaction marker for `producer_id` (WriteTxnMarkers);
    /// returns the offset after it.
    pub fn append_marker(
        &mut self,
        producer_id: u64,
        epoch: u16,
        marker: Marker,
        now: TimestampMs,
    ) -> Result<Offset, EngineError> {
        self.check_writable()?;
        (self.producers)
            .check_marker(producer_id, epoch, marker.coordinator_epoch)
            .map_err(map_producer_error)?;
        let bytes = Bytes::from(batch::build_marker(
            self.log_end,
            producer_id,
            epoch,
            marker,
            now.0,
        ));
        let info = batch::validate(&bytes).map_err(EngineError::CorruptBatch)?;
        self.reserve(bytes.len() as u64)?;
        self.append_one(bytes, info)?;
        Ok(self.log_end)
    }

    /// Whether `producer_id` has a transaction open here at `epoch` (its
    /// next batches need no check with the coordinator).
    pub fn in_transaction(&self, producer_id: u64, epoch: u16) -> bool {
        self.producers.in_transaction(producer_id)
            && self
                .producers
                .get(producer_id)
                .is_some_and(|e| e.epoch() == epoch)
    }

    /// The last stable offset: where read_committed consumers stop.
    pub fn last_stable_offset(&self) -> Offset {
        let hw = self.high_watermark;
        let deciding = self
            .deciding
            .iter()
            .filter(|(_, m)| *m >= hw)
            .map(|(f, _)| *f);
        self.producers
            .first_unstable()
            .into_iter()
            .chain(deciding)
            .fold(hw, Offset::min)
    }

    /// Appends a batch whose offset and leader epoch are final.
    fn store_batch(&mut self, bytes: Bytes, info: BatchInfo) {
        if self.epochs.assign(info.leader_epoch, info.base_offset) {
            self.epochs_dirty = true;
        }
        self.segments
            .last_mut()
            .expect("an active segment")
            .append(&bytes, &info);
        if info.producer.is_some() {
            let marker = batch::read_marker(&bytes, &info);
            if let Some(done) = self.producers.stored(&info, marker) {
                let hw = self.high_watermark;
                self.deciding.retain(|(_, m)| *m >= hw);
                self.deciding.push((done.first_offset, done.marker_offset));
            }
        }
        self.cache.push(
            info.base_offset,
            info.next_offset(),
            info.leader_epoch,
            bytes,
        );
        self.log_end = info.next_offset();
    }

    fn reserve(&mut self, bytes: u64) -> Result<(), EngineError> {
        self.maybe_roll(bytes)?;
        self.segments
            .last_mut()
            .expect("an active segment")
            .reserve(bytes)
    }

    fn maybe_roll(&mut self, incoming: u64) -> Result<(), EngineError> {
        let active = self.segments.last().expect("an active segment");
        let full = active.size + incoming > self.config.segment_bytes;
        let old = active.opened_at.elapsed() >= Duration::from_millis(self.config.segment_ms);
        if active.size == 0 || !(full || old) {
            return Ok(());
        }
        let seg = Segment::create(&self.dir, self.log_end, DEFAULT_INDEX_INTERVAL_BYTES)?;
        tracing::debug!(partition = %self.tp, base = %self.log_end, "rolled segment");
        self.segments.push(seg);
        self.dir_unsynced = true;
        Ok(())
    }

    /// A receiver that completes when the high watermark reaches `end`
    /// (acks=all: alone, fsynced here; replicated, fsynced by the whole ISR).
    pub fn wait_durable(&mut self, end: Offset) -> oneshot::Receiver<Result<(), EngineError>> {
        let (tx, rx) = oneshot::channel();
        if let Some(why) = &self.poisoned {
            let _ = tx.send(Err(EngineError::Storage(why.clone())));
        } else if self.high_watermark >= end {
            let _ = tx.send(Ok(()));
        } else {
            self.waiters.push_back((end, tx));
        }
        rx
    }

    /// A receiver that completes when `end` is fsynced here (acks=1).
    pub fn wait_local(&mut self, end: Offset) -> oneshot::Receiver<Result<(), EngineError>> {
        let (tx, rx) = oneshot::channel();
        if let Some(why) = &self.poisoned {
            let _ = tx.send(Err(EngineError::Storage(why.clone())));
        } else if self.durable_end >= end {
            let _ = tx.send(Ok(()));
        } else {
            self.durable_waiters.push_back((end, tx));
        }
        rx
    }

    /// A receiver that completes when the high watermark next moves.
    pub fn watch_data(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.data_watchers.push(tx);
        rx
    }

    /// Plans a read of batches from `offset`, at most `max_bytes` (at least one batch).
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<ReadPlan, EngineError> {
        let visible = match isolation {
            Isolation::ReadUncommitted => self.high_watermark,
            Isolation::ReadCommitted => self.last_stable_offset(),
        };
        self.read_upto(offset, max_bytes, visible)
    }

    /// A follower's read: up to what is fsynced here, past the high watermark.
    pub fn read_for_replica(
        &self,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<ReadPlan, EngineError> {
        self.read_upto(offset, max_bytes, self.durable_end)
    }

    fn read_upto(
        &self,
        offset: Offset,
        max_bytes: usize,
        visible: Offset,
    ) -> Result<ReadPlan, EngineError> {
        let (hw, log_start) = (self.high_watermark, self.log_start);
        let last_stable = self.last_stable_offset();
        // Kafka's rule: before the log start or past the log end is out of
        // range; between the visible end and the log end there is simply
        // nothing to read yet.
        if offset < log_start || offset > self.log_end.max(hw) {
            return Err(EngineError::OffsetOutOfRange {
                requested: offset,
                log_start,
                high_watermark: hw,
            });
        }
        let ready = |records| {
            ReadPlan::Ready(FetchedData {
                records,
                high_watermark: hw,
                log_start,
                last_stable,
                aborted: None,
            })
        };
        if offset >= visible {
            return Ok(ready(Bytes::new()));
        }
        if let Some(records) = self.cache.read(offset, visible, max_bytes) {
            return Ok(ready(records));
        }
        let idx = self
            .segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1);
        let seg = &self.segments[idx];
        let start = seg.position_for(offset);
        // The O_DIRECT handle (a second descriptor) only for reads that can be large.
        let large = max_bytes.min((seg.written.saturating_sub(start.0)) as usize)
            >= read::DIRECT_READ_MIN_BYTES;
        let read = DiskRead {
            file: seg.reader()?,
            direct: large.then(|| seg.direct_reader()).flatten(),
            ahead: self.read_ahead.clone(),
            seg_base: seg.base,
            start,
            end: FilePos(seg.written),
            from_offset: offset,
            visible_end: visible,
            max_bytes,
            next_segment: (self.segments.get(idx + 1))
                .map(|s| s.base)
                .filter(|b| *b < visible),
        };
        Ok(ReadPlan::Disk {
            read,
            high_watermark: hw,
            log_start,
            last_stable,
        })
    }

    /// Segments that may hold a batch with timestamp >= `target`, with the file
    /// position to start scanning each from.
    pub fn timestamp_candidates(
        &self,
        target: TimestampMs,
    ) -> Result<Vec<(compio::fs::File, FilePos, FilePos)>, EngineError> {
        self.segments
            .iter()
            .filter(|s| s.max_timestamp.is_some_and(|m| m >= target))
            .map(|s| {
                let rel = s.index.time_index().lookup(target);
                let start = rel.map_or(FilePos(0), |r| s.index.offset_index().lookup(r));
                Ok((s.reader()?, start, FilePos(s.written)))
            })
            .collect()
    }

    /// The files of the sealed segments (immutable until retention deletes
    /// them), which a partition move copies while the partition serves.
    pub fn sealed_files(&self) -> Vec<PathBuf> {
        (self.segments.iter())
            .filter(|s| s.sealed)
            .flat_map(|s| segment::files(&self.dir, s.base))
            .collect()
    }

    /// Bytes of the log's segments (DescribeLogDirs' partition size).
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// The offset and timestamp of the batch with the largest timestamp, if any.
    /// The leader-epoch cache as clients are answered from it: a partition
    /// with nothing written since epochs were recorded is in its current
    /// epoch from its log start, as Kafka records at every leadership start.
    pub fn epochs_for_clients(&self) -> std::borrow::Cow<'_, EpochCache> {
        if self.epochs.latest().is_some() {
            return std::borrow::Cow::Borrowed(&self.epochs);
        }
        let mut c = EpochCache::default();
        c.assign(self.leader_epoch, self.log_start);
        std::borrow::Cow::Owned(c)
    }

    pub fn max_timestamp(&self) -> Option<TimestampMs> {
        self.segments.iter().filter_map(|s| s.max_timestamp).max()
    }

    /// Deletes whole sealed segments beyond `retention.ms` / `retention.bytes`.
    /// Returns how many segments were deleted.
    pub fn apply_retention(&mut self, now: SystemTime) -> usize {
        let now_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        if self.cleaning {
            return 0;
        }
        let mut total: u64 = self.segments.iter().map(|s| s.size).sum();
        let mut deleted = 0;
        while self.config.cleanup_delete && self.segments.len() > 1 && self.segments[0].sealed {
            let s = &self.segments[0];
            let too_old = self.config.retention_ms.is_some_and(|ms| {
                s.max_timestamp
                    .is_some_and(|t| t.0 < now_ms.saturating_sub(ms as i64))
            });
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|max| total - s.size >= max);
            if !(too_old || too_big) {
                break;
            }
            let s = self.segments.remove(0);
            total -= s.size;
            s.delete();
            deleted += 1;
            self.log_start = self.log_start.max(self.segments[0].base);
            self.producers.drop_aborted_before(self.log_start);
        }
        if deleted > 0 {
            tracing::info!(partition = %self.tp, deleted, log_start = %self.log_start, "retention deleted segments");
            self.cache.evict_below(self.log_start);
        }
        deleted + self.drop_segments_below_start()
    }

    /// Deletes the sealed segments that lie wholly before the log start
    /// (DeleteRecords moved it past them). Returns how many.
    fn drop_segments_below_start(&mut self) -> usize {
        let mut deleted = 0;
        while !self.cleaning
            && self.segments.len() > 1
            && self.segments[0].sealed
            && self.segments[1].base <= self.log_start
        {
            self.segments.remove(0).delete();
            deleted += 1;
        }
        if deleted > 0 {
            tracing::info!(partition = %self.tp, deleted, log_start = %self.log_start, "deleted segments before the log start");
        }
        deleted
    }

    /// Moves the log start forward to `to` (never back, never past the high
    /// watermark): the records before it are gone for every reader, whole
    /// segments before it are deleted. Returns whether it moved; the caller
    /// stores the new value (`log_start::store`) off the reactor.
    fn advance_log_start(&mut self, to: Offset) -> bool {
        let to = to.min(self.high_watermark);
        if to <= self.log_start {
            return false;
        }
        self.log_start = to;
        self.producers.drop_aborted_before(to);
        self.cache.evict_below(to);
        self.drop_segments_below_start();
        true
    }

    /// DeleteRecords on the leader (or a single broker): the log starts at
    /// `before` from now on, or at the high watermark when `None` (Kafka's
    /// -1). Past the high watermark is OFFSET_OUT_OF_RANGE; at or before the
    /// current log start changes nothing. Returns the log start.
    pub fn delete_records(&mut self, before: Option<Offset>) -> Result<Offset, EngineError> {
        self.check_writable()?;
        let to = before.unwrap_or(self.high_watermark);
        if to > self.high_watermark {
            return Err(EngineError::OffsetOutOfRange {
                requested: to,
                log_start: self.log_start,
                high_watermark: self.high_watermark,
            });
        }
        if self.advance_log_start(to) {
            tracing::info!(partition = %self.tp, log_start = %self.log_start, "records deleted before the new log start");
        }
        Ok(self.log_start)
    }

    /// A follower takes its leader's log start (as far as its own high
    /// watermark reaches). Returns whether it moved.
    pub fn follow_log_start(&mut self, leader_start: Offset) -> bool {
        self.advance_log_start(leader_start)
    }

    /// The next cleaner pass for this partition, if it needs one (see
    /// `cleaner` for the rules); `now_ms` is the wall clock.
    fn clean_plan(
        &self,
        now_ms: i64,
        cfg: &crate::config::CleanerConfig,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<CleanPlan> {
        let c = &self.config;
        if !c.cleanup_compact || self.cleaning || self.closing || self.poisoned.is_some() {
            return None;
        }
        // Never above the high watermark (see `last_stable_offset`).
        let stable = self.last_stable_offset();
        let lag_limit = now_ms.saturating_sub(c.min_compaction_lag_ms.min(i64::MAX as u64) as i64);
        let mut cleanable = Vec::new();
        for pair in self.segments.windows(2) {
            let (s, next) = (&pair[0], &pair[1]);
            let young = s.max_timestamp.is_some_and(|t| t.0 > lag_limit);
            if !s.sealed || next.base > stable || young {
                break;
            }
            cleanable.push((s, next.base));
        }
        let first_dirty = self.first_dirty.max(self.segments[0].base);
        let total: u64 = cleanable.iter().map(|(s, _)| s.size).sum();
        let dirty: Vec<_> = cleanable
            .iter()
            .filter(|(_, end)| *end > first_dirty)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|(s, _)| s.size).sum();
        if dirty_bytes == 0 {
            return None;
        }
        let max_lag = now_ms.saturating_sub(c.max_compaction_lag_ms.min(i64::MAX as u64) as i64);
        let overdue = dirty
            .iter()
            .any(|(s, _)| s.max_timestamp.is_some_and(|t| t.0 < max_lag));
        if (dirty_bytes as f64) < c.min_cleanable_dirty_ratio * total as f64 && !overdue {
            return None;
        }
        // Readers that have not opened a segment yet would open the
        // cleaned file with the old segment's positions: open them now,
        // so every reader of this segment list reads the files it indexes.
        for (s, _) in &cleanable {
            s.reader().ok()?;
            s.direct_reader();
        }
        let segments: Vec<SegmentFile> = cleanable
            .iter()
            .map(|(s, end)| SegmentFile {
                base: s.base,
                size: s.size,
                end: *end,
            })
            .collect();
        let end = segments.last().map_or(first_dirty, |s| s.end);
        Some(CleanPlan {
            dir: self.dir.clone(),
            segments,
            first_dirty,
            aborted: self.producers.aborted_between(self.segments[0].base, end),
            now_ms,
            delete_retention_ms: c.delete_retention_ms,
            segment_bytes: c.segment_bytes,
            map_budget: cfg.dedupe_buffer_bytes,
            io_limit: cfg.io_max_bytes_per_second,
            stop,
        })
    }

    /// Puts the groups a cleaner pass committed on disk in place of the
    /// segments they replaced.
    fn install_cleaned(&mut self, outcome: &mut CleanOutcome) {
        let mut replaced_files = Vec::new();
        for g in outcome.groups.drain(..) {
            let Some(at) = self.segments.iter().position(|s| s.base == g.base) else {
                continue;
            };
            let n = self.segments[at..]
                .iter()
                .take_while(|s| g.replaced.contains(&s.base))
                .count();
            let seg =
                Segment::open_sealed(&self.dir, g.base, g.size, g.index, g.end, g.max_timestamp)
                    .expect("opening a sealed segment does no I/O");
            for mut old in self.segments.splice(at..at + n, [seg]) {
                replaced_files.extend(old.release_read_handles());
            }
            self.cache.evict_below(g.end);
        }
        // Closing them frees the unlinked files (their blocks and cached
        // pages): 0.6 s on the reactor for a 900 MB pass, measured, so on a
        // thread of its own instead.
        if !replaced_files.is_empty() {
            let closed = std::thread::Builder::new()
                .name("brook-close".into())
                .spawn(move || drop(replaced_files));
            if let Err(e) = closed {
                tracing::warn!(partition = %self.tp, error = %e, "cannot start a thread to close replaced segments; closed here");
            }
        }
        // Read-ahead ranges belong to the files read before: start afresh.
        self.read_ahead = Rc::default();
        if let Some(d) = outcome.first_dirty {
            self.first_dirty = d;
        }
    }

    fn poison(&mut self, why: String) {
        tracing::error!(partition = %self.tp, error = %why, "write failed; partition poisoned, no further acknowledgements");
        for (_, w) in self.waiters.drain(..) {
            let _ = w.send(Err(EngineError::Storage(why.clone())));
        }
        self.poisoned = Some(why);
        if let Some(f) = ON_POISONED.with_borrow(|h| h.clone()) {
            f(&self.tp);
        }
    }

    /// Takes the partition offline (its log directory failed): nothing more
    /// is acknowledged, waiting producers get the error.
    pub fn take_offline(&mut self, why: String) {
        if self.poisoned.is_none() {
            self.poison(why);
        }
    }

    pub fn begin_close(&mut self) {
        self.closing = true;
    }

    fn has_unflushed(&self) -> bool {
        self.log_end > self.taken_end
    }
}

/// Kafka's `LogValidator.validateTimestamp` for CreateTime batches, on the batch
/// header: the max timestamp against `message.timestamp.after.max.ms`, the base
/// (first) timestamp against `message.timestamp.before.max.ms`. Kafka checks
/// every record; the header bounds them without decompressing, except a record
/// older than the first, which is let through. -1 (no timestamp) is not checked.
fn check_timestamps(b: &BatchInfo, now: TimestampMs, c: &TopicConfig) -> Result<(), EngineError> {
    let clamp = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
    let min = now.0.saturating_sub(clamp(c.timestamp_before_max_ms));
    let max = now.0.saturating_add(clamp(c.timestamp_after_max_ms));
    let out = |t: TimestampMs| t.0 != NO_TIMESTAMP && (t.0 < min || t.0 > max);
    for t in [b.max_timestamp, b.first_timestamp] {
        if out(t) {
            return Err(EngineError::InvalidTimestamp {
                timestamp: t.0,
                min,
                max,
            });
        }
    }
    Ok(())
}

/// The most a produced batch for a compacted topic may decompress to: the
/// key check holds its records in memory, and a small batch of a few zeros
/// compressed must not make the broker allocate gigabytes.
const KEY_CHECK_MAX_BYTES: usize = 64 << 20;

/// Kafka's rule for compacted topics: every record has a key (the cleaner
/// keeps the latest record per key). Reads the batch's records, decompressing
/// them (at most [`KEY_CHECK_MAX_BYTES`]; more is INVALID_RECORD): only
/// batches for compacted topics pay for it.
fn check_keys(bytes: &[u8], info: &BatchInfo) -> Result<(), EngineError> {
    let bad = |e: BatchError| EngineError::CorruptBatch(e);
    let body = crate::log::records::records_section(bytes, info, KEY_CHECK_MAX_BYTES)
        .map_err(|e| bad(BatchError::Undecodable(e.to_string())))?;
    let spans = crate::log::records::record_spans(&body, info).map_err(bad)?;
    if spans.iter().any(|s| s.key.is_none()) {
        return Err(bad(BatchError::NoKeyInCompactedTopic));
    }
    Ok(())
}

/// Kafka's `RecordBatch.NO_TIMESTAMP`.
const NO_TIMESTAMP: i64 = -1;

fn map_producer_error(e: ProducerError) -> EngineError {
    match e {
        ProducerError::InvalidProducerEpoch { .. } => EngineError::InvalidProducerEpoch,
        ProducerError::OutOfOrderSequence { expected, received } => {
            EngineError::OutOfOrderSequence { expected, received }
        }
        ProducerError::CoordinatorFenced { current, received } => {
            EngineError::TransactionCoordinatorFenced {
                current,
                given: received,
            }
        }
        #[allow(unreachable_patterns)]
        _ => EngineError::UnknownProducerId,
    }
}

/// Everything one flusher iteration does: writes, then (maybe) fdatasyncs.
struct FlushJob {
    /// The O_DIRECT writes, each with the base offset of its segment.
    writes: Vec<(Offset, PendingWrite)>,
    sync: Vec<compio::fs::File>,
    /// Directories to fsync after the files (new entries in them).
    sync_dirs: Vec<PathBuf>,
    end: Offset,
    /// To write before any data: the log was reopened at a clean-stop
    /// checkpoint, which must stop saying so first.
    reopened_clean: Option<Checkpoint>,
}

impl Partition {
    /// Takes every unflushed byte into a flush job (None when there is nothing to do).
    fn take_flush_job(&mut self) -> Result<Option<FlushJob>, EngineError> {
        let interval_due = match self.config.flush {
            FlushPolicy::EveryBatch => true,
            FlushPolicy::Interval(d) => self.closing || self.last_sync.elapsed() >= d,
        };
        if !(self.has_unflushed() || self.unsynced && interval_due) {
            return Ok(None);
        }
        let mut job = FlushJob {
            writes: Vec::new(),
            sync: Vec::new(),
            sync_dirs: Vec::new(),
            end: self.log_end,
            reopened_clean: None,
        };
        if interval_due && std::mem::take(&mut self.dir_unsynced) {
            job.sync_dirs.push(self.dir.clone());
            job.sync_dirs.extend(self.dir.parent().map(PathBuf::from));
        }
        for seg in self.segments.iter_mut() {
            let Some(w) = seg.writer.as_mut() else {
                continue;
            };
            if let Some(write) = w.take_write()? {
                job.writes.push((seg.base, write));
            }
            if interval_due && let Some(f) = w.sync_handle() {
                job.sync.push(f);
            }
        }
        self.taken_end = self.log_end;
        if interval_due && std::mem::take(&mut self.checkpoint_due) {
            self.checkpoint_ready = Some(self.capture_checkpoint(false));
        }
        if !job.writes.is_empty() {
            job.reopened_clean = self.reopened_clean.take();
        }
        Ok(Some(job))
    }

    /// The log's state at its current end: the active segment's point, its
    /// indexes and the producer table. Durable only once everything appended
    /// so far is (the caller's responsibility).
    fn capture_checkpoint(&self, clean: bool) -> Checkpoint {
        let seg = self.segments.last().expect("an active segment");
        Checkpoint {
            segment: seg.base,
            pos: FilePos(seg.size),
            next_offset: seg.next_offset,
            index: seg.index.clone(),
            producers: self.producers.clone(),
            clean,
        }
    }

    /// Asks for a checkpoint if the log moved since the last one.
    pub fn want_checkpoint(&mut self) -> bool {
        let moved = self.checkpointed_end != Some(self.log_end);
        self.checkpoint_due |= moved;
        moved
    }

    /// Applies a finished flush: advance the high watermark, answer producers,
    /// wake long polls, seal rolled segments.
    fn complete_flush(
        &mut self,
        synced: bool,
        written: Vec<(Offset, FilePos, AlignedBuf)>,
        end: Offset,
    ) {
        for (base, written_to, buf) in written {
            if let Some(seg) = self.segments.iter_mut().find(|s| s.base == base) {
                seg.written = seg.written.max(written_to.0);
            }
            give_back(buf);
        }
        if synced {
            self.last_sync = Instant::now();
            self.unsynced = false;
        } else {
            self.unsynced = true;
        }
        self.begin_seals();
        assert!(
            end >= self.durable_end,
            "durable end of {} would go back",
            self.tp
        );
        self.durable_end = end;
        while self.durable_waiters.front().is_some_and(|(o, _)| *o <= end) {
            let (_, w) = self.durable_waiters.pop_front().expect("non-empty waiters");
            let _ = w.send(Ok(()));
        }
        self.update_high_watermark();
        // Followers long-poll for what is durable here, past the high watermark.
        if matches!(self.role, Role::Leader(_)) {
            for w in self.data_watchers.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Moves the high watermark to what the role allows (never back), answers
    /// acks=all producers below it and wakes long polls.
    fn update_high_watermark(&mut self) {
        let allowed = match &self.role {
            Role::Alone => self.durable_end,
            Role::Leader(l) => l.high_watermark(self.durable_end),
            Role::Follower { leader_hw } => (*leader_hw).min(self.durable_end),
        };
        if allowed <= self.high_watermark {
            return;
        }
        self.high_watermark = allowed;
        while self.waiters.front().is_some_and(|(o, _)| *o <= allowed) {
            let (_, w) = self.waiters.pop_front().expect("non-empty waiters");
            let _ = w.send(Ok(()));
        }
        for w in self.data_watchers.drain(..) {
            let _ = w.send(());
        }
    }

    /// Replication: this broker leads the partition from now on, in
    /// `state.epoch`; batches it appends carry that epoch.
    pub fn become_leader(&mut self, state: LeaderState) {
        self.leader_epoch = state.epoch;
        if self.epochs.assign(state.epoch, self.log_end) {
            self.epochs_dirty = true;
        }
        self.role = Role::Leader(state);
        self.update_high_watermark();
    }

    /// Replication: another broker leads; producers still waiting for the
    /// ISR are told this broker no longer leads.
    pub fn become_follower(&mut self, epoch: i32) {
        self.leader_epoch = epoch;
        self.role = Role::Follower {
            leader_hw: self.high_watermark,
        };
        for (_, w) in self.waiters.drain(..) {
            let _ = w.send(Err(EngineError::NotLeaderOrFollower));
        }
    }

    /// acks=all needs `min.insync.replicas` in the ISR (always met alone).
    pub fn check_min_isr(&self) -> Result<(), EngineError> {
        let min = self.config.min_insync_replicas;
        match &self.role {
            Role::Leader(l) if l.isr.len() < min as usize => Err(EngineError::NotEnoughReplicas {
                isr: l.isr.len(),
                min,
            }),
            _ => Ok(()),
        }
    }

    /// A replicated partition just opened: what its log holds past the
    /// cluster's high watermark is unknown until the leader (or, leading, the
    /// ISR) says, so nothing is visible to consumers until then. (Kafka keeps
    /// the high watermark in a checkpoint file; Brook relearns it.)
    pub fn relearn_high_watermark(&mut self) {
        self.high_watermark = self.log_start;
    }

    /// A replicated partition just opened with a checkpointed high watermark
    /// (see `hw_checkpoint`): what was committed before the stop is visible
    /// again at once, never beyond what this log holds durably.
    pub fn restore_high_watermark(&mut self, hw: Offset) {
        self.high_watermark = hw.clamp(self.log_start, self.durable_end);
    }

    pub fn is_follower(&self) -> bool {
        matches!(self.role, Role::Follower { .. })
    }

    /// The leader's view of its followers, when this broker leads.
    pub fn leader_state(&self) -> Option<&LeaderState> {
        match &self.role {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// This leader asks the quorum for `isr` (see `LeaderState::propose_isr`),
    /// or, with `None`, gave up asking.
    pub fn propose_isr(&mut self, isr: Option<Vec<i32>>) {
        if let Role::Leader(l) = &mut self.role {
            match isr {
                Some(isr) => l.propose_isr(isr),
                None => l.abandon_isr(),
            }
        }
        self.update_high_watermark();
    }

    /// The quorum committed a new ISR for the partition this broker leads.
    pub fn set_isr(&mut self, isr: Vec<i32>, partition_epoch: i32) {
        if let Role::Leader(l) = &mut self.role {
            // Counted where the leader learns it, whoever made the change
            // (this leader's AlterPartition, or the controller fencing a broker).
            let (before, after) = (l.isr.len(), isr.len());
            if after != before {
                crate::metrics::count(|m| match after < before {
                    true => m.isr_shrinks += 1,
                    false => m.isr_expands += 1,
                });
            }
            l.set_isr(isr, partition_epoch);
        }
        self.update_high_watermark();
    }

    /// A follower (started as `incarnation`) fetched from `offset` (so it
    /// has fsynced everything below). False for a stale fetch.
    pub fn follower_fetched(
        &mut self,
        node: i32,
        incarnation: u64,
        offset: Offset,
        now: Instant,
    ) -> bool {
        let log_end = self.log_end;
        let fresh = match &mut self.role {
            Role::Leader(l) => l.on_fetch(node, incarnation, offset, log_end, now),
            _ => true,
        };
        self.update_high_watermark();
        fresh
    }

    /// A follower (started as `incarnation`) reported its log start.
    pub fn follower_log_start(&mut self, node: i32, incarnation: u64, start: Offset) {
        if let Role::Leader(l) = &mut self.role {
            l.on_log_start(node, incarnation, start);
        }
    }

    /// The least log start of the in-sync replicas (this one's alone when
    /// it does not lead a replicated partition).
    pub fn low_watermark(&self) -> Offset {
        match &self.role {
            Role::Leader(l) => l.low_watermark(self.log_start),
            _ => self.log_start,
        }
    }

    /// Appends batches fetched from the leader, offsets and epochs as they
    /// are; `leader_hw` is the leader's high watermark. They start at this
    /// log's end (the fetch asked for it) or, over the gap a compacted
    /// leader's log has there, after it. Returns the new log end.
    pub fn append_replica(
        &mut self,
        records: &Bytes,
        leader_hw: Offset,
    ) -> Result<Offset, EngineError> {
        self.check_writable()?;
        if let Role::Follower { leader_hw: hw } = &mut self.role {
            *hw = (*hw).max(leader_hw);
        }
        if !records.is_empty() {
            let mut batches = Vec::new();
            let mut at = 0;
            while at < records.len() {
                let info = batch::validate(&records[at..]).map_err(EngineError::CorruptBatch)?;
                let end = at + info.len as usize;
                batches.push((at..end, info));
                at = end;
            }
            // Past the log end only over a compacted leader's gap; each
            // batch after the one before it.
            let mut end = self.log_end;
            for (_, b) in &batches {
                if b.base_offset < end {
                    return Err(EngineError::InvalidRequest(format!(
                        "replica batch at {} does not follow offset {end}",
                        b.base_offset
                    )));
                }
                end = b.next_offset();
            }
            self.reserve(records.len() as u64)?;
            for (range, info) in batches {
                self.store_batch(records.slice(range), info);
            }
        }
        self.update_high_watermark();
        Ok(self.log_end)
    }

    /// Drops the epochs that start at or after `end` (a follower's cut).
    pub fn truncate_epochs(&mut self, end: Offset) {
        let before = self.epochs.latest();
        self.epochs.truncate_to(end);
        if self.epochs.latest() != before {
            self.epochs_dirty = true;
        }
    }

    /// The epoch cache changed since it was last stored: its bytes to store.
    pub fn take_epochs_to_store(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.epochs_dirty).then(|| self.epochs.encode())
    }

    /// Starts sealing rolled segments whose bytes are all written; the flusher
    /// runs the blocking rest ([`SealJob`]) on a blocking thread.
    fn begin_seals(&mut self) {
        let last = self.segments.len() - 1;
        for seg in self.segments[..last].iter_mut() {
            if seg.writer.is_some() && seg.written == seg.size {
                self.to_seal.push((seg.base, seg.begin_seal()));
            }
        }
    }

    /// A seal job finished: the segment may now be deleted by retention.
    fn sealed(&mut self, base: Offset, res: Result<(), EngineError>) {
        match res {
            Ok(()) => {
                if let Some(seg) = self.segments.iter_mut().find(|s| s.base == base) {
                    seg.sealed = true;
                }
            }
            Err(e) => self.poison(format!("sealing segment {base}: {e}")),
        }
    }
}

/// Runs the partition's pending seal jobs off the reactor, one at a time.
async fn run_seals(cell: &PartitionRef) {
    let jobs = std::mem::take(&mut cell.state.borrow_mut().to_seal);
    for (base, job) in jobs {
        let res = compio::runtime::spawn_blocking(move || job.run())
            .await
            .unwrap_or_else(|_| Err(EngineError::Storage("seal job panicked".into())));
        cell.state.borrow_mut().sealed(base, res);
    }
}

/// A flush (writes plus fdatasync) that takes this long is logged at debug level,
/// to tell disk stalls from broker stalls when latency spikes.
const SLOW_FLUSH: Duration = Duration::from_millis(10);

/// What a flush job did: its result, the buffers it wrote (for reuse), and how
/// long the writes took (the rest of the job's time is the fdatasync).
struct JobDone {
    res: Result<(), std::io::Error>,
    written: Vec<(Offset, FilePos, AlignedBuf)>,
    writing: Duration,
}

async fn run_job(job: FlushJob) -> JobDone {
    use compio::io::AsyncWriteAtExt;
    let started = Instant::now();
    let mut written = Vec::with_capacity(job.writes.len());
    let mut writing = None;
    let res = async {
        for (seg_base, w) in job.writes {
            let mut f = &w.file;
            let compio::BufResult(res, buf) = f.write_all_at(w.buf, w.pos.0).await;
            written.push((seg_base, w.end, buf.into_inner()));
            res?;
        }
        writing = Some(started.elapsed());
        for f in &job.sync {
            f.sync_data().await?;
        }
        for dir in &job.sync_dirs {
            compio::fs::File::open(dir).await?.sync_all().await?;
        }
        Ok(())
    }
    .await;
    JobDone {
        res,
        written,
        writing: writing.unwrap_or_else(|| started.elapsed()),
    }
}

/// The partition's flusher: runs until the partition is closed and drained.
pub async fn run_flusher(cell: PartitionRef) {
    loop {
        let taken = cell.state.borrow_mut().take_flush_job();
        match taken {
            Err(e) => {
                cell.state.borrow_mut().poison(e.to_string());
            }
            Ok(Some(mut job)) => {
                if let Some(c) = job.reopened_clean.take()
                    && let Err(e) = unmark_clean(&cell, c).await
                {
                    cell.state.borrow_mut().poison(e);
                    continue;
                }
                let synced = !job.sync.is_empty();
                let end = job.end;
                let started = Instant::now();
                let JobDone {
                    res,
                    written,
                    writing,
                } = run_job(job).await;
                let took = started.elapsed();
                if synced {
                    crate::metrics::count(|m| m.flush_seconds.observe(took));
                }
                let mut disk_failed = None;
                let checkpoint = {
                    let mut p = cell.state.borrow_mut();
                    if took >= SLOW_FLUSH {
                        let bytes: u64 = written.iter().map(|(_, _, b)| b.len() as u64).sum();
                        tracing::debug!(partition = %p.tp, ?took, ?writing, bytes, synced, "slow flush");
                    }
                    match res {
                        Ok(()) => {
                            p.complete_flush(synced, written, end);
                            p.checkpoint_ready.take()
                        }
                        Err(e) => {
                            if crate::meta::log_dirs::is_disk_failure(&e) {
                                disk_failed = Some((p.dir.clone(), e.to_string()));
                            }
                            p.poison(e.to_string());
                            p.checkpoint_ready = None;
                            None
                        }
                    }
                };
                if let Some((dir, why)) = disk_failed {
                    report_disk_failure(&dir, &why);
                }
                if let Some(c) = checkpoint {
                    start_checkpoint_write(&cell, c);
                }
                run_seals(&cell).await;
                continue;
            }
            Ok(None) => {
                // Nothing to flush: everything appended is durable, so an
                // idle partition's checkpoint can be taken as it stands.
                let idle_checkpoint = {
                    let mut p = cell.state.borrow_mut();
                    let durable = !p.unsynced && p.poisoned.is_none() && !p.closing;
                    (durable && std::mem::take(&mut p.checkpoint_due))
                        .then(|| p.capture_checkpoint(false))
                };
                if let Some(c) = idle_checkpoint {
                    start_checkpoint_write(&cell, c);
                }
            }
        }
        let (closing, idle_wait) = {
            let p = cell.state.borrow();
            let wait = match p.config.flush {
                FlushPolicy::Interval(d) if p.unsynced => {
                    Some(d.saturating_sub(p.last_sync.elapsed()))
                }
                _ => None,
            };
            (p.closing || p.poisoned.is_some(), wait)
        };
        if closing {
            write_clean_checkpoint(&cell).await;
            return;
        }
        match idle_wait {
            Some(d) => {
                let _ = compio::time::timeout(d, cell.flush_event.wait()).await;
            }
            None => cell.flush_event.wait().await,
        }
    }
}

/// A reaction to a disk failure under a partition directory, with the error.
pub type DiskFailureHook = Rc<dyn Fn(&std::path::Path, &str)>;

thread_local! {
    /// What this shard does when a write or sync reports a failing disk
    /// (set by the shard: fail the log directory, take its partitions offline).
    static ON_DISK_FAILURE: RefCell<Option<DiskFailureHook>> = const { RefCell::new(None) };
}

/// A reaction to a partition of this shard being poisoned (it must not be
/// called back into the partition: it runs while the partition is borrowed).
pub type PoisonedHook = Rc<dyn Fn(&TopicPartition)>;

thread_local! {
    static ON_POISONED: RefCell<Option<PoisonedHook>> = const { RefCell::new(None) };
}

/// Sets this thread's reaction to a poisoned partition (in a cluster: tell
/// the controller its copy here is offline).
pub fn on_poisoned(f: PoisonedHook) {
    ON_POISONED.with_borrow_mut(|h| *h = Some(f));
}

/// Sets this thread's reaction to a disk failure under a partition.
pub fn on_disk_failure(f: DiskFailureHook) {
    ON_DISK_FAILURE.with_borrow_mut(|h| *h = Some(f));
}

fn report_disk_failure(dir: &std::path::Path, why: &str) {
    if let Some(f) = ON_DISK_FAILURE.with_borrow(|h| h.clone()) {
        f(dir, why);
    }
}

/// Checkpoint files a shard writes at once (each is two fsyncs on a blocking
/// thread). The rest wait their turn, so that a tick asking thousands of
/// partitions for a checkpoint, or a stop closing them all, never fills the
/// runtime's blocking pool: a full pool makes the reactor wait for a free
/// thread.
const CHECKPOINT_WRITES_AT_ONCE: usize = 8;

type CheckpointWrite = (PathBuf, Checkpoint, oneshot::Sender<Result<(), String>>);

thread_local! {
    static CHECKPOINT_QUEUE: RefCell<VecDeque<CheckpointWrite>> = const { RefCell::new(VecDeque::new()) };
    static CHECKPOINT_WRITERS: Cell<usize> = const { Cell::new(0) };
}

/// Writes checkpoint `c` into partition directory `dir` through this shard's
/// queue (at most [`CHECKPOINT_WRITES_AT_ONCE`] at a time).
async fn write_checkpoint(dir: PathBuf, c: Checkpoint) -> Result<(), String> {
    let (tx, rx) = oneshot::channel();
    CHECKPOINT_QUEUE.with_borrow_mut(|q| q.push_back((dir, c, tx)));
    if CHECKPOINT_WRITERS.get() < CHECKPOINT_WRITES_AT_ONCE {
        CHECKPOINT_WRITERS.set(CHECKPOINT_WRITERS.get() + 1);
        compio::runtime::spawn(async {
            while let Some((dir, c, tx)) = CHECKPOINT_QUEUE.with_borrow_mut(|q| q.pop_front()) {
                let res = blocking(move || c.write(&dir)).await;
                let _ = tx.send(res.map_err(|e| e.to_string()));
            }
            CHECKPOINT_WRITERS.set(CHECKPOINT_WRITERS.get() - 1);
        })
        .detach();
    }
    rx.await
        .unwrap_or_else(|_| Err("checkpoint writer stopped".into()))
}

/// Writes `c` in the background; at most one per partition at a time (a
/// checkpoint that finds one running is asked for again at the next tick).
fn start_checkpoint_write(cell: &PartitionRef, c: Checkpoint) {
    if cell.checkpoint_writing.replace(true) {
        cell.state.borrow_mut().checkpoint_due = true;
        return;
    }
    let me = cell.clone();
    compio::runtime::spawn(async move {
        let dir = me.state.borrow().dir.clone();
        let end = c.next_offset;
        let res = write_checkpoint(dir, c).await;
        me.checkpoint_writing.set(false);
        let mut p = me.state.borrow_mut();
        match res {
            Ok(()) => p.checkpointed_end = Some(end),
            Err(e) => {
                tracing::warn!(partition = %p.tp, error = %e, "cannot write the recovery checkpoint; a crash restart will read more of the log");
            }
        }
    })
    .detach();
}

/// Runs a blocking filesystem step on one of the runtime's blocking threads,
/// off the reactor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, EngineError> {
    match compio::runtime::spawn_blocking(f).await {
        Ok(r) => r.map_err(EngineError::from),
        Err(_) => Err(EngineError::Storage("blocking task panicked".into())),
    }
}

/// Replaces the clean-stop checkpoint the log was reopened at with `c` (the
/// same point, not clean) before the first write; if that cannot be written,
/// removes the checkpoint (durably) instead.
async fn unmark_clean(cell: &PartitionRef, c: Checkpoint) -> Result<(), String> {
    let dir = cell.state.borrow().dir.clone();
    if let Err(e) = write_checkpoint(dir.clone(), c).await {
        let tp = cell.state.borrow().tp.clone();
        tracing::warn!(partition = %tp, error = %e, "cannot rewrite the recovery checkpoint; removing it");
        blocking(move || {
            match std::fs::remove_file(crate::log::checkpoint::path(&dir)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| format!("removing the clean-stop checkpoint: {e}"))?;
        cell.state.borrow_mut().checkpointed_end = None;
    }
    Ok(())
}

/// At a clean close: once any checkpoint write has finished, records the
/// final state as a clean-stop checkpoint (unless the partition is poisoned,
/// or the clean one it was reopened at is still on disk and current).
async fn write_clean_checkpoint(cell: &PartitionRef) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while cell.checkpoint_writing.get() && Instant::now() < deadline {
        compio::time::sleep(Duration::from_millis(1)).await;
    }
    let c = {
        let p = cell.state.borrow();
        let still_clean = p.reopened_clean.is_some() && p.checkpointed_end == Some(p.log_end);
        if p.poisoned.is_some() || p.unsynced || p.has_unflushed() || still_clean {
            return;
        }
        p.capture_checkpoint(true)
    };
    let dir = cell.state.borrow().dir.clone();
    if let Err(e) = write_checkpoint(dir, c).await {
        let tp = cell.state.borrow().tp.clone();
        tracing::warn!(partition = %tp, error = %e, "cannot write the clean-stop checkpoint; the restart will scan the log");
    }
}

/// Reads batches from `offset`, at most `max_bytes` (but at least one batch):
/// from the batch cache, or from the segment without holding the partition
/// across the disk read.
pub async fn fetch(
    cell: &PartitionRef,
    offset: Offset,
    max_bytes: usize,
    isolation: Isolation,
) -> Result<FetchedData, EngineError> {
    let mut data = fetch_plan(cell, offset, |at| {
        cell.state.borrow().read(at, max_bytes, isolation)
    })
    .await?;
    if isolation == Isolation::ReadCommitted {
        let end = batch::end_offset(&data.records).unwrap_or(offset);
        let p = cell.state.borrow();
        data.aborted = Some(p.producers.aborted_between(offset, end));
    }
    Ok(data)
}

/// A follower's fetch: what is fsynced here, past the high watermark.
pub async fn fetch_for_replica(
    cell: &PartitionRef,
    offset: Offset,
    max_bytes: usize,
) -> Result<FetchedData, EngineError> {
    fetch_plan(cell, offset, |at| {
        cell.state.borrow().read_for_replica(at, max_bytes)
    })
    .await
}

async fn fetch_plan(
    cell: &PartitionRef,
    offset: Offset,
    plan: impl Fn(Offset) -> Result<ReadPlan, EngineError>,
) -> Result<FetchedData, EngineError> {
    let res = fetch_inner(offset, plan).await;
    if let Err(EngineError::DiskFailure(why)) = &res {
        // A read (or the open of a segment for reading) on a failing disk
        // fails its directory, as a write or fsync error does.
        let dir = cell.state.borrow().dir.clone();
        report_disk_failure(&dir, why);
    }
    res
}

async fn fetch_inner(
    mut offset: Offset,
    plan: impl Fn(Offset) -> Result<ReadPlan, EngineError>,
) -> Result<FetchedData, EngineError> {
    loop {
        match plan(offset)? {
            ReadPlan::Ready(d) => return Ok(d),
            ReadPlan::Disk {
                read,
                high_watermark,
                log_start,
                last_stable,
            } => {
                let next = read.next_segment;
                let records = read::read_batches(read).await?;
                // Nothing left in a compacted segment: on to the next one.
                if let (true, Some(n)) = (records.is_empty(), next) {
                    offset = offset.max(n);
                    continue;
                }
                return Ok(FetchedData {
                    records,
                    high_watermark,
                    log_start,
                    last_stable,
                    aborted: None,
                });
            }
        }
    }
}

impl PartitionCell {
    pub fn new(p: Partition) -> PartitionRef {
        let start = p.log_start;
        Rc::new(PartitionCell {
            state: RefCell::new(p),
            flush_event: LocalEvent::default(),
            checkpoint_writing: Cell::new(false),
            log_start_stored: Cell::new(start),
            log_start_lock: futures::lock::Mutex::new(()),
            cleaner_stop: RefCell::new(None),
            cleaner_paused: Cell::new(false),
        })
    }

    /// Stops a running cleaner pass and waits for it (what it committed
    /// stays; the rest is undone at the next open); with `pause`, no pass
    /// starts until [`PartitionCell::resume_cleaner`].
    pub async fn stop_cleaner(&self, pause: bool) {
        self.cleaner_paused.set(self.cleaner_paused.get() || pause);
        if let Some(stop) = self.cleaner_stop.borrow().as_ref() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        while self.cleaner_stop.borrow().is_some() {
            compio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn resume_cleaner(&self) {
        self.cleaner_paused.set(false);
    }

    /// Runs one cleaner pass on this partition if it needs one: the reading
    /// and writing on a thread of its own, the result installed here. Returns
    /// what the pass did (`None`: nothing to clean).
    pub async fn clean(
        self: &Rc<Self>,
        cfg: &crate::config::CleanerConfig,
    ) -> Result<Option<CleanOutcome>, EngineError> {
        if self.cleaner_paused.get() || self.cleaner_stop.borrow().is_some() {
            return Ok(None);
        }
        let now_ms = TimestampMs::now().0;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let Some(plan) = self.state.borrow().clean_plan(now_ms, cfg, stop.clone()) else {
            return Ok(None);
        };
        *self.cleaner_stop.borrow_mut() = Some(stop);
        self.state.borrow_mut().cleaning = true;
        // A thread of its own (it inherits the shard's core), not one of the
        // blocking pool, which a pass could hold for minutes.
        let (tx, rx) = futures::channel::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("brook-cleaner".into())
            .spawn(move || {
                let mut done = CleanOutcome::default();
                let res = crate::log::cleaner::run(plan, &mut done);
                let _ = tx.send((done, res));
            });
        let res = match spawned {
            Ok(_) => rx.await.map_err(|_| ()),
            Err(e) => Ok((
                CleanOutcome::default(),
                Err(EngineError::Storage(format!(
                    "cannot start the cleaner thread: {e}"
                ))),
            )),
        };
        let mut p = self.state.borrow_mut();
        p.cleaning = false;
        *self.cleaner_stop.borrow_mut() = None;
        let (mut done, res) = res.unwrap_or_else(|_| {
            (
                CleanOutcome::default(),
                Err(EngineError::Storage("cleaner pass panicked".into())),
            )
        });
        p.install_cleaned(&mut done);
        res.map(|()| Some(done))
    }

    /// Stores the partition's log start durably once it moved (DeleteRecords,
    /// a follower following its leader), off the reactor. Stores run one at
    /// a time and each writes the latest value, so the file never goes back.
    pub async fn store_log_start(&self) -> Result<(), EngineError> {
        let _order = self.log_start_lock.lock().await;
        let (dir, start) = {
            let p = self.state.borrow();
            (p.dir.clone(), p.log_start)
        };
        if start <= self.log_start_stored.get() {
            return Ok(());
        }
        blocking(move || crate::log::log_start::store(&dir, start)).await?;
        self.log_start_stored.set(start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_restarted_at_an_offset_opens_empty_there() {
        let dir = tempfile::tempdir().unwrap();
        let tp = TopicPartition {
            topic: "t".into(),
            partition: 0,
        };
        let mut p =
            Partition::open(dir.path(), tp.clone(), TopicConfig::default(), 1 << 20).unwrap();
        let batch = Bytes::from(batch::build_batch(
            Offset(0),
            &[(None, Some(b"v"))],
            0,
            None,
        ));
        p.append(&batch, TimestampMs::now()).unwrap();
        assert_eq!(p.log_end, Offset(1));
        drop(p);
        let pdir = Partition::dir_for(dir.path(), &tp);
        crate::log::open::restart_log_at(&pdir, Offset(100)).unwrap();
        let p = Partition::open(dir.path(), tp, TopicConfig::default(), 1 << 20).unwrap();
        assert_eq!((p.log_start, p.log_end), (Offset(100), Offset(100)));
        assert!(p.epochs.latest().is_none());
    }

    fn batch_at(first: i64, max: i64) -> BatchInfo {
        let bytes = batch::build_batch(Offset(0), &[(None, Some(b"v"))], first, None);
        BatchInfo {
            max_timestamp: TimestampMs(max),
            ..batch::validate(&bytes).unwrap()
        }
    }

    #[test]
    fn timestamps_are_bounded_around_now() {
        let c = TopicConfig {
            timestamp_after_max_ms: 10,
            timestamp_before_max_ms: 100,
            ..TopicConfig::default()
        };
        let now = TimestampMs(1_000);
        assert!(check_timestamps(&batch_at(900, 1_010), now, &c).is_ok());
        assert!(check_timestamps(&batch_at(900, 1_011), now, &c).is_err());
        assert!(check_timestamps(&batch_at(899, 950), now, &c).is_err());
        assert!(check_timestamps(&batch_at(NO_TIMESTAMP, NO_TIMESTAMP), now, &c).is_ok());
        let unlimited = TopicConfig::default();
        assert!(check_timestamps(&batch_at(0, 0), now, &unlimited).is_ok());
    }
}
