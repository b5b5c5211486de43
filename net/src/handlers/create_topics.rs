//! CreateTopics: validated and persisted by shard 0 (see the engine's `shard`).
//! Replica assignments other than "this broker" are refused: Brook is one node.

use std::collections::BTreeMap;
use std::rc::Rc;

use brook_engine::{EngineError, NewTopic};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::server::ShardServer;

fn effective_configs(meta: &brook_engine::catalog::TopicMeta) -> Vec<CreatableTopicConfigs> {
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
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        if !t.assignments.is_empty() {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "manual replica assignment is not supported",
                    )))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            );
            continue;
        }
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        let new = NewTopic {
            name: t.name.to_string(),
            partitions: (t.num_partitions > 0).then_some(t.num_partitions as u32),
            replication_factor: (t.replication_factor != -1).then_some(t.replication_factor),
            configs,
            validate_only: req.validate_only,
        };
        let new = match new.partitions {
            None if t.num_partitions != -1 => Err(EngineError::InvalidPartitions(format!(
                "{}",
                t.num_partitions
            ))),
            _ => Ok(new),
        };
        let outcome = match new {
            Ok(n) => srv.shard.create_topic(n).await,
            Err(e) => Err(e),
        };
        results.push(match outcome {
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
            Err(e) => result
                .with_error_code(errors::code(&e))
                .with_error_message(Some(StrBytes::from_string(e.to_string())))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}
