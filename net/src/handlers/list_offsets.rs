//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, v7) or the first
//! batch whose max timestamp is at least a given time. Offsets by timestamp have
//! batch granularity: the answer is the base offset of that batch.

use std::rc::Rc;

use brook_engine::{OffsetQuery, TimestampMs, TopicPartition};
use futures::future::join_all;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

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
                    Ok(l) => r
                        .with_offset(l.offset.map_or(-1, |o| o.0 as i64))
                        .with_timestamp(l.timestamp.map_or(-1, |t| t.0)),
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
