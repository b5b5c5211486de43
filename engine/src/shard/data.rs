//! The data path on a shard: Produce, Fetch (and its long poll), ListOffsets and
//! producer ids, each run on the partition's owner wherever it is called.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::select_all;

use super::txns::TxnCheck;
use super::{LocalFuture, Shard, is_internal_topic, shard_of};
use crate::error::EngineError;
use crate::log::partition::{self, Appended, FetchedData, Isolation, PartitionRef};
use crate::log::read;
use crate::types::{Offset, ShardId, TimestampMs, TopicPartition};

/// How often DeleteRecords looks at the followers' reported log starts
/// (they report with every fetch).
const LOW_WATERMARK_POLL: Duration = Duration::from_millis(20);

/// How many replicas must have a batch before the producer is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    None,
    Leader,
    All,
}

/// A successful produce to one partition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Produced {
    pub base_offset: Offset,
    pub log_start: Offset,
}

/// The offset a ListOffsets query asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    /// read_committed's latest: the last stable offset.
    LatestStable,
    MaxTimestamp,
    /// The first batch whose max timestamp is at least this.
    Timestamp(TimestampMs),
}

/// Answer to an [`OffsetQuery`]; `offset` is `None` when no batch matches the
/// timestamp. For timestamp queries `batch` holds the matching stored batch: the
/// offset is its base offset, and the caller may refine it to the first record
/// at or after the target by decoding the records.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedOffset {
    pub offset: Option<Offset>,
    pub timestamp: Option<TimestampMs>,
    pub batch: Option<Bytes>,
    /// The leader epoch of the record at `offset` (-1: unknown); for the
    /// latest offset, the partition's latest epoch, as Kafka answers.
    pub leader_epoch: i32,
}

/// A refused Produce partition entry. `log_start` is the partition's log start
/// offset when the log itself refused the batches (producer state, timestamps):
/// Kafka's answer carries it then (`ReplicaManager.appendToLocalLog`), and the
/// Java producer reads it on OUT_OF_ORDER_SEQUENCE_NUMBER to tell a truncated
/// log from a lost write.
#[derive(Clone, Debug, PartialEq)]
pub struct ProduceRefused {
    pub error: EngineError,
    pub log_start: Option<Offset>,
}

impl ProduceRefused {
    pub(crate) fn without_log_start(error: EngineError) -> Self {
        ProduceRefused {
            error,
            log_start: None,
        }
    }
}

/// Refusals for which Kafka reports the log start offset: every error of the
/// log's own validation except the "known" ones its `appendToLocalLog` answers
/// without it (unknown partition, too large, corrupt, storage).
fn refusal_reports_log_start(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::OutOfOrderSequence { .. }
            | EngineError::InvalidProducerEpoch
            | EngineError::UnknownProducerId
            | EngineError::InvalidTimestamp { .. }
    )
}

impl Shard {
    /// Appends to a partition wherever it lives. The append itself happens before
    /// this returns (locally) or in ring order (remotely), so requests pipelined on
    /// one connection keep their order; the future resolves when `acks` is met.
    /// `txn`: how a transactional batch is checked with its coordinator
    /// first (see [`Self::produce_in_txn`]).
    pub fn produce(
        self: &Rc<Self>,
        tp: TopicPartition,
        records: Bytes,
        acks: Acks,
        txn: Option<TxnCheck>,
    ) -> LocalFuture<Result<Produced, ProduceRefused>> {
        if is_internal_topic(&tp.topic) {
            let e = EngineError::InvalidTopicName(format!(
                "{} is written only by the broker",
                tp.topic
            ));
            return Box::pin(async move { Err(ProduceRefused::without_log_start(e)) });
        }
        let owner = shard_of(&tp, self.shards());
        if owner == self.id {
            return self.produce_in_txn(tp, records, acks, txn);
        }
        let fut = self.invoke_on(owner, move |s| s.produce_in_txn(tp, records, acks, txn));
        Box::pin(async move { fut.await.map_err(ProduceRefused::without_log_start)? })
    }

    /// [`Self::produce_local`], with the log start offset a refusal reports.
    pub(crate) fn produce_answered(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: Acks,
    ) -> LocalFuture<Result<Produced, ProduceRefused>> {
        let log_start = self.partition(tp).ok().map(|c| c.state.borrow().log_start);
        let fut = self.produce_local(tp, records, acks);
        Box::pin(async move {
            fut.await.map_err(|error| ProduceRefused {
                log_start: log_start.filter(|_| refusal_reports_log_start(&error)),
                error,
            })
        })
    }

    pub(crate) fn produce_local(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: Acks,
    ) -> LocalFuture<Result<Produced, EngineError>> {
        self.produce_local_from(tp, records, acks, false)
    }

    /// A coordinator's own batch (no sequence; see
    /// `Partition::append_as_coordinator`), acks=all.
    pub(crate) fn produce_as_coordinator(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
    ) -> LocalFuture<Result<Produced, EngineError>> {
        self.produce_local_from(tp, records, Acks::All, true)
    }

    fn produce_local_from(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: Acks,
        as_coordinator: bool,
    ) -> LocalFuture<Result<Produced, EngineError>> {
        let cell = match self.led_partition(tp) {
            Ok(c) => c,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        if acks == Acks::All
            && let Err(e) = cell.state.borrow().check_min_isr()
        {
            return Box::pin(async move { Err(e) });
        }
        let appended = if as_coordinator {
            (cell.state.borrow_mut()).append_as_coordinator(records, TimestampMs::now())
        } else {
            cell.state.borrow_mut().append(records, TimestampMs::now())
        };
        let (base_offset, end) = match appended {
            Ok(Appended::New {
                base_offset,
                end_offset,
            }) => (base_offset, end_offset),
            Ok(Appended::Duplicate { base_offset }) => (base_offset, base_offset.next(1)),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        cell.flush_event.notify();
        let log_start = cell.state.borrow().log_start;
        let done = Produced {
            base_offset,
            log_start,
        };
        if acks == Acks::None {
            return Box::pin(async move { Ok(done) });
        }
        let rx = match acks {
            Acks::All => cell.state.borrow_mut().wait_durable(end),
            _ => cell.state.borrow_mut().wait_local(end),
        };
        Box::pin(async move {
            rx.await.map_err(|_| EngineError::ShuttingDown)??;
            Ok(done)
        })
    }

    /// Reads batches from `offset`, at most `max_bytes` (but at least one batch).
    pub fn fetch(
        self: &Rc<Self>,
        tp: TopicPartition,
        offset: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> LocalFuture<Result<FetchedData, EngineError>> {
        let owner = shard_of(&tp, self.shards());
        if owner == self.id {
            return Box::pin(Self::fetch_local(
                self.led_partition(&tp),
                offset,
                max_bytes,
                isolation,
            ));
        }
        let fut = self.invoke_on(owner, move |s| {
            Self::fetch_local(s.led_partition(&tp), offset, max_bytes, isolation)
        });
        Box::pin(async move { fut.await? })
    }

    async fn fetch_local(
        cell: Result<PartitionRef, EngineError>,
        offset: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<FetchedData, EngineError> {
        partition::fetch(&cell?, offset, max_bytes, isolation).await
    }

    /// Waits until the high watermark of any of these partitions passes the given
    /// offset, or until `deadline`. Used by long-polling fetches; a follower's
    /// (`replica`) waits for the leader's durable end instead.
    pub async fn wait_for_data(
        self: &Rc<Self>,
        watch: Vec<(TopicPartition, Offset)>,
        deadline: Instant,
        replica: bool,
        isolation: Isolation,
    ) {
        let mut by_shard: HashMap<ShardId, Vec<(TopicPartition, Offset)>> = HashMap::new();
        for (tp, o) in watch {
            by_shard
                .entry(shard_of(&tp, self.shards()))
                .or_default()
                .push((tp, o));
        }
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
        for (owner, list) in by_shard {
            if owner == self.id {
                waits.push(Box::pin(
                    self.wait_local(list, deadline, replica, isolation),
                ));
            } else {
                let fut = self.invoke_on(owner, move |s| async move {
                    s.wait_local(list, deadline, replica, isolation).await
                });
                waits.push(Box::pin(async move {
                    let _ = fut.await;
                }));
            }
        }
        if waits.is_empty() {
            return;
        }
        let _ = compio::time::timeout_at(deadline, select_all(waits)).await;
    }

    async fn wait_local(
        &self,
        list: Vec<(TopicPartition, Offset)>,
        deadline: Instant,
        replica: bool,
        isolation: Isolation,
    ) {
        let mut rxs = Vec::new();
        for (tp, offset) in list {
            let Ok(cell) = self.partition(&tp) else {
                return;
            };
            let mut p = cell.state.borrow_mut();
            // The last stable offset moves only with the high watermark (a
            // marker is stable once replicated), so both wait for its moves.
            let visible = if replica {
                p.durable_end
            } else if isolation == Isolation::ReadCommitted {
                p.last_stable_offset()
            } else {
                p.high_watermark
            };
            if visible > offset {
                return;
            }
            rxs.push(p.watch_data());
        }
        if rxs.is_empty() {
            return;
        }
        let _ = compio::time::timeout_at(deadline, select_all(rxs)).await;
    }

    /// Answers a ListOffsets query for one partition.
    pub fn list_offset(
        self: &Rc<Self>,
        tp: TopicPartition,
        q: OffsetQuery,
    ) -> LocalFuture<Result<ListedOffset, EngineError>> {
        let owner = shard_of(&tp, self.shards());
        if owner == self.id {
            return Box::pin(Self::list_offset_local(self.led_partition(&tp), q));
        }
        let fut = self.invoke_on(owner, move |s| {
            Self::list_offset_local(s.led_partition(&tp), q)
        });
        Box::pin(async move { fut.await? })
    }

    /// OffsetsForLeaderEpoch on the leader: where `requested` ends in this
    /// log, as (epoch, end offset). `current` (≥ 0) is the leader epoch the
    /// client believes in: older is FENCED_LEADER_EPOCH, newer
    /// UNKNOWN_LEADER_EPOCH, as Kafka checks it.
    pub fn end_offset_for_epoch(
        self: &Rc<Self>,
        tp: TopicPartition,
        current: i32,
        requested: i32,
    ) -> LocalFuture<Result<(i32, i64), EngineError>> {
        let owner = shard_of(&tp, self.shards());
        let answer = move |cell: Result<PartitionRef, EngineError>| {
            let cell = cell?;
            let p = cell.state.borrow();
            if current >= 0 && current < p.leader_epoch {
                return Err(EngineError::FencedLeaderEpoch {
                    current: p.leader_epoch,
                    given: current,
                });
            }
            if current > p.leader_epoch {
                return Err(EngineError::UnknownLeaderEpoch {
                    current: p.leader_epoch,
                    given: current,
                });
            }
            Ok((p.epochs_for_clients()).offsets_for_leader_epoch(requested, p.log_end))
        };
        if owner == self.id {
            let r = answer(self.led_partition(&tp));
            return Box::pin(async move { r });
        }
        let fut = self.invoke_on(owner, move |s| {
            let r = answer(s.led_partition(&tp));
            async move { r }
        });
        Box::pin(async move { fut.await? })
    }

    /// DeleteRecords for one partition, on its leader: the log starts at
    /// `before` (the high watermark when `None`) from now on. The new log
    /// start is stored before anything is answered; in a cluster the answer
    /// then waits, until `timeout`, for every in-sync follower to report
    /// the same log start (Kafka's low watermark), which it learns from its
    /// next fetch. Returns the low watermark.
    pub fn delete_records(
        self: &Rc<Self>,
        tp: TopicPartition,
        before: Option<Offset>,
        timeout: Duration,
    ) -> LocalFuture<Result<Offset, EngineError>> {
        if is_internal_topic(&tp.topic) {
            let e = EngineError::InvalidTopicName(format!(
                "cannot delete records of internal topic {}",
                tp.topic
            ));
            return Box::pin(async move { Err(e) });
        }
        let owner = shard_of(&tp, self.shards());
        if owner != self.id {
            let fut = self.invoke_on(owner, move |s| s.delete_records(tp, before, timeout));
            return Box::pin(async move { fut.await? });
        }
        let cell = self.led_partition(&tp);
        Box::pin(async move {
            let cell = cell?;
            let start = cell.state.borrow_mut().delete_records(before)?;
            cell.store_log_start().await?;
            let deadline = Instant::now() + timeout;
            loop {
                let low = cell.state.borrow().low_watermark();
                if low >= start {
                    return Ok(low);
                }
                if Instant::now() >= deadline {
                    return Err(EngineError::TimedOut(format!(
                        "the in-sync replicas of {tp} reached log start {low}, not {start}"
                    )));
                }
                compio::time::sleep(LOW_WATERMARK_POLL).await;
            }
        })
    }

    async fn list_offset_local(
        cell: Result<PartitionRef, EngineError>,
        q: OffsetQuery,
    ) -> Result<ListedOffset, EngineError> {
        let cell = cell?;
        let none = ListedOffset {
            offset: None,
            timestamp: None,
            batch: None,
            leader_epoch: -1,
        };
        let (hw, start, target, candidates) = {
            let p = cell.state.borrow();
            let target = match q {
                OffsetQuery::Earliest => {
                    return Ok(ListedOffset {
                        offset: Some(p.log_start),
                        leader_epoch: p.epochs_for_clients().epoch_at(p.log_start),
                        ..none
                    });
                }
                OffsetQuery::Latest => {
                    return Ok(ListedOffset {
                        offset: Some(p.high_watermark),
                        leader_epoch: p.epochs_for_clients().latest().unwrap_or(-1),
                        ..none
                    });
                }
                OffsetQuery::LatestStable => {
                    return Ok(ListedOffset {
                        offset: Some(p.last_stable_offset()),
                        leader_epoch: p.epochs_for_clients().latest().unwrap_or(-1),
                        ..none
                    });
                }
                OffsetQuery::MaxTimestamp => match p.max_timestamp() {
                    Some(t) => t,
                    None => return Ok(none),
                },
                OffsetQuery::Timestamp(t) => t,
            };
            (
                p.high_watermark,
                p.log_start,
                target,
                p.timestamp_candidates(target)?,
            )
        };
        for (file, from, to) in candidates {
            if let Some(hit) = read::find_timestamp(&file, from, to, target).await? {
                if hit.base_offset >= hw {
                    break;
                }
                let at = hit.base_offset.max(start);
                return Ok(ListedOffset {
                    offset: Some(at),
                    timestamp: Some(hit.max_timestamp),
                    batch: Some(hit.batch),
                    leader_epoch: cell.state.borrow().epochs_for_clients().epoch_at(at),
                });
            }
        }
        Ok(none)
    }

    /// A fresh producer id for InitProducerId, with epoch 0: from this
    /// broker's file-backed blocks alone, from the quorum's blocks in a cluster
    /// (so that no two brokers ever hand out the same id).
    pub async fn init_producer_id(self: &Rc<Self>) -> Result<(u64, u16), EngineError> {
        if self.shared.cluster.is_some() {
            return Ok((self.producer_id_from_quorum().await?, 0));
        }
        Ok((self.shared.producer_ids.allocate()?, 0))
    }
}
