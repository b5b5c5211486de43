//! The transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and
//! TxnOffsetCommit from transactional producers (EndTxn v5 and
//! TxnOffsetCommit v5 are transaction version 2's), AddPartitionsToTxn v4–5
//! from partition leaders on other brokers (KIP-890's checks of a
//! transactional batch), WriteTxnMarkers from a coordinator on another
//! broker, and
//! DescribeTransactions / ListTransactions for `kafka-transactions`. The
//! coordinator itself is `brook_engine::shard::txns`.

use brook_engine::meta::acls::Operation;
use std::collections::HashMap;
use std::rc::Rc;

use brook_engine::coord::group::CommittedOffset;
use brook_engine::log::batch::Marker;
use brook_engine::shard::groups::CommitRequest;
use brook_engine::shard::txns::{MarkerRequest, TxnCheck};
use brook_engine::{EngineError, Offset, TimestampMs, TopicPartition};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::handlers::topic_name;
use crate::server::ShardServer;

/// The error code for `e` at a request version: PRODUCER_FENCED exists from
/// the versions KIP-588 names (`fenced_from`); older clients are told
/// INVALID_PRODUCER_EPOCH, as Kafka does.
fn txn_code(e: &EngineError, version: i16, fenced_from: i16) -> i16 {
    match e {
        EngineError::ProducerFenced { .. } if version < fenced_from => {
            ResponseError::InvalidProducerEpoch.code()
        }
        e => errors::code(e),
    }
}

fn code_of(r: &Result<(), EngineError>, version: i16, fenced_from: i16) -> i16 {
    r.as_ref()
        .err()
        .map_or(errors::NONE, |e| txn_code(e, version, fenced_from))
}

/// AddPartitionsToTxn v0–3 (a client's single transaction). A partition of a
/// topic that does not exist fails the request: it is
/// UNKNOWN_TOPIC_OR_PARTITION, the others OPERATION_NOT_ATTEMPTED.
/// v4–5 come from partition leaders (KIP-890), see [`add_partitions_for_leader`].
pub async fn add_partitions(
    srv: Rc<ShardServer>,
    req: AddPartitionsToTxnRequest,
    version: i16,
    client: super::ClientInfo,
) -> AddPartitionsToTxnResponse {
    if version >= 4 {
        // From another broker: the cluster's CLUSTER_ACTION.
        if !srv.allowed_on_cluster(&client, Operation::ClusterAction) {
            return AddPartitionsToTxnResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
        }
        return add_partitions_for_leader(srv, req).await;
    }
    // WRITE on the transactional id, then on each topic: a topic the
    // principal may not write fails the request, as an unknown one does.
    let txn_denied = !srv.allowed_txn(
        &client,
        Operation::Write,
        &req.v3_and_below_transactional_id,
    );
    let catalog = srv.shard.catalog();
    let mut tps = Vec::new();
    let mut unknown = Vec::new();
    let mut denied = Vec::new();
    for t in &req.v3_and_below_topics {
        if !srv.allowed_topic(&client, Operation::Write, &t.name) {
            denied.extend(t.partitions.iter().map(|&p| (t.name.to_string(), p)));
            continue;
        }
        let count = catalog.topics.get(t.name.as_str()).map(|m| m.partitions);
        for &p in &t.partitions {
            match (count, u32::try_from(p)) {
                (Some(n), Ok(p)) if p < n => tps.push(TopicPartition {
                    topic: t.name.to_string(),
                    partition: p,
                }),
                _ => unknown.push((t.name.to_string(), p)),
            }
        }
    }
    let result = if txn_denied {
        Err(EngineError::TransactionalIdAuthorizationFailed)
    } else if !denied.is_empty() {
        Err(EngineError::TopicAuthorizationFailed)
    } else if unknown.is_empty() {
        srv.shard
            .add_to_txn(
                req.v3_and_below_transactional_id.to_string(),
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
                tps,
                1,
            )
            .await
    } else {
        Err(EngineError::UnknownTopicOrPartition)
    };
    let all = code_of(&result, version, 2);
    let topics = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let results = t
                .partitions
                .iter()
                .map(|&p| {
                    let code = if txn_denied || (denied.is_empty() && unknown.is_empty()) {
                        all
                    } else if denied.contains(&(t.name.to_string(), p)) {
                        ResponseError::TopicAuthorizationFailed.code()
                    } else if unknown.contains(&(t.name.to_string(), p)) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        ResponseError::OperationNotAttempted.code()
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(results)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

/// AddPartitionsToTxn v4–5, from another broker's partition leader about
/// the batches it is about to append: each transaction's partitions are
/// verified to be in it (`verify_only`, transaction version 1) or added to it
/// (version 2). Each partition gets its own answer.
async fn add_partitions_for_leader(
    srv: Rc<ShardServer>,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in req.transactions {
        let id = t.transactional_id.to_string();
        let mut topics = Vec::with_capacity(t.topics.len());
        for topic in t.topics {
            let mut rows = Vec::with_capacity(topic.partitions.len());
            for &p in &topic.partitions {
                let r = match u32::try_from(p) {
                    Err(_) => Err(EngineError::UnknownTopicOrPartition),
                    Ok(partition) => {
                        let tp = TopicPartition {
                            topic: topic.name.to_string(),
                            partition,
                        };
                        let (pid, epoch) = (t.producer_id.0, t.producer_epoch);
                        if t.verify_only {
                            srv.shard.verify_in_txn(id.clone(), pid, epoch, tp).await
                        } else {
                            let v = brook_engine::coord::txn::TRANSACTION_VERSION;
                            srv.shard
                                .add_to_txn(id.clone(), pid, epoch, vec![tp], v)
                                .await
                        }
                    }
                };
                rows.push(
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(code_of(&r, i16::MAX, 0)),
                );
            }
            topics.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(topic.name)
                    .with_results_by_partition(rows),
            );
        }
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id)
                .with_topic_results(topics),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the
/// transaction, so that its TxnOffsetCommit is decided with it.
pub async fn add_offsets(
    srv: Rc<ShardServer>,
    req: AddOffsetsToTxnRequest,
    version: i16,
    client: super::ClientInfo,
) -> AddOffsetsToTxnResponse {
    if !srv.allowed_txn(&client, Operation::Write, &req.transactional_id) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if !srv.allowed_group(&client, Operation::Read, &req.group_id) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let tp = TopicPartition {
        topic: brook_engine::coord::group::OFFSETS_TOPIC.to_string(),
        partition: brook_engine::coord::group::offsets_partition_of(&req.group_id),
    };
    let result = srv
        .shard
        .add_to_txn(
            req.transactional_id.to_string(),
            req.producer_id.0,
            req.producer_epoch,
            vec![tp],
            1,
        )
        .await;
    AddOffsetsToTxnResponse::default().with_error_code(code_of(&result, version, 2))
}

/// EndTxn; v5 is transaction version 2's: the epoch is bumped and the
/// answer carries the producer id and epoch to use next.
pub async fn end_txn(
    srv: Rc<ShardServer>,
    req: EndTxnRequest,
    version: i16,
    client: super::ClientInfo,
) -> EndTxnResponse {
    if !srv.allowed_txn(&client, Operation::Write, &req.transactional_id) {
        return EndTxnResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let client_version = if version >= 5 { 2 } else { 1 };
    let result = srv
        .shard
        .end_txn(
            req.transactional_id.to_string(),
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
            client_version,
        )
        .await;
    let (pid, epoch) = match &result {
        Ok((pid, epoch)) => (*pid as i64, *epoch as i16),
        Err(_) => (-1, -1),
    };
    let result = result.map(|_| ());
    EndTxnResponse::default()
        .with_error_code(code_of(&result, version, 2))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
}

/// TxnOffsetCommit: sent to the group coordinator; the offsets count once
/// the transaction commits.
pub async fn txn_offset_commit(
    srv: Rc<ShardServer>,
    req: TxnOffsetCommitRequest,
    version: i16,
    client: super::ClientInfo,
) -> TxnOffsetCommitResponse {
    // WRITE on the transactional id, READ on the group and on each topic.
    let whole = if !srv.allowed_txn(&client, Operation::Write, &req.transactional_id) {
        Some(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else if !srv.allowed_group(&client, Operation::Read, &req.group_id) {
        Some(ResponseError::GroupAuthorizationFailed.code())
    } else {
        None
    };
    let now_ms = TimestampMs::now().0;
    let catalog = srv.shard.catalog();
    let mut offsets = Vec::new();
    let mut refused: HashMap<(String, i32), i16> = HashMap::new();
    for t in &req.topics {
        if whole.is_some() || !srv.allowed_topic(&client, Operation::Read, &t.name) {
            let code = whole.unwrap_or(ResponseError::TopicAuthorizationFailed.code());
            for p in &t.partitions {
                refused.insert((t.name.to_string(), p.partition_index), code);
            }
            continue;
        }
        let count = catalog.topics.get(t.name.as_str()).map(|m| m.partitions);
        for p in &t.partitions {
            let partition = u32::try_from(p.partition_index).ok();
            let offset = u64::try_from(p.committed_offset).ok();
            match (count, partition, offset) {
                (Some(n), Some(part), Some(o)) if part < n => offsets.push((
                    TopicPartition {
                        topic: t.name.to_string(),
                        partition: part,
                    },
                    CommittedOffset {
                        offset: Some(Offset(o)),
                        leader_epoch: Some(p.committed_leader_epoch).filter(|e| *e >= 0),
                        metadata: p
                            .committed_metadata
                            .as_deref()
                            .map(str::to_string)
                            .unwrap_or_default(),
                        commit_timestamp_ms: now_ms,
                    },
                )),
                (Some(n), Some(part), None) if part < n => {
                    refused.insert(
                        (t.name.to_string(), p.partition_index),
                        ResponseError::InvalidCommitOffsetSize.code(),
                    );
                }
                _ => {
                    refused.insert(
                        (t.name.to_string(), p.partition_index),
                        ResponseError::UnknownTopicOrPartition.code(),
                    );
                }
            }
        }
    }
    let result = match (
        u64::try_from(req.producer_id.0),
        u16::try_from(req.producer_epoch),
    ) {
        _ if whole.is_some() => Ok(()),
        (Ok(pid), Ok(epoch)) if version >= 5 => {
            // Transaction version 2: no AddOffsetsToTxn came first; the
            // group's partition joins the transaction here.
            let check = TxnCheck {
                transactional_id: req.transactional_id.to_string(),
                add: true,
            };
            let tp = TopicPartition {
                topic: brook_engine::coord::group::OFFSETS_TOPIC.to_string(),
                partition: brook_engine::coord::group::offsets_partition_of(&req.group_id),
            };
            let added = (srv.shard)
                .check_txn_partition(&check, pid as i64, epoch as i16, &tp)
                .await;
            match added {
                Ok(()) => commit_txn_offsets(&srv, &req, offsets, pid, epoch).await,
                // TxnOffsetCommit clients retry this one.
                Err(EngineError::TxnCoordinatorUnavailable(_)) => {
                    Err(EngineError::ConcurrentTransactions)
                }
                Err(e) => Err(e),
            }
        }
        (Ok(pid), Ok(epoch)) => commit_txn_offsets(&srv, &req, offsets, pid, epoch).await,
        _ => Err(EngineError::InvalidProducerIdMapping {
            given: req.producer_id.0,
        }),
    };
    let code = match code_of(&result, version, 3) {
        // KIP-890: v4+ clients abort the transaction on this one.
        c if c == ResponseError::InvalidTxnState.code() && version >= 4 => {
            ResponseError::TransactionAbortable.code()
        }
        c => c,
    };
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let own = refused.get(&(t.name.to_string(), p.partition_index));
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(own.copied().unwrap_or(code))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

async fn commit_txn_offsets(
    srv: &Rc<ShardServer>,
    req: &TxnOffsetCommitRequest,
    offsets: Vec<(TopicPartition, CommittedOffset)>,
    producer_id: u64,
    epoch: u16,
) -> Result<(), EngineError> {
    let commit = CommitRequest {
        group: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        generation: req.generation_id,
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        offsets,
    };
    srv.shard
        .txn_commit_offsets(commit, producer_id, epoch)
        .await
}

/// WriteTxnMarkers: a coordinator (on another broker) asks this one to end a
/// transaction in the partitions it leads.
pub async fn write_markers(
    srv: Rc<ShardServer>,
    req: WriteTxnMarkersRequest,
    client: super::ClientInfo,
) -> WriteTxnMarkersResponse {
    // From a transaction coordinator: the cluster's CLUSTER_ACTION.
    let allowed = srv.allowed_on_cluster(&client, Operation::ClusterAction);
    let mut out = Vec::new();
    for m in req.markers {
        let mut partitions = Vec::new();
        let mut refused = Vec::new();
        for t in &m.topics {
            for &p in &t.partition_indexes {
                match u32::try_from(p) {
                    Ok(partition) => partitions.push(TopicPartition {
                        topic: t.name.to_string(),
                        partition,
                    }),
                    Err(_) => refused.push((t.name.clone(), p)),
                }
            }
        }
        let results = match (
            u64::try_from(m.producer_id.0),
            u16::try_from(m.producer_epoch),
        ) {
            _ if !allowed => partitions
                .into_iter()
                .map(|tp| (tp, Err(EngineError::ClusterAuthorizationFailed)))
                .collect(),
            (Ok(producer_id), Ok(epoch)) => {
                srv.shard
                    .write_markers_here(MarkerRequest {
                        producer_id,
                        epoch,
                        marker: Marker {
                            commit: m.transaction_result,
                            coordinator_epoch: m.coordinator_epoch,
                        },
                        partitions,
                    })
                    .await
            }
            _ => partitions
                .into_iter()
                .map(|tp| (tp, Err(EngineError::InvalidProducerEpoch)))
                .collect(),
        };
        let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
        let rows = results
            .into_iter()
            .map(|(tp, r)| {
                let code = r.err().map_or(errors::NONE, |e| errors::code(&e));
                (topic_name(&tp.topic), tp.partition as i32, code)
            })
            .chain(
                refused
                    .into_iter()
                    .map(|(t, p)| (t, p, ResponseError::UnknownTopicOrPartition.code())),
            );
        for (name, p, code) in rows {
            let row = WritableTxnMarkerPartitionResult::default()
                .with_partition_index(p)
                .with_error_code(code);
            match topics.iter_mut().find(|t| t.name == name) {
                Some(t) => t.partitions.push(row),
                None => topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(name)
                        .with_partitions(vec![row]),
                ),
            }
        }
        out.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(out)
}

pub async fn describe(
    srv: Rc<ShardServer>,
    req: DescribeTransactionsRequest,
    client: super::ClientInfo,
) -> DescribeTransactionsResponse {
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    let mut states = Vec::new();
    for id in req.transactional_ids {
        let row = TransactionState::default().with_transactional_id(id.clone());
        if !srv.allowed_txn(&client, Operation::Describe, &id) {
            states.push(
                row.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            );
            continue;
        }
        let row = match srv.shard.describe_txn(id.to_string()).await {
            Ok(Some(d)) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for tp in d.partitions {
                    let name = topic_name(&tp.topic);
                    match topics.iter_mut().find(|t| t.topic == name) {
                        Some(t) => t.partitions.push(tp.partition as i32),
                        None => topics.push(
                            TopicData::default()
                                .with_topic(name)
                                .with_partitions(vec![tp.partition as i32]),
                        ),
                    }
                }
                row.with_transaction_state(StrBytes::from_static_str(d.state))
                    .with_transaction_timeout_ms(d.timeout_ms)
                    .with_transaction_start_time_ms(d.start_ms)
                    .with_producer_id(ProducerId(d.producer_id as i64))
                    .with_producer_epoch(d.epoch as i16)
                    .with_topics(topics)
            }
            Ok(None) => row
                .with_error_code(ResponseError::TransactionalIdNotFound.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            Err(e) => row
                .with_error_code(errors::code(&e))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        };
        states.push(row);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions: the ids this broker coordinates, filtered by state,
/// producer id and (v1) how long they have been open.
pub async fn list(
    srv: Rc<ShardServer>,
    req: ListTransactionsRequest,
    client: super::ClientInfo,
) -> ListTransactionsResponse {
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    const STATES: [&str; 8] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let unknown: Vec<StrBytes> = (req.state_filters.iter())
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = TimestampMs::now().0;
    let rows = srv
        .shard
        .list_txns()
        .await
        .into_iter()
        .filter(|d| {
            req.state_filters.is_empty() || req.state_filters.iter().any(|s| s.as_str() == d.state)
        })
        .filter(|d| {
            req.producer_id_filters.is_empty()
                || (req.producer_id_filters.iter()).any(|p| p.0 == d.producer_id as i64)
        })
        .filter(|d| {
            req.duration_filter < 0 || (d.start_ms >= 0 && now - d.start_ms >= req.duration_filter)
        })
        .filter(|d| srv.allowed_txn(&client, Operation::Describe, &d.transactional_id))
        .map(|d| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(d.transactional_id)))
                .with_producer_id(ProducerId(d.producer_id as i64))
                .with_transaction_state(StrBytes::from_static_str(d.state))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(rows)
}
