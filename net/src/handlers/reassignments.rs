//! AlterPartitionReassignments and ListPartitionReassignments
//! (`kafka-reassign-partitions --execute/--verify/--cancel`,
//! `Admin.alterPartitionReassignments`): the engine starts, cancels and lists
//! the moves (`Shard::alter_reassignments`, `Shard::list_reassignments`); the
//! active controller completes each once its target replicas are in sync.

use std::rc::Rc;

use crate::handlers::{by_topic, code_and_message};
use crate::server::ShardServer;
use brook_engine::meta::acls::Operation;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

pub async fn alter(
    srv: Rc<ShardServer>,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
    client: super::ClientInfo,
) -> AlterPartitionReassignmentsResponse {
    if !srv.allowed_on_cluster(&client, Operation::Alter) {
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let changes = (req.topics.iter())
        .flat_map(|t| {
            (t.partitions.iter()).map(|p| {
                let target = (p.replicas.as_ref()).map(|r| r.iter().map(|b| b.0).collect());
                (t.name.to_string(), p.partition_index.max(0) as u32, target)
            })
        })
        .collect();
    // v0 has no such flag: changing the replication factor is allowed.
    let allow_rf_change = version == 0 || req.allow_replication_factor_change;
    let results = srv
        .shard
        .alter_reassignments(changes, allow_rf_change)
        .await;
    let partitions = results.into_iter().map(|(topic, p, r)| {
        let (code, message) = code_and_message(r);
        let pr = ReassignablePartitionResponse::default()
            .with_partition_index(p as i32)
            .with_error_code(code)
            .with_error_message(message);
        (topic, pr)
    });
    let responses = (by_topic(partitions).into_iter())
        .map(|(name, prs)| {
            ReassignableTopicResponse::default()
                .with_name(name)
                .with_partitions(prs)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_responses(responses)
}

pub async fn list(
    srv: Rc<ShardServer>,
    req: ListPartitionReassignmentsRequest,
    client: super::ClientInfo,
) -> ListPartitionReassignmentsResponse {
    if !srv.allowed_on_cluster(&client, Operation::Describe) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let wanted = req.topics.as_ref().map(|ts| {
        (ts.iter())
            .flat_map(|t| {
                (t.partition_indexes.iter()).map(|&p| (t.name.to_string(), p.max(0) as u32))
            })
            .collect()
    });
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let ongoing = (srv.shard.list_reassignments(wanted).into_iter()).map(
        |(topic, p, replicas, adding, removing)| {
            let op = OngoingPartitionReassignment::default()
                .with_partition_index(p as i32)
                .with_replicas(ids(replicas))
                .with_adding_replicas(ids(adding))
                .with_removing_replicas(ids(removing));
            (topic, op)
        },
    );
    let topics = (by_topic(ongoing).into_iter())
        .map(|(name, ops)| {
            OngoingTopicReassignment::default()
                .with_name(name)
                .with_partitions(ops)
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
