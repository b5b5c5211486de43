//! CreateTopics: validated and persisted by shard 0 (see the engine's `shard`).
//! A manual replica assignment is accepted when every partition's replicas are
//! this broker alone: Brook is one node.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;

use brook_engine::{EngineError, NewTopic};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::server::ShardServer;

fn effective_configs(meta: &brook_engine::meta::catalog::TopicMeta) -> Vec<CreatableTopicConfigs> {
    meta.config
        .describe()
        .into_iter()
        .map(|(k, v)| {
            let source = if meta.overrides.contains_key(k) { 1 } else { 5 };
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(k))
                .with_value(Some(StrBytes::from_string(v)))
                .with_config_source(source)
        })
        .collect()
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let duplicates = duplicate_names(&req.topics);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        if duplicates.contains(&t.name) {
            continue;
        }
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        let outcome = match new_topic(t, srv.config.node_id, req.validate_only) {
            Ok(n) => srv.shard.create_topic(n).await,
            Err(e) => Err(e),
        };
        results.push(answer(result, outcome, version));
    }
    // Kafka (ControllerApis.createTopics) creates none of a name given twice and
    // appends one INVALID_REQUEST entry for it after the others.
    for name in duplicates {
        results.push(
            CreatableTopicResult::default()
                .with_name(name)
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_static_str("Duplicate topic name.")))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        );
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// Names listed more than once, in order of their first appearance.
fn duplicate_names(topics: &[CreatableTopic]) -> Vec<TopicName> {
    let mut seen = HashSet::new();
    let mut duplicates = Vec::new();
    for t in topics {
        if !seen.insert(&t.name) && !duplicates.contains(&t.name) {
            duplicates.push(t.name.clone());
        }
    }
    duplicates
}

fn new_topic(
    t: &CreatableTopic,
    node_id: i32,
    validate_only: bool,
) -> Result<NewTopic, EngineError> {
    let configs = configs_of(t)?;
    let (partitions, replication_factor) = if t.assignments.is_empty() {
        if t.num_partitions == 0 || t.num_partitions < -1 {
            return Err(EngineError::InvalidPartitions(t.num_partitions.to_string()));
        }
        let partitions = u32::try_from(t.num_partitions).ok();
        (
            partitions,
            (t.replication_factor != -1).then_some(t.replication_factor),
        )
    } else {
        (Some(assigned_partitions(t, node_id)?), None)
    };
    Ok(NewTopic {
        name: t.name.to_string(),
        partitions,
        replication_factor,
        configs,
        validate_only,
    })
}

/// Kafka refuses a null config value (ReplicationControlManager: "Null value not
/// supported for topic configs") rather than read it as "the default".
fn configs_of(t: &CreatableTopic) -> Result<BTreeMap<String, String>, EngineError> {
    t.configs
        .iter()
        .map(|c| match &c.value {
            Some(v) => Ok((c.name.to_string(), v.to_string())),
            None => Err(EngineError::InvalidConfig(format!(
                "null value for {}: null values are not supported for topic configs",
                c.name
            ))),
        })
        .collect()
}

/// The partition count of a manual assignment, under Kafka's rules
/// (ReplicationControlManager.createTopic): the count and replication factor must
/// then be -1, and the partitions 0..n each exactly once. On one node every
/// partition's replica list must be this broker alone.
fn assigned_partitions(t: &CreatableTopic, node_id: i32) -> Result<u32, EngineError> {
    if t.replication_factor != -1 || t.num_partitions != -1 {
        return Err(EngineError::InvalidRequest(
            "a manual partition assignment needs num_partitions and replication_factor -1".into(),
        ));
    }
    let bad = |why: String| Err(EngineError::InvalidReplicaAssignment(why));
    let mut indexes = BTreeSet::new();
    for a in &t.assignments {
        if a.broker_ids.as_slice() != [BrokerId(node_id)] {
            return bad(format!(
                "partition {}: replicas {:?}, but this cluster is broker {node_id} alone",
                a.partition_index, a.broker_ids
            ));
        }
        if !indexes.insert(a.partition_index) {
            return bad(format!("partition {} assigned twice", a.partition_index));
        }
    }
    let count = indexes.len();
    if !indexes.into_iter().eq(0..count as i32) {
        return bad("partitions should be a consecutive 0-based integer sequence".into());
    }
    u32::try_from(count).map_err(|_| EngineError::InvalidPartitions(count.to_string()))
}

fn answer(
    result: CreatableTopicResult,
    outcome: Result<brook_engine::meta::catalog::TopicMeta, EngineError>,
    version: i16,
) -> CreatableTopicResult {
    match outcome {
        Ok(meta) => {
            let r = result
                .with_topic_id(uuid::Uuid::from_bytes(meta.id))
                .with_num_partitions(meta.partitions as i32)
                .with_replication_factor(1);
            if version >= 5 {
                r.with_configs(Some(effective_configs(&meta)))
            } else {
                r
            }
        }
        Err(e) => {
            let message = errors::topic_message(&e, result.name.as_str());
            result
                .with_error_code(errors::code(&e))
                .with_error_message(Some(StrBytes::from_string(message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        }
    }
}
