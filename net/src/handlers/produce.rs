//! Produce: append each partition's batches on the shard that owns it, then answer
//! when `acks` is met. The appends are issued before this function returns (see
//! `dispatch`), which keeps pipelined requests on one connection in order — what
//! idempotent producers with several requests in flight rely on.
//!
//! acks=all waits at most the request's `timeout_ms` (Kafka's produce
//! purgatory): a leader that cannot reach its ISR answers REQUEST_TIMED_OUT
//! then (the batch stays in its log; an idempotent retry is deduplicated),
//! rather than holding the request until it learns it was replaced.
//!
//! From v10 (KIP-951) a partition refused with NOT_LEADER_OR_FOLLOWER carries
//! the current leader and its epoch, and the response the leaders' endpoints,
//! so that a client follows a failover without a metadata round trip.

use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use brook_engine::log::batch::any_transactional;
use brook_engine::shard::txns::TxnCheck;
use brook_engine::{Acks, EngineError, TopicPartition};
use futures::FutureExt;
use futures::future::{Either, join_all, select};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::quota::Direction;
use crate::server::ShardServer;
use brook_engine::meta::acls::Operation;

fn acks_of(raw: i16) -> Option<Acks> {
    match raw {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    }
}

fn failed(index: i32, code: i16, log_start: Option<i64>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_start_offset(log_start.unwrap_or(-1))
        .with_log_append_time_ms(-1)
}

/// Kafka refuses a whole request carrying a transactional batch without a
/// transactional id (`KafkaApis.handleProduceRequest`): no coordinator would
/// ever end the transaction it opens.
fn has_transactional_batch(req: &ProduceRequest) -> bool {
    req.topic_data.iter().any(|t| {
        t.partition_data
            .iter()
            .any(|p| p.records.as_ref().is_some_and(|r| any_transactional(r)))
    })
}

pub fn handle(
    srv: &Rc<ShardServer>,
    req: ProduceRequest,
    version: i16,
    client: &super::ClientInfo,
) -> impl Future<Output = ProduceResponse> + 'static {
    let shard = srv.shard.clone();
    let acks = acks_of(req.acks);
    let deadline = (acks == Some(Acks::All))
        .then(|| Instant::now() + Duration::from_millis(req.timeout_ms.max(0) as u64));
    // A transactional batch without a transactional id, or an id the
    // principal may not write.
    let txn_refused = match &req.transactional_id {
        None => has_transactional_batch(&req),
        Some(id) => !srv.allowed_txn(client, Operation::Write, id),
    };
    let refuse = if txn_refused {
        Some(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else if acks.is_none() {
        Some(ResponseError::InvalidRequiredAcks.code())
    } else {
        None
    };
    // A transactional batch is checked with its coordinator first: added to
    // the transaction from v12 (transaction version 2), verified otherwise.
    let txn = req.transactional_id.as_ref().map(|id| TxnCheck {
        transactional_id: id.to_string(),
        add: version >= TXN_V2_VERSION,
    });
    // Phase 1, synchronous: issue every append now, in request order (a
    // transactional batch that waits for its coordinator's check is issued
    // after it, before any later batch of its producer on that partition).
    let mut bytes = 0usize;
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let mut parts = Vec::with_capacity(t.partition_data.len());
        let denied = (!srv.allowed_topic(client, Operation::Write, &t.name))
            .then_some(ResponseError::TopicAuthorizationFailed.code());
        for p in t.partition_data {
            let index = p.index;
            let pending = match (refuse.or(denied), p.records, u32::try_from(index)) {
                (Some(code), _, _) => Err(code),
                (None, None, _) => Err(ResponseError::CorruptMessage.code()),
                (None, Some(_), Err(_)) => Err(errors::code(&EngineError::UnknownTopicOrPartition)),
                (None, Some(records), Ok(partition)) => {
                    bytes += records.len();
                    let tp = TopicPartition {
                        topic: t.name.to_string(),
                        partition,
                    };
                    Ok(shard.produce(tp, records, acks.unwrap_or(Acks::All), txn.clone()))
                }
            };
            parts.push((index, pending));
        }
        topics.push((t.name, parts));
    }
    let throttle = srv.throttle(client, Direction::Produce, bytes);
    // Phase 2: wait for durability (acks) of every partition; with acks=all,
    // no longer than the request's deadline (one timer for the request).
    async move {
        let expired = deadline
            .map(|at| compio::time::sleep(at.saturating_duration_since(Instant::now())).shared());
        let mut responses = Vec::with_capacity(topics.len());
        for (name, parts) in topics {
            let (indexes, pendings): (Vec<i32>, Vec<_>) = parts.into_iter().unzip();
            let results = join_all(pendings.into_iter().map(|p| {
                let expired = expired.clone();
                async move {
                    match p {
                        Err(code) => Err((code, None)),
                        Ok(fut) => {
                            let answered = match expired {
                                None => fut.await,
                                Some(timer) => match select(fut, timer).await {
                                    Either::Left((r, _)) => r,
                                    Either::Right(_) => {
                                        return Err((ResponseError::RequestTimedOut.code(), None));
                                    }
                                },
                            };
                            answered.map_err(|e| {
                                tracing::debug!(error = %e.error, "produce failed");
                                let code = match e.error {
                                    // KIP-890: v11+ clients abort the transaction.
                                    EngineError::InvalidTxnState(_)
                                        if version >= TRANSACTION_ABORTABLE_VERSION =>
                                    {
                                        ResponseError::TransactionAbortable.code()
                                    }
                                    ref e => errors::code(e),
                                };
                                (code, e.log_start.map(|o| o.0 as i64))
                            })
                        }
                    }
                }
            }))
            .await;
            let partition_responses = indexes
                .into_iter()
                .zip(results)
                .map(|(index, r)| match r {
                    Ok(p) => PartitionProduceResponse::default()
                        .with_index(index)
                        .with_base_offset(p.base_offset.0 as i64)
                        .with_log_start_offset(p.log_start.0 as i64)
                        .with_log_append_time_ms(-1),
                    Err((code, log_start)) => failed(index, code, log_start),
                })
                .collect();
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        let node_endpoints = if version >= LEADER_HINTS_VERSION {
            leader_hints(&shard, &mut responses)
        } else {
            Vec::new()
        };
        // Over quota: answer with the throttle time, and only after it.
        if !throttle.is_zero() {
            compio::time::sleep(throttle).await;
        }
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints)
            .with_throttle_time_ms(throttle.as_millis().min(i32::MAX as u128) as i32)
    }
}

/// The first Produce version whose clients know TRANSACTION_ABORTABLE.
const TRANSACTION_ABORTABLE_VERSION: i16 = 11;
/// The first Produce version of transaction version 2.
const TXN_V2_VERSION: i16 = 12;

/// The first Produce version with KIP-951's leader hints.
const LEADER_HINTS_VERSION: i16 = 10;

/// KIP-951: each partition refused with NOT_LEADER_OR_FOLLOWER gets the
/// current leader and epoch from this broker's image; returns the endpoints
/// of those leaders.
fn leader_hints(
    shard: &brook_engine::Shard,
    responses: &mut [TopicProduceResponse],
) -> Vec<NodeEndpoint> {
    let Some(img) = shard.cluster_image() else {
        return Vec::new();
    };
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    let mut leaders = std::collections::BTreeSet::new();
    for t in responses.iter_mut() {
        for p in t
            .partition_responses
            .iter_mut()
            .filter(|p| p.error_code == not_leader)
        {
            let Some(pi) = img.partition(t.name.as_str(), p.index.max(0) as u32) else {
                continue;
            };
            if pi.leader < 0 {
                continue;
            }
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(pi.leader))
                .with_leader_epoch(pi.leader_epoch);
            leaders.insert(pi.leader);
        }
    }
    (leaders.into_iter())
        .filter_map(|n| {
            let b = img.brokers.get(&n)?;
            Some(
                NodeEndpoint::default()
                    .with_node_id(BrokerId(n))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_port(b.port)
                    .with_rack(b.rack.clone().map(StrBytes::from_string)),
            )
        })
        .collect()
}
