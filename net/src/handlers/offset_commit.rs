//! OffsetCommit: durably appended to `__consumer_offsets` before it is answered.

use std::rc::Rc;
use std::time::SystemTime;

use brook_engine::coordinator::CommitRequest;
use brook_engine::group::CommittedOffset;
use brook_engine::{EngineError, Offset, TopicPartition};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(srv: Rc<ShardServer>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let mut offsets = Vec::new();
    let mut invalid = false;
    for t in &req.topics {
        for p in &t.partitions {
            let (Ok(partition), Ok(offset)) = (
                u32::try_from(p.partition_index),
                u64::try_from(p.committed_offset),
            ) else {
                invalid = true;
                continue;
            };
            let c = CommittedOffset {
                offset: Offset(offset),
                leader_epoch: Some(p.committed_leader_epoch).filter(|e| *e >= 0),
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                commit_timestamp_ms: now_ms,
            };
            offsets.push((
                TopicPartition {
                    topic: t.name.to_string(),
                    partition,
                },
                c,
            ));
        }
    }
    let commit = CommitRequest {
        group: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        generation: req.generation_id_or_member_epoch,
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        offsets,
    };
    let result = if invalid {
        Err(EngineError::InvalidRequest(
            "negative partition or offset".into(),
        ))
    } else if commit.group.is_empty() {
        Err(EngineError::InvalidGroupId)
    } else {
        srv.shard.commit_offsets(commit).await
    };
    let code = result.err().map_or(errors::NONE, |e| errors::code(&e));
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
