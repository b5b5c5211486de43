//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, v7) or the first
//! record whose timestamp is at least a given time. The engine finds the batch;
//! this decodes its records (decompressing if needed) to find the record, as
//! Kafka does. For -3 the engine finds the first batch holding the partition's
//! max timestamp and the answer is the first record in it carrying that
//! timestamp (KIP-734 as fixed by KAFKA-16310), with that record's timestamp.

use std::rc::Rc;

use brook_engine::{ListedOffset, OffsetQuery, TimestampMs, TopicPartition};
use futures::future::join_all;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;

use crate::errors;
use crate::server::ShardServer;

fn query_of(ts: i64) -> OffsetQuery {
    match ts {
        -1 => OffsetQuery::Latest,
        -2 => OffsetQuery::Earliest,
        -3 => OffsetQuery::MaxTimestamp,
        t => OffsetQuery::Timestamp(TimestampMs(t)),
    }
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

pub async fn handle(srv: Rc<ShardServer>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let asks = t.partitions.iter().map(|p| {
            let tp = TopicPartition {
                topic: t.name.to_string(),
                partition: p.partition_index.max(0) as u32,
            };
            srv.shard.list_offset(tp, query_of(p.timestamp))
        });
        let answers = join_all(asks).await;
        let partitions = t
            .partitions
            .iter()
            .zip(answers)
            .map(|(p, a)| {
                let r =
                    ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                match a {
                    Ok(l) => {
                        let (offset, timestamp) = refine(&l, p.timestamp);
                        r.with_offset(offset).with_timestamp(timestamp)
                    }
                    Err(e) => r
                        .with_error_code(errors::code(&e))
                        .with_offset(-1)
                        .with_timestamp(-1),
                }
            })
            .collect();
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
