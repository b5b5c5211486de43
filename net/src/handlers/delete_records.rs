//! DeleteRecords: moves partitions' log start forward (`kafka-delete-records`,
//! `Admin.deleteRecords`). Each partition is handled by its leader (the
//! engine's `Shard::delete_records`): offset -1 means the high watermark,
//! another negative offset or one past the high watermark is
//! OFFSET_OUT_OF_RANGE, and an offset at or before the log start changes
//! nothing. The answer's low watermark is the least log start of the
//! in-sync replicas, which every one of them has stored; the partition's
//! segments that lie wholly before it are deleted. Internal topics are
//! refused with INVALID_TOPIC_EXCEPTION, as Kafka refuses them.

use std::rc::Rc;
use std::time::Duration;

use brook_engine::{EngineError, Offset, TopicPartition};
use futures::future::join_all;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::errors;
use crate::server::ShardServer;

/// Kafka's `DeleteRecordsRequest.HIGH_WATERMARK`.
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: DeleteRecordsRequest,
    client: super::ClientInfo,
) -> DeleteRecordsResponse {
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let allowed = srv.allowed_topic(
            &client,
            brook_engine::meta::acls::Operation::Delete,
            &t.name,
        );
        let parts = t.partitions.iter().map(|p| {
            let tp = TopicPartition {
                topic: t.name.to_string(),
                partition: p.partition_index.max(0) as u32,
            };
            let before = match p.offset {
                HIGH_WATERMARK => Ok(None),
                o => u64::try_from(o).map(|o| Some(Offset(o))),
            };
            let known = p.partition_index >= 0;
            let srv = srv.clone();
            async move {
                let res = match (known, before) {
                    _ if !allowed => Err(EngineError::TopicAuthorizationFailed),
                    (false, _) => Err(EngineError::UnknownTopicOrPartition),
                    (true, Err(_)) => Err(EngineError::NegativeOffset(p.offset)),
                    (true, Ok(before)) => srv.shard.delete_records(tp, before, timeout).await,
                };
                let result =
                    DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                match res {
                    Ok(low) => result.with_low_watermark(low.0 as i64),
                    Err(e) => result
                        .with_low_watermark(-1)
                        .with_error_code(errors::code(&e)),
                }
            }
        });
        let partitions = join_all(parts).await;
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
