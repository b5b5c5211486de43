//! AlterReplicaLogDirs: move partitions to another of this broker's log
//! directories while they keep serving (the engine's `shard::moves`). As in
//! Kafka, the answer says whether each move was accepted; DescribeLogDirs shows
//! where each partition lives once it has moved. A path that is not one of
//! `log.dirs` gets LOG_DIR_NOT_FOUND, a failed directory KAFKA_STORAGE_ERROR, an
//! unknown partition UNKNOWN_TOPIC_OR_PARTITION.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use brook_engine::TopicPartition;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::{AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse};

use super::topic_name;
use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: AlterReplicaLogDirsRequest,
    client: super::ClientInfo,
) -> AlterReplicaLogDirsResponse {
    let allowed = srv.allowed_on_cluster(&client, brook_engine::meta::acls::Operation::Alter);
    let mut by_topic: BTreeMap<String, Vec<AlterReplicaLogDirPartitionResult>> = BTreeMap::new();
    for dir in req.dirs {
        let target = PathBuf::from(dir.path.to_string());
        for t in dir.topics {
            let topic = t.name.to_string();
            for p in t.partitions {
                let code = if !allowed {
                    kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code()
                } else if p < 0 {
                    kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code()
                } else {
                    let tp = TopicPartition {
                        topic: topic.clone(),
                        partition: p as u32,
                    };
                    match srv.shard.move_partition(tp, target.clone()).await {
                        Ok(()) => 0,
                        Err(e) => errors::code(&e),
                    }
                };
                by_topic.entry(topic.clone()).or_default().push(
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(
        by_topic
            .into_iter()
            .map(|(name, partitions)| {
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(topic_name(&name))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}
