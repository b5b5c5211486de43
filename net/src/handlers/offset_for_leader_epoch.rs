//! OffsetsForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ends in the
//! leader's log. Consumers ask it after a leader change to check that the
//! records they read were not truncated away (the position's epoch must end at
//! or after the position); Brook's own followers learn divergence from Fetch's
//! `diverging_epoch` instead. Answered by the partition's leader only, with
//! Kafka's leader-epoch checks (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH).

use std::rc::Rc;

use brook_engine::TopicPartition;
use futures::future::join_all;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: OffsetForLeaderEpochRequest,
    client: super::ClientInfo,
) -> OffsetForLeaderEpochResponse {
    use brook_engine::meta::acls::Operation;
    // A follower needs the cluster's CLUSTER_ACTION, a client DESCRIBE on the topic.
    let follower = req.replica_id.0 >= 0;
    if follower && !srv.allowed_on_cluster(&client, Operation::ClusterAction) {
        return OffsetForLeaderEpochResponse::default().with_throttle_time_ms(0).with_topics(
            (req.topics.iter())
                .map(|t| {
                    OffsetForLeaderTopicResult::default().with_topic(t.topic.clone()).with_partitions(
                        (t.partitions.iter())
                            .map(|p| {
                                EpochEndOffset::default()
                                    .with_partition(p.partition)
                                    .with_error_code(kafka_protocol::ResponseError::ClusterAuthorizationFailed.code())
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1)
                            })
                            .collect(),
                    )
                })
                .collect(),
        );
    }
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let allowed = follower || srv.allowed_topic(&client, Operation::Describe, &t.topic);
        let asks = t.partitions.iter().map(|p| {
            let shard = srv.shard.clone();
            let tp = TopicPartition {
                topic: t.topic.to_string(),
                partition: p.partition.max(0) as u32,
            };
            let (negative, current, requested) =
                (p.partition < 0, p.current_leader_epoch, p.leader_epoch);
            async move {
                if !allowed {
                    return Err(brook_engine::EngineError::TopicAuthorizationFailed);
                }
                if negative {
                    return Err(brook_engine::EngineError::UnknownTopicOrPartition);
                }
                shard.end_offset_for_epoch(tp, current, requested).await
            }
        });
        let answers = join_all(asks).await;
        let partitions = (t.partitions.iter().zip(answers))
            .map(|(p, a)| {
                let r = EpochEndOffset::default().with_partition(p.partition);
                match a {
                    Ok((epoch, end)) => r.with_leader_epoch(epoch).with_end_offset(end),
                    Err(e) => r
                        .with_error_code(errors::code(&e))
                        .with_leader_epoch(-1)
                        .with_end_offset(-1),
                }
            })
            .collect();
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
