//! CreateTopics: validated and persisted by shard 0 (see the engine's `shard`).
//! A manual replica assignment is checked for shape here (Kafka's rules); a
//! single broker accepts only itself as every partition's replica, a cluster
//! only registered, live brokers (checked by the engine against its image).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;

use brook_engine::{EngineError, NewTopic};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
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
    client: super::ClientInfo,
) -> CreateTopicsResponse {
    use brook_engine::meta::acls::Operation::Create;
    let on_cluster = srv.allowed_on_cluster(&client, Create);
    let duplicates = duplicate_names(&req.topics);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        if duplicates.contains(&t.name) {
            continue;
        }
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        let alone = srv.shard.cluster().is_none();
        let outcome = match new_topic(t, srv.config.node_id, alone, req.validate_only) {
            Ok(_) if !on_cluster && !srv.allowed_topic(&client, Create, &t.name) => {
                Err(EngineError::TopicAuthorizationFailed)
            }
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
    alone: bool,
    validate_only: bool,
) -> Result<NewTopic, EngineError> {
    let configs = configs_of(t)?;
    let mut assignment = None;
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
        let a = assigned_replicas(t, node_id, alone)?;
        let count = a.len() as u32;
        assignment = Some(a);
        (Some(count), None)
    };
    Ok(NewTopic {
        name: t.name.to_string(),
        partitions,
        replication_factor,
        configs,
        validate_only,
        assignment,
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

/// The replicas of each partition of a manual assignment, under Kafka's rules
/// (ReplicationControlManager.createTopic): the count and replication factor
/// must then be -1, the partitions 0..n each exactly once, each with the same
/// number of distinct replicas. A single broker must be every partition's
/// only replica.
fn assigned_replicas(
    t: &CreatableTopic,
    node_id: i32,
    alone: bool,
) -> Result<Vec<Vec<i32>>, EngineError> {
    if t.replication_factor != -1 || t.num_partitions != -1 {
        return Err(EngineError::InvalidRequest(
            "a manual partition assignment needs num_partitions and replication_factor -1".into(),
        ));
    }
    let bad = |why: String| Err(EngineError::InvalidReplicaAssignment(why));
    let mut by_index = BTreeMap::new();
    for a in &t.assignments {
        let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
        if alone && replicas != [node_id] {
            return bad(format!(
                "partition {}: replicas {:?}, but this cluster is broker {node_id} alone",
                a.partition_index, replicas
            ));
        }
        if replicas.is_empty() {
            return bad(format!("partition {} has no replicas", a.partition_index));
        }
        if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return bad(format!(
                "partition {} lists a broker twice: {replicas:?}",
                a.partition_index
            ));
        }
        if by_index.insert(a.partition_index, replicas).is_some() {
            return bad(format!("partition {} assigned twice", a.partition_index));
        }
    }
    let count = by_index.len();
    if !by_index.keys().copied().eq(0..count as i32) {
        return bad("partitions should be a consecutive 0-based integer sequence".into());
    }
    let replicas: Vec<Vec<i32>> = by_index.into_values().collect();
    if replicas.iter().any(|r| r.len() != replicas[0].len()) {
        return bad("all partitions should have the same number of replicas".into());
    }
    u32::try_from(count).map_err(|_| EngineError::InvalidPartitions(count.to_string()))?;
    Ok(replicas)
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
