//! ElectLeaders: preferred (0) or unclean (1) leader election of chosen
//! partitions, or of all of them (`kafka-leader-election`). The engine decides
//! and commits each partition's election through the metadata quorum
//! (`Shard::elect_leaders`); a partition whose wanted leader already leads is
//! ELECTION_NOT_NEEDED, and is left out when all partitions were asked for.
//! An unknown election type is INVALID_REQUEST; elections not committed
//! within the request's timeout are REQUEST_TIMED_OUT.

use std::rc::Rc;
use std::time::Duration;

use brook_engine::EngineError;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};

use crate::handlers::{by_topic, code_and_message};
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: ElectLeadersRequest,
    version: i16,
    client: super::ClientInfo,
) -> ElectLeadersResponse {
    if !srv.allowed_on_cluster(&client, brook_engine::meta::acls::Operation::Alter) {
        return ElectLeadersResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    // v0 has no election type: it is a preferred election.
    let unclean = match (version, req.election_type) {
        (0, _) | (_, 0) => false,
        (_, 1) => true,
        (_, _) => {
            return ElectLeadersResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code());
        }
    };
    let wanted: Option<Vec<(String, u32)>> = req.topic_partitions.as_ref().map(|tps| {
        (tps.iter())
            .flat_map(|t| (t.partitions.iter()).map(|&p| (t.topic.to_string(), p.max(0) as u32)))
            .collect()
    });
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    let elected = compio::time::timeout(timeout, srv.shard.elect_leaders(unclean, wanted.clone()))
        .await
        .unwrap_or_else(|_| {
            let why = EngineError::TimedOut("the elections were not committed in time".into());
            (wanted.unwrap_or_default().into_iter())
                .map(|(t, p)| (t, p, Err(why.clone())))
                .collect()
        });
    let partitions = elected.into_iter().map(|(topic, p, r)| {
        let (code, message) = code_and_message(r);
        let pr = PartitionResult::default()
            .with_partition_id(p as i32)
            .with_error_code(code)
            .with_error_message(message);
        (topic, pr)
    });
    let results = (by_topic(partitions).into_iter())
        .map(|(topic, prs)| {
            ReplicaElectionResult::default()
                .with_topic(topic)
                .with_partition_result(prs)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}
