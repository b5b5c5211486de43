//! Fetch with long polling: read every requested partition (on its shard); if
//! fewer than `min_bytes` came back, wait until any of them grows or `max_wait_ms`
//! passes, then read again. Partitions are filled in request order up to the
//! request's `max_bytes` (at most [`FETCH_MAX_BYTES`]), always including the
//! first non-empty one whole, as Kafka does; no more than that is read either. Fetch sessions (KIP-227) are not kept: every answer is a full one
//! with session id 0, which clients accept.

use std::rc::Rc;
use std::time::{Duration, Instant};

use brook_engine::log::partition::{FetchedData, Isolation};
use brook_engine::{EngineError, Offset, TopicPartition};
use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};

use crate::errors;
use crate::quota::Direction;
use crate::server::ShardServer;
use brook_engine::meta::acls::Operation;

/// Longest wait honoured, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// Kafka's broker-side `fetch.max.bytes` default: the most record bytes one Fetch
/// response carries (beyond the first batch), whatever the client asks.
pub const FETCH_MAX_BYTES: usize = 57_671_680;

/// The client id prefix of Brook's follower fetchers; the incarnation follows.
pub const REPLICA_CLIENT_PREFIX: &str = "brook-replica-fetcher/";

/// Most partitions read at once for one Fetch.
const WAVE_PARTITIONS: usize = 64;

struct Wanted {
    topic: TopicName,
    tp: TopicPartition,
    index: i32,
    /// The fetch offset as sent; Kafka answers a negative one OFFSET_OUT_OF_RANGE.
    fetch_offset: i64,
    max_bytes: usize,
    /// A follower's: the epoch of its last batch (Fetch v12+), -1 otherwise.
    last_fetched_epoch: i32,
    /// A follower's: its log start (Fetch v5+), if it sent one.
    log_start: Option<Offset>,
}

/// One partition's read: its data and, for a follower whose log diverged,
/// the epoch and offset it must truncate to.
struct Read {
    data: FetchedData,
    diverging: Option<(i32, Offset)>,
    /// A follower's records held back by the leader's replication throttle.
    throttled: bool,
}

impl Wanted {
    fn offset(&self) -> Result<Offset, EngineError> {
        u64::try_from(self.fetch_offset)
            .map(Offset)
            .map_err(|_| EngineError::NegativeOffset(self.fetch_offset))
    }
}

fn wanted(req: &FetchRequest) -> Vec<Wanted> {
    let mut out = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            out.push(Wanted {
                topic: t.topic.clone(),
                tp: TopicPartition {
                    topic: t.topic.to_string(),
                    partition: p.partition.max(0) as u32,
                },
                index: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                last_fetched_epoch: p.last_fetched_epoch,
                log_start: u64::try_from(p.log_start_offset).ok().map(Offset),
            });
        }
    }
    out
}

/// Reads every wanted partition, holding no more than the response can carry:
/// partitions are read concurrently in waves whose `max_bytes` fit in what is
/// left of `budget`. Once it is spent, the rest are still read for their high
/// watermark and log start, one batch at most each (the response leaves those
/// records out). Without this, a Fetch naming many partitions with a large
/// `partition_max_bytes` made the broker read all of them to send `max_bytes`.
async fn read_all(
    srv: &Rc<ShardServer>,
    wants: &[Wanted],
    budget: usize,
    replica: Option<(i32, u64)>,
    isolation: Isolation,
) -> Vec<Result<Read, EngineError>> {
    let mut out = Vec::with_capacity(wants.len());
    let mut left = budget;
    let mut rest = wants;
    while !rest.is_empty() {
        let mut planned = 0usize;
        let mut reads = Vec::new();
        for w in rest.iter().take(WAVE_PARTITIONS) {
            let cap = w.max_bytes.min(left).max(1);
            if !reads.is_empty() && left > 0 && planned + cap > left {
                break;
            }
            planned += cap;
            let tp = w.tp.clone();
            let read: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> =
                match (w.offset(), replica) {
                    (Ok(offset), None) => {
                        let f = srv.shard.fetch(tp, offset, cap, isolation);
                        Box::pin(async move {
                            f.await.map(|data| Read {
                                data,
                                diverging: None,
                                throttled: false,
                            })
                        })
                    }
                    (Ok(offset), Some(node)) => {
                        let from = (w.last_fetched_epoch, w.log_start);
                        let f = (srv.shard).replica_fetch(tp, node, offset, from, cap);
                        Box::pin(async move {
                            f.await.map(|r| Read {
                                data: FetchedData {
                                    records: r.records,
                                    high_watermark: r.high_watermark,
                                    log_start: r.log_start,
                                    last_stable: r.high_watermark,
                                    aborted: None,
                                },
                                diverging: r.diverging,
                                throttled: r.throttled,
                            })
                        })
                    }
                    (Err(e), _) => Box::pin(std::future::ready(Err(e))),
                };
            reads.push(read);
        }
        rest = &rest[reads.len()..];
        let got = join_all(reads).await;
        let read: usize = got
            .iter()
            .map(|r| r.as_ref().map_or(0, |d| d.data.records.len()))
            .sum();
        left = left.saturating_sub(read);
        out.extend(got);
    }
    out
}

/// Record bytes this request may be answered with (and read for).
fn response_budget(req: &FetchRequest) -> usize {
    if req.max_bytes > 0 {
        (req.max_bytes as usize).min(FETCH_MAX_BYTES)
    } else {
        FETCH_MAX_BYTES
    }
}

/// As Kafka's `FetchResponse.partitionResponse`: an error entry carries -1 for
/// the high watermark, last stable offset and log start, and no aborted
/// transactions list; a read_uncommitted answer has none either (null), a
/// read_committed one the aborted transactions among the records returned.
fn partition_data(w: &Wanted, r: Result<Read, EngineError>) -> PartitionData {
    let base = PartitionData::default().with_partition_index(w.index);
    match r {
        Ok(Read {
            data: d, diverging, ..
        }) => base
            .with_diverging_epoch(match diverging {
                Some((epoch, end)) => EpochEndOffset::default()
                    .with_epoch(epoch)
                    .with_end_offset(end.0 as i64),
                None => EpochEndOffset::default(),
            })
            .with_high_watermark(d.high_watermark.0 as i64)
            .with_last_stable_offset(d.last_stable.0 as i64)
            .with_log_start_offset(d.log_start.0 as i64)
            .with_aborted_transactions(d.aborted.map(|list| {
                list.into_iter()
                    .map(|a| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(a.producer_id as i64))
                            .with_first_offset(a.first_offset.0 as i64)
                    })
                    .collect()
            }))
            .with_records(Some(d.records)),
        Err(e) => base
            .with_error_code(errors::code(&e))
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            // A follower past the log start is told where the log starts
            // now, so it can start again there; clients get Kafka's -1.
            .with_log_start_offset(match (&e, w.log_start) {
                (EngineError::OffsetOutOfRange { log_start, .. }, Some(_)) => log_start.0 as i64,
                _ => -1,
            })
            .with_aborted_transactions(None)
            .with_records(Some(Bytes::new())),
    }
}

/// Bytes of records in a response, for the consumer quota.
fn max_bytes_sent(topics: &[FetchableTopicResponse]) -> usize {
    topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
        .sum()
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: FetchRequest,
    client: super::ClientInfo,
) -> FetchResponse {
    let wants = wanted(&req);
    // A follower needs the cluster's CLUSTER_ACTION, a consumer READ on each topic.
    if req.replica_id.0 >= 0 && !srv.allowed_on_cluster(&client, Operation::ClusterAction) {
        return FetchResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let (wants, denied): (Vec<Wanted>, Vec<Wanted>) = (wants.into_iter()).partition(|w| {
        req.replica_id.0 >= 0 || srv.allowed_topic(&client, Operation::Read, &w.topic)
    });
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let budget_bytes = response_budget(&req);
    // A follower broker (replica id ≥ 0) reads what is fsynced here and
    // reports its own progress; clients read below the high watermark.
    // Brook's fetcher names its broker's start in its client id
    // (`brook-replica-fetcher/<incarnation>`), so a fetch sent before a
    // restart is told apart (Kafka's replica broker epoch, KIP-903).
    let incarnation = (client.client_id.strip_prefix(REPLICA_CLIENT_PREFIX))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let replica = (req.replica_id.0 >= 0).then_some((req.replica_id.0, incarnation));
    let isolation = if req.isolation_level == 1 && replica.is_none() {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    let mut results = read_all(&srv, &wants, budget_bytes, replica, isolation).await;
    loop {
        let total: usize = results
            .iter()
            .map(|r| r.as_ref().map_or(0, |d| d.data.records.len()))
            .sum();
        let any_error = results
            .iter()
            .any(|r| r.as_ref().map_or(true, |d| d.diverging.is_some()));
        if total >= min_bytes || any_error || Instant::now() >= deadline || srv.stop.is_fired() {
            break;
        }
        // A throttled partition has data it may not send yet: it waits out
        // the fetch's time rather than wake it at once, as in Kafka.
        let watch: Vec<_> = (wants.iter().zip(&results))
            .filter(|(_, r)| !r.as_ref().is_ok_and(|r| r.throttled))
            .filter_map(|(w, _)| Some((w.tp.clone(), w.offset().ok()?)))
            .collect();
        if watch.is_empty() {
            compio::time::sleep_until(deadline).await;
            break;
        }
        srv.shard
            .wait_for_data(watch, deadline, replica.is_some(), isolation)
            .await;
        results = read_all(&srv, &wants, budget_bytes, replica, isolation).await;
    }
    // The first non-empty partition always goes whole; later ones while they fit.
    let mut budget = budget_bytes;
    let mut sent_any = false;
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for (w, mut r) in wants.iter().zip(results) {
        if let Ok(Read { data: d, .. }) = &mut r
            && !d.records.is_empty()
        {
            if sent_any && d.records.len() > budget {
                d.records = Bytes::new();
            } else {
                budget = budget.saturating_sub(d.records.len());
                sent_any = true;
            }
        }
        let pd = partition_data(w, r);
        match topics.last_mut() {
            Some(t) if t.topic == w.topic => t.partitions.push(pd),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(w.topic.clone())
                    .with_partitions(vec![pd]),
            ),
        }
    }
    for w in &denied {
        let pd = PartitionData::default()
            .with_partition_index(w.index)
            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
        match topics.iter_mut().find(|t| t.topic == w.topic) {
            Some(t) => t.partitions.push(pd),
            None => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(w.topic.clone())
                    .with_partitions(vec![pd]),
            ),
        }
    }
    let sent = max_bytes_sent(&topics);
    // Replication is not a client: no consumer quota applies to it.
    let sent = if replica.is_some() { 0 } else { sent };
    let throttle = srv.throttle(&client, Direction::Fetch, sent);
    if !throttle.is_zero() {
        compio::time::sleep(throttle).await;
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics)
        .with_throttle_time_ms(throttle.as_millis().min(i32::MAX as u128) as i32)
}
