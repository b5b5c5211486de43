//! OffsetDelete: removes a group's committed offsets of some partitions
//! (`kafka-consumer-groups --delete-offsets`, `Admin.deleteConsumerGroupOffsets`).
//! The coordinator decides per partition (the engine's `Shard::delete_offsets`):
//! an empty group loses any of them; a consumer group with members keeps
//! those of topics it subscribes to (GROUP_SUBSCRIBED_TO_TOPIC). A group
//! that does not exist is GROUP_ID_NOT_FOUND, and a non-empty group of
//! another protocol type NON_EMPTY_GROUP, for the whole request.

use std::rc::Rc;

use brook_engine::TopicPartition;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: OffsetDeleteRequest,
    client: super::ClientInfo,
) -> OffsetDeleteResponse {
    use brook_engine::meta::acls::Operation::{Delete, Read};
    if !srv.allowed_group(&client, Delete, &req.group_id) {
        return OffsetDeleteResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let denied: std::collections::HashSet<String> = (req.topics.iter())
        .filter(|t| !srv.allowed_topic(&client, Read, &t.name))
        .map(|t| t.name.to_string())
        .collect();
    let tps: Vec<TopicPartition> = (req.topics.iter())
        .filter(|t| !denied.contains(t.name.as_str()))
        .flat_map(|t| {
            (t.partitions.iter()).map(|p| TopicPartition {
                topic: t.name.to_string(),
                partition: p.partition_index.max(0) as u32,
            })
        })
        .collect();
    let results = match srv
        .shard
        .delete_offsets(req.group_id.to_string(), tps)
        .await
    {
        Ok(r) => r,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(errors::code(&e)),
    };
    let mut results = results.into_iter();
    let topics = (req.topics.into_iter())
        .map(|t| {
            let topic_denied = denied.contains(t.name.as_str());
            let partitions = (t.partitions.iter())
                .map(|p| {
                    if topic_denied {
                        return OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(errors::code(
                                &brook_engine::EngineError::TopicAuthorizationFailed,
                            ));
                    }
                    let code = match results.next() {
                        Some((_, Err(e))) => errors::code(&e),
                        _ => errors::NONE,
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
