//! DescribeTopicPartitions (KIP-966): topics and their partitions, paged. Kafka
//! 4's admin client and `kafka-topics --describe` use it when it is listed.
//!
//! Topics go out sorted by name, at most `response_partition_limit` partitions
//! per response (capped at Kafka's default `max.request.partition.size.limit`,
//! 2000); when a response is full, `next_cursor` names the first partition left
//! out and the client asks again from there. Leaders, replicas and ISR are
//! Metadata's (`cluster_view`); Brook keeps no eligible leader replicas
//! (KIP-966's ELR), so those lists are empty.

use std::rc::Rc;

use brook_engine::meta::catalog::TopicMeta;
use brook_engine::shard::is_internal_topic;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::topic_name;
use crate::handlers::cluster_view;
use crate::server::ShardServer;

/// Kafka's `max.request.partition.size.limit` default.
const PARTITION_LIMIT_MAX: usize = 2000;

/// Kafka's "authorized operations not requested" value.
const OPERATIONS_OMITTED: i32 = i32::MIN;

/// One partition, reported as Metadata does (an offline one has no leader).
fn partition(
    srv: &ShardServer,
    topic: &str,
    index: u32,
    offline: bool,
) -> DescribeTopicPartitionsResponsePartition {
    let v = cluster_view::partition(srv, topic, index, offline);
    let ids = |v: &[i32]| v.iter().map(|&n| BrokerId(n)).collect::<Vec<_>>();
    let part = DescribeTopicPartitionsResponsePartition::default()
        .with_partition_index(index as i32)
        .with_leader_epoch(v.leader_epoch)
        .with_leader_id(BrokerId(v.leader))
        .with_replica_nodes(ids(&v.replicas))
        .with_isr_nodes(ids(&v.isr))
        .with_offline_replicas(ids(&v.offline))
        .with_eligible_leader_replicas(Some(Vec::new()))
        .with_last_known_elr(Some(Vec::new()));
    if v.leader < 0 {
        part.with_error_code(ResponseError::LeaderNotAvailable.code())
    } else {
        part
    }
}

fn topic(
    srv: &ShardServer,
    meta: &TopicMeta,
    from: u32,
    to: u32,
) -> DescribeTopicPartitionsResponseTopic {
    let offline = srv.shard.shared.offline_partitions(&meta.name);
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(topic_name(&meta.name)))
        .with_topic_id(uuid::Uuid::from_bytes(meta.id))
        .with_is_internal(is_internal_topic(&meta.name))
        .with_partitions(
            (from..to)
                .map(|p| partition(srv, &meta.name, p, offline.contains(&p)))
                .collect(),
        )
        .with_topic_authorized_operations(OPERATIONS_OMITTED)
}

fn unknown(name: &TopicName) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
        .with_name(Some(name.clone()))
        .with_topic_authorized_operations(OPERATIONS_OMITTED)
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: DescribeTopicPartitionsRequest,
    client: super::ClientInfo,
) -> DescribeTopicPartitionsResponse {
    use brook_engine::meta::acls::Operation::Describe;
    let catalog = srv.shard.catalog();
    let mut names: Vec<TopicName> = if req.topics.is_empty() {
        // Only the topics the principal may describe.
        (catalog.topics.keys())
            .filter(|n| srv.allowed_topic(&client, Describe, n))
            .map(|n| topic_name(n))
            .collect()
    } else {
        req.topics.into_iter().map(|t| t.name).collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.clone()), c.partition_index.max(0) as u32),
        None => (None, 0),
    };
    let mut budget = usize::try_from(req.response_partition_limit)
        .unwrap_or(0)
        .clamp(1, PARTITION_LIMIT_MAX);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if start_topic.as_ref().is_some_and(|s| name < *s) {
            continue;
        }
        if !srv.allowed_topic(&client, Describe, &name) {
            topics.push(
                unknown(&name).with_error_code(ResponseError::TopicAuthorizationFailed.code()),
            );
            continue;
        }
        let Some(meta) = catalog.topics.get(name.as_str()) else {
            topics.push(unknown(&name));
            continue;
        };
        let from = if start_topic.as_ref() == Some(&name) {
            start_partition.min(meta.partitions)
        } else {
            0
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(name)
                    .with_partition_index(from as i32),
            );
            break;
        }
        let to = meta.partitions.min(from + budget as u32);
        budget -= (to - from) as usize;
        topics.push(topic(&srv, meta, from, to));
        if to < meta.partitions {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(name)
                    .with_partition_index(to as i32),
            );
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
