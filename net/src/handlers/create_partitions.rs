//! CreatePartitions: grows topics (`kafka-topics --alter --partitions`,
//! `Admin.createPartitions`). Done by shard 0 like CreateTopics (see the
//! engine's `Shard::create_partitions`). Manual assignments are accepted only
//! when they name this broker, the one node there is.

use std::collections::HashSet;
use std::rc::Rc;

use brook_engine::EngineError;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::server::ShardServer;

/// Checks the explicit replica assignments, if any: one per added partition,
/// each exactly this broker.
fn check_assignments(srv: &ShardServer, t: &CreatePartitionsTopic) -> Result<(), String> {
    let Some(assignments) = &t.assignments else {
        return Ok(());
    };
    let current = srv
        .shard
        .catalog()
        .topics
        .get(t.name.as_str())
        .map_or(0, |m| m.partitions as i64);
    let added = t.count as i64 - current;
    if assignments.len() as i64 != added {
        return Err(format!(
            "attempted to add {added} partition(s), but {} assignment(s) were specified",
            assignments.len()
        ));
    }
    let me = srv.config.node_id;
    match assignments
        .iter()
        .all(|a| a.broker_ids.iter().map(|b| b.0).eq([me]))
    {
        true => Ok(()),
        false => Err(format!(
            "every replica must be on broker {me}, the only node"
        )),
    }
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: CreatePartitionsRequest,
    client: super::ClientInfo,
) -> CreatePartitionsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let fail = |code: i16, message: String| {
            result
                .clone()
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message)))
        };
        if duplicates.contains(t.name.as_str()) {
            results.push(fail(
                ResponseError::InvalidRequest.code(),
                "duplicate topic in request".to_string(),
            ));
            continue;
        }
        if !srv.allowed_topic(&client, brook_engine::meta::acls::Operation::Alter, &t.name) {
            results.push(fail(
                ResponseError::TopicAuthorizationFailed.code(),
                String::new(),
            ));
            continue;
        }
        if let Err(why) = check_assignments(&srv, &t) {
            results.push(fail(ResponseError::InvalidReplicaAssignment.code(), why));
            continue;
        }
        let outcome = match u32::try_from(t.count) {
            Ok(count) => {
                srv.shard
                    .create_partitions(t.name.to_string(), count, req.validate_only)
                    .await
            }
            Err(_) => Err(EngineError::InvalidPartitions(format!("{}", t.count))),
        };
        results.push(match outcome {
            Ok(_) => result,
            Err(e) => fail(errors::code(&e), e.to_string()),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
