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
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::handlers::topic_name;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
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
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, p, r) in elected {
        let (code, message) = match r {
            Ok(()) => (errors::NONE, None),
            Err(e) => (errors::code(&e), Some(StrBytes::from_string(e.to_string()))),
        };
        let pr = PartitionResult::default()
            .with_partition_id(p as i32)
            .with_error_code(code)
            .with_error_message(message);
        match results.iter_mut().find(|r| r.topic.as_str() == topic) {
            Some(r) => r.partition_result.push(pr),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(topic_name(&topic))
                    .with_partition_result(vec![pr]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}
