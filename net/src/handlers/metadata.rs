//! Metadata: this broker, and the topics asked for (all when none are named),
//! by name or (v12+) by topic id.
//! Topics that do not exist are created on first use when auto-creation is on
//! (Kafka's `auto.create.topics.enable`); creation completes before the answer,
//! so the client gets the new topic's partitions at once.

use std::collections::BTreeMap;
use std::rc::Rc;

use brook_engine::meta::catalog::TopicMeta;
use brook_engine::{EngineError, NewTopic};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;

use super::{cluster_view, topic_name};
use crate::errors;
use crate::server::ShardServer;

/// A single broker's leader epoch: it has always led every partition, so the
/// epoch never moves from 0. ListOffsets reports the same.
pub const LEADER_EPOCH: i32 = 0;

/// A topic's partitions: leader, epoch, replicas and ISR (see
/// [`cluster_view::partition`]); one without a leader (offline: its only
/// replica's log dir failed, or every ISR member is down) gets
/// LEADER_NOT_AVAILABLE, as Kafka reports it.
fn describe(srv: &ShardServer, t: &TopicMeta) -> MetadataResponseTopic {
    let offline = srv.shard.shared.offline_partitions(&t.name);
    let ids = |v: &[i32]| v.iter().map(|&n| BrokerId(n)).collect::<Vec<_>>();
    let partitions = (0..t.partitions)
        .map(|p| {
            let v = cluster_view::partition(srv, &t.name, p, offline.contains(&p));
            let part = MetadataResponsePartition::default()
                .with_partition_index(p as i32)
                .with_leader_epoch(v.leader_epoch)
                .with_leader_id(BrokerId(v.leader))
                .with_replica_nodes(ids(&v.replicas))
                .with_isr_nodes(ids(&v.isr))
                .with_offline_replicas(ids(&v.offline));
            if v.leader < 0 {
                part.with_error_code(ResponseError::LeaderNotAvailable.code())
            } else {
                part
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_is_internal(brook_engine::shard::is_internal_topic(&t.name))
        .with_topic_id(uuid::Uuid::from_bytes(t.id))
        .with_partitions(partitions)
}

fn failed(name: &str, e: &EngineError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(errors::code(e))
}

/// A topic asked for by id (Metadata v12+, `Admin.describeTopics` by ids).
fn by_id(srv: &ShardServer, id: uuid::Uuid) -> MetadataResponseTopic {
    let catalog = srv.shard.catalog();
    let found = (!id.is_nil())
        .then(|| catalog.topics.values().find(|t| t.id == *id.as_bytes()))
        .flatten();
    match found {
        Some(meta) => describe(srv, meta),
        None => {
            let code = if id.is_nil() {
                ResponseError::InvalidRequest
            } else {
                ResponseError::UnknownTopicId
            };
            MetadataResponseTopic::default()
                .with_topic_id(id)
                .with_error_code(code.code())
        }
    }
}

async fn lookup_or_create(
    srv: &Rc<ShardServer>,
    name: &str,
    create: bool,
) -> Result<TopicMeta, EngineError> {
    if let Some(t) = srv.shard.catalog().topics.get(name) {
        return Ok(t.clone());
    }
    if !create || !srv.shard.shared.config.auto_create_topics {
        return Err(EngineError::UnknownTopicOrPartition);
    }
    let new = NewTopic {
        name: name.to_string(),
        partitions: None,
        replication_factor: None,
        configs: BTreeMap::new(),
        validate_only: false,
        assignment: None,
    };
    match srv.shard.create_topic(new).await {
        Err(EngineError::TopicAlreadyExists) => srv
            .shard
            .catalog()
            .topics
            .get(name)
            .cloned()
            .ok_or(EngineError::UnknownTopicOrPartition),
        other => other,
    }
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: MetadataRequest,
    version: i16,
    client: super::ClientInfo,
) -> MetadataResponse {
    use brook_engine::meta::acls::Operation::{Create, Describe};
    let listener = client.listener;
    let cfg = &srv.config;
    let brokers = cluster_view::brokers(&srv, listener)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    // v0: an empty list means all topics; v1+: null means all topics.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let mut topics = Vec::new();
    if all {
        let catalog = srv.shard.catalog();
        // Only the topics the principal may describe.
        let mut names: Vec<&String> = (catalog.topics.keys())
            .filter(|n| srv.allowed_topic(&client, Describe, n))
            .collect();
        names.sort();
        topics.extend(
            names
                .into_iter()
                .map(|n| describe(&srv, &catalog.topics[n])),
        );
    } else {
        let create = version < 4 || req.allow_auto_topic_creation;
        for t in req.topics.unwrap_or_default() {
            // v10+: a topic id, when given, names the topic (the Java client
            // sends an empty name with it); lookups by id never create.
            let name = match t.name {
                Some(name) if t.topic_id.is_nil() => name,
                _ => {
                    let found = by_id(&srv, t.topic_id);
                    let denied = (found.name.as_ref())
                        .is_some_and(|n| !srv.allowed_topic(&client, Describe, n));
                    topics.push(match denied {
                        true => MetadataResponseTopic::default()
                            .with_topic_id(t.topic_id)
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                        false => found,
                    });
                    continue;
                }
            };
            if !srv.allowed_topic(&client, Describe, &name) {
                topics.push(failed(
                    name.as_str(),
                    &EngineError::TopicAuthorizationFailed,
                ));
                continue;
            }
            // Auto-creation needs CREATE on the cluster or the topic.
            let create = create
                && (srv.allowed_on_cluster(&client, Create)
                    || srv.allowed_topic(&client, Create, &name));
            if !create && !srv.shard.catalog().topics.contains_key(name.as_str()) {
                let auto = srv.shard.shared.config.auto_create_topics
                    && (version < 4 || req.allow_auto_topic_creation);
                if auto {
                    topics.push(failed(
                        name.as_str(),
                        &EngineError::TopicAuthorizationFailed,
                    ));
                    continue;
                }
            }
            match lookup_or_create(&srv, name.as_str(), create).await {
                Ok(meta) => topics.push(describe(&srv, &meta)),
                Err(e) => topics.push(failed(name.as_str(), &e)),
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(cfg.cluster_id.clone())))
        .with_controller_id(BrokerId(cluster_view::controller_id(&srv)))
        .with_topics(topics)
}
