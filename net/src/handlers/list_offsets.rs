//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, v7) or the first
//! record whose timestamp is at least a given time. The engine finds the batch;
//! this decodes its records (decompressing if needed) to find the record, as
//! Kafka does. For -3 the engine finds the first batch holding the partition's
//! max timestamp and the answer is the first record in it carrying that
//! timestamp (KIP-734 as fixed by KAFKA-16310), with that record's timestamp.

use std::collections::HashSet;
use std::rc::Rc;

use brook_engine::{EngineError, ListedOffset, OffsetQuery, TimestampMs, TopicPartition};
use futures::future::join_all;
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;

use crate::errors;
use crate::server::ShardServer;

/// The query a timestamp asks for at `version`. Kafka answers a negative
/// timestamp that is no special value, or one newer than the request's version
/// (-3 before v7), UNSUPPORTED_VERSION (`isListOffsetsTimestampUnsupported`);
/// the special values past -3 need versions Brook does not list.
fn query_of(ts: i64, version: i16, read_committed: bool) -> Result<OffsetQuery, EngineError> {
    match ts {
        -1 if read_committed => Ok(OffsetQuery::LatestStable),
        -1 => Ok(OffsetQuery::Latest),
        -2 => Ok(OffsetQuery::Earliest),
        -3 if version >= 7 => Ok(OffsetQuery::MaxTimestamp),
        t if t >= 0 => Ok(OffsetQuery::Timestamp(TimestampMs(t))),
        t => Err(EngineError::Unsupported(format!(
            "timestamp {t} in ListOffsets v{version}"
        ))),
    }
}

/// Partitions named more than once in the request (across all its topic
/// entries). Kafka answers each once, INVALID_REQUEST.
fn duplicates(req: &ListOffsetsRequest) -> HashSet<(&str, i32)> {
    let mut seen = HashSet::new();
    let mut twice = HashSet::new();
    for t in &req.topics {
        for p in &t.partitions {
            if !seen.insert((t.name.as_str(), p.partition_index)) {
                twice.insert((t.name.as_str(), p.partition_index));
            }
        }
    }
    twice
}

/// The first record at or after the wanted timestamp in the batch the engine
/// found (for -3, the max timestamp the engine found); falls back to the batch's
/// base offset if the records cannot be decoded.
fn refine(l: &ListedOffset, query: i64) -> (i64, i64) {
    let (offset, ts) = (
        l.offset.map_or(-1, |o| o.0 as i64),
        l.timestamp.map_or(-1, |t| t.0),
    );
    let Some(batch) = &l.batch else {
        return (offset, ts);
    };
    const MAX_TIMESTAMP: i64 = -3;
    let target = if query == MAX_TIMESTAMP { ts } else { query };
    let mut buf = batch.clone();
    match RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => set
            .records
            .iter()
            .find(|r| r.timestamp >= target)
            .map_or((offset, ts), |r| (r.offset.max(offset), r.timestamp)),
        Err(e) => {
            tracing::warn!(error = %e, "could not decode a stored batch for a timestamp lookup");
            (offset, ts)
        }
    }
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: ListOffsetsRequest,
    version: i16,
    client: super::ClientInfo,
) -> ListOffsetsResponse {
    let twice = duplicates(&req);
    let mut answered = HashSet::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        // Each partition once, in order of first appearance.
        let parts: Vec<_> = t
            .partitions
            .iter()
            .filter(|p| answered.insert((t.name.as_str(), p.partition_index)))
            .collect();
        let allowed = srv.allowed_topic(
            &client,
            brook_engine::meta::acls::Operation::Describe,
            &t.name,
        );
        let asks = parts.iter().map(|p| {
            let tp = TopicPartition {
                topic: t.name.to_string(),
                partition: p.partition_index.max(0) as u32,
            };
            let query = if !allowed {
                Err(EngineError::TopicAuthorizationFailed)
            } else if twice.contains(&(t.name.as_str(), p.partition_index)) {
                Err(EngineError::InvalidRequest(format!(
                    "{tp} is listed twice in one ListOffsets request"
                )))
            } else {
                query_of(p.timestamp, version, req.isolation_level == 1)
            };
            let shard = srv.shard.clone();
            async move { shard.list_offset(tp, query?).await }
        });
        let answers = join_all(asks).await;
        let partitions = parts
            .iter()
            .zip(answers)
            .map(|(p, a)| answer(p, a, version))
            .collect();
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// From v4 a found offset carries the leader epoch it was written in (the
/// latest epoch for the latest offset), as OffsetsForLeaderEpoch and the
/// batches themselves report it; none found, unknown, or an error: -1.
fn answer(
    p: &ListOffsetsPartition,
    a: Result<ListedOffset, EngineError>,
    version: i16,
) -> ListOffsetsPartitionResponse {
    let r = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
    match a {
        Ok(l) => {
            let (offset, timestamp) = refine(&l, p.timestamp);
            let epoch = if offset >= 0 && version >= 4 {
                l.leader_epoch
            } else {
                -1
            };
            r.with_offset(offset)
                .with_timestamp(timestamp)
                .with_leader_epoch(epoch)
        }
        Err(e) => r
            .with_error_code(errors::code(&e))
            .with_offset(-1)
            .with_timestamp(-1),
    }
}
