//! OffsetCommit: durably appended to `__consumer_offsets` before it is answered.

use std::collections::HashMap;
use std::rc::Rc;

use brook_engine::coord::group::CommittedOffset;
use brook_engine::meta::catalog::Catalog;
use brook_engine::shard::groups::CommitRequest;
use brook_engine::{EngineError, Offset, TimestampMs, TopicPartition};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::errors;
use crate::server::ShardServer;

/// Why one partition of a commit is refused before the group sees it (Kafka's
/// KafkaApis and coordinator checks): an unknown topic or partition, or metadata
/// over `offset.metadata.max.bytes`.
fn partition_refusal(
    catalog: &Catalog,
    topic: &str,
    partition: i32,
    metadata: Option<&str>,
    metadata_max_bytes: usize,
) -> Option<i16> {
    let known = catalog
        .topics
        .get(topic)
        .is_some_and(|t| u32::try_from(partition).is_ok_and(|p| p < t.partitions));
    if !known {
        return Some(ResponseError::UnknownTopicOrPartition.code());
    }
    if metadata.is_some_and(|m| m.len() > metadata_max_bytes) {
        return Some(ResponseError::OffsetMetadataTooLarge.code());
    }
    None
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: OffsetCommitRequest,
    client: super::ClientInfo,
) -> OffsetCommitResponse {
    use brook_engine::meta::acls::Operation::Read;
    let group_denied = !srv.allowed_group(&client, Read, &req.group_id);
    let now_ms = TimestampMs::now().0;
    let catalog = srv.shard.catalog();
    let metadata_max = srv.shard.shared.config.group.offset_metadata_max_bytes;
    let mut offsets = Vec::new();
    let mut refused = HashMap::new();
    let mut invalid = false;
    for t in &req.topics {
        let topic_denied = !srv.allowed_topic(&client, Read, &t.name);
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_deref();
            let refusal = match (group_denied, topic_denied) {
                (true, _) => Some(errors::code(&EngineError::GroupAuthorizationFailed)),
                (_, true) => Some(errors::code(&EngineError::TopicAuthorizationFailed)),
                _ => {
                    partition_refusal(&catalog, &t.name, p.partition_index, metadata, metadata_max)
                }
            };
            if let Some(code) = refusal {
                refused.insert((t.name.as_str(), p.partition_index), code);
                continue;
            }
            // -1 is Kafka's "no offset", which it accepts and stores.
            let offset = match p.committed_offset {
                -1 => Ok(None),
                o => u64::try_from(o).map(|o| Some(Offset(o))),
            };
            let (Ok(partition), Ok(offset)) = (u32::try_from(p.partition_index), offset) else {
                invalid = true;
                continue;
            };
            let c = CommittedOffset {
                offset,
                leader_epoch: Some(p.committed_leader_epoch).filter(|e| *e >= 0),
                metadata: metadata.map(str::to_string).unwrap_or_default(),
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
    // The group id "" is valid here, as in Kafka (old consumers commit under it).
    let result = if invalid {
        Err(EngineError::InvalidRequest("negative offset".into()))
    } else {
        srv.shard.commit_offsets(commit).await
    };
    let code = result.err().map_or(errors::NONE, |e| errors::code(&e));
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let own = refused.get(&(t.name.as_str(), p.partition_index));
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(own.copied().unwrap_or(code))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
