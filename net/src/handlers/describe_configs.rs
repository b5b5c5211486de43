//! DescribeConfigs: a topic's effective settings, and this broker's.
//!
//! Values are Kafka-named and typed as Kafka types them, so `kafka-topics
//! --describe` (which prints the configs whose source is not the default),
//! `kafka-configs --describe` and the admin clients read them unchanged. A
//! topic's value comes from its own override (source TOPIC_CONFIG, changed at
//! run time by AlterConfigs), from a dynamic broker setting that is its
//! default (DYNAMIC_BROKER_CONFIG for this broker's own,
//! DYNAMIC_DEFAULT_BROKER_CONFIG for the cluster-wide one), or from the
//! broker's static settings (DEFAULT_CONFIG). A broker's entries are
//! read-only except the ones that change at run time
//! (`meta::broker_configs::DYNAMIC`); asked with synonyms, those list every
//! level that sets them, most precedent first, as Kafka does. The empty
//! broker name is the cluster-wide default: only its dynamic values.

use std::rc::Rc;

use brook_engine::EngineError;
use brook_engine::config::FlushPolicy;
use brook_engine::meta::broker_configs::{self, BrokerConfigs, BrokerSettings, Scope};
use brook_engine::meta::catalog::{Catalog, TopicMeta};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::server::ShardServer;

/// Kafka's `ConfigResource.Type` ids.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's `DescribeConfigsResponse.ConfigSource` ids.
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_DYNAMIC_BROKER_CONFIG: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// Kafka's `ConfigDef.Type` ids as DescribeConfigs v3+ sends them.
#[derive(Clone, Copy)]
enum ConfigType {
    Boolean = 1,
    Str = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One described setting.
struct Entry {
    name: &'static str,
    value: String,
    kind: ConfigType,
    source: i8,
    read_only: bool,
    /// Every level that sets it, most precedent first (name, value, source).
    synonyms: Vec<(&'static str, String, i8)>,
}

fn topic_type(name: &str) -> ConfigType {
    match name {
        "segment.bytes" | "max.message.bytes" | "min.insync.replicas" => ConfigType::Int,
        "cleanup.policy"
        | "leader.replication.throttled.replicas"
        | "follower.replication.throttled.replicas" => ConfigType::List,
        "min.cleanable.dirty.ratio" => ConfigType::Double,
        "unclean.leader.election.enable" => ConfigType::Boolean,
        "message.timestamp.type" => ConfigType::Str,
        _ => ConfigType::Long,
    }
}

/// The dynamic values of broker setting `name` on broker `node`, most
/// precedent first.
fn dynamic_levels(
    configs: &BrokerConfigs,
    node: i32,
    name: &'static str,
) -> Vec<(&'static str, String, i8)> {
    (configs.levels(node, name).into_iter())
        .map(|(value, scope)| {
            let source = match scope {
                Scope::Broker => SOURCE_DYNAMIC_BROKER_CONFIG,
                Scope::ClusterDefault => SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG,
            };
            (name, value.to_string(), source)
        })
        .collect()
}

fn topic_entries(meta: &TopicMeta, catalog: &Catalog, node: i32) -> Vec<Entry> {
    meta.config
        .describe()
        .into_iter()
        .map(|(name, value)| {
            let own = (meta.overrides.get(name)).map(|v| (name, v.clone(), SOURCE_TOPIC_CONFIG));
            let broker = broker_configs::broker_synonym(name)
                .map(|b| dynamic_levels(&catalog.broker_configs, node, b))
                .unwrap_or_default();
            let synonyms: Vec<_> = own.into_iter().chain(broker).collect();
            Entry {
                name,
                value,
                kind: topic_type(name),
                source: synonyms.first().map_or(SOURCE_DEFAULT_CONFIG, |s| s.2),
                read_only: false,
                synonyms,
            }
        })
        .collect()
}

/// The cluster-wide dynamic defaults (the empty broker name).
fn cluster_default_entries(catalog: &Catalog) -> Vec<Entry> {
    (broker_configs::DYNAMIC.iter())
        .filter_map(|(name, _)| {
            let value = catalog.broker_configs.default.get(*name)?.clone();
            let source = SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG;
            Some(Entry {
                name,
                kind: broker_type(name),
                synonyms: vec![(name, value.clone(), source)],
                value,
                source,
                read_only: false,
            })
        })
        .collect()
}

/// The type of a dynamic broker setting.
fn broker_type(name: &str) -> ConfigType {
    match name {
        "log.cleanup.policy" => ConfigType::List,
        "log.cleaner.min.cleanable.ratio" | "log.cleaner.io.max.bytes.per.second" => {
            ConfigType::Double
        }
        "log.segment.bytes" | "message.max.bytes" | "min.insync.replicas" => ConfigType::Int,
        _ => ConfigType::Long,
    }
}

/// This broker's entries: the values it runs with, each with its dynamic
/// levels and its static value as synonyms.
fn broker_entries(srv: &ShardServer) -> Vec<Entry> {
    let catalog = srv.shard.catalog();
    let engine = &srv.shard.shared.config;
    let static_settings = BrokerConfigs::default().resolve_or_static(engine, srv.config.node_id);
    let effective = broker_values(srv, &catalog.settings);
    let fixed = broker_values(srv, &static_settings);
    (effective.into_iter().zip(fixed))
        .map(|((name, value, kind), (_, static_value, _))| {
            let mut synonyms = dynamic_levels(&catalog.broker_configs, srv.config.node_id, name);
            let source = synonyms
                .first()
                .map_or(SOURCE_STATIC_BROKER_CONFIG, |s| s.2);
            synonyms.push((name, static_value, SOURCE_STATIC_BROKER_CONFIG));
            Entry {
                name,
                value,
                kind,
                source,
                read_only: !broker_configs::is_dynamic(name),
                synonyms,
            }
        })
        .collect()
}

/// Every broker setting described, with its value under `settings`.
fn broker_values(
    srv: &ShardServer,
    settings: &BrokerSettings,
) -> Vec<(&'static str, String, ConfigType)> {
    let engine = &srv.shard.shared.config;
    let net = &srv.config;
    let topic = &settings.topic_defaults;
    let cleaner = &settings.cleaner;
    let opt = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    let flush = match topic.flush {
        FlushPolicy::EveryBatch => i64::MAX.to_string(),
        FlushPolicy::Interval(d) => d.as_millis().to_string(),
    };
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    use ConfigType::*;
    let rate = |r: Option<u64>| r.map_or(i64::MAX.to_string(), |r| r.to_string());
    let e = |name: &'static str, value: String, kind| (name, value, kind);
    vec![
        e("node.id", net.node_id.to_string(), Int),
        e("broker.id", net.node_id.to_string(), Int),
        e(
            "log.dirs",
            (engine.log_dirs.iter())
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
            Str,
        ),
        e(
            "listeners",
            (net.listeners.iter())
                .map(|l| format!("{}://{}", l.name, l.addr))
                .collect::<Vec<_>>()
                .join(","),
            List,
        ),
        e(
            "advertised.listeners",
            (net.listeners.iter())
                .map(|l| format!("{}://{}:{}", l.name, l.advertise_host, l.advertise_port))
                .collect::<Vec<_>>()
                .join(","),
            List,
        ),
        e(
            "listener.security.protocol.map",
            (net.listeners.iter())
                .map(|l| format!("{}:{}", l.name, l.protocol.name()))
                .collect::<Vec<_>>()
                .join(","),
            List,
        ),
        e("num.partitions", engine.default_partitions.to_string(), Int),
        e(
            "auto.create.topics.enable",
            engine.auto_create_topics.to_string(),
            Boolean,
        ),
        e("log.segment.bytes", topic.segment_bytes.to_string(), Int),
        e("log.roll.ms", topic.segment_ms.to_string(), Long),
        e("log.retention.ms", opt(topic.retention_ms), Long),
        e("log.retention.bytes", opt(topic.retention_bytes), Long),
        e(
            "log.retention.check.interval.ms",
            ms(engine.retention_check_interval),
            Long,
        ),
        e("log.flush.interval.ms", flush, Long),
        e("log.cleanup.policy", topic.cleanup_policy(), List),
        e("log.cleaner.enable", cleaner.enabled.to_string(), Boolean),
        e("log.cleaner.backoff.ms", ms(cleaner.backoff), Long),
        e(
            "log.cleaner.dedupe.buffer.size",
            cleaner.dedupe_buffer_bytes.to_string(),
            Long,
        ),
        e(
            "log.cleaner.io.max.bytes.per.second",
            (cleaner.io_max_bytes_per_second).map_or(f64::MAX.to_string(), |b| b.to_string()),
            Double,
        ),
        e(
            broker_configs::LEADER_REPLICATION_RATE,
            rate(settings.leader_replication_rate),
            Long,
        ),
        e(
            broker_configs::FOLLOWER_REPLICATION_RATE,
            rate(settings.follower_replication_rate),
            Long,
        ),
        e(
            "log.message.timestamp.after.max.ms",
            topic.timestamp_after_max_ms.to_string(),
            Long,
        ),
        e(
            "log.message.timestamp.before.max.ms",
            topic.timestamp_before_max_ms.to_string(),
            Long,
        ),
        e(
            "min.insync.replicas",
            topic.min_insync_replicas.to_string(),
            Int,
        ),
        e(
            "log.cleaner.delete.retention.ms",
            topic.delete_retention_ms.to_string(),
            Long,
        ),
        e(
            "log.cleaner.min.cleanable.ratio",
            topic.min_cleanable_dirty_ratio.to_string(),
            Double,
        ),
        e(
            "log.cleaner.min.compaction.lag.ms",
            topic.min_compaction_lag_ms.to_string(),
            Long,
        ),
        e(
            "log.cleaner.max.compaction.lag.ms",
            topic.max_compaction_lag_ms.to_string(),
            Long,
        ),
        e(
            "message.max.bytes",
            topic.max_message_bytes.to_string(),
            Int,
        ),
        e(
            "socket.request.max.bytes",
            net.max_request_bytes.to_string(),
            Int,
        ),
        e(
            "queued.max.request.bytes",
            net.request_memory_per_shard.to_string(),
            Long,
        ),
        e("max.connections", net.max_connections.to_string(), Int),
        e(
            "max.connections.per.ip",
            net.max_connections_per_ip.to_string(),
            Int,
        ),
        e(
            "connections.max.idle.ms",
            ms(net.connections_max_idle),
            Long,
        ),
        e(
            "group.initial.rebalance.delay.ms",
            ms(engine.group.initial_rebalance_delay),
            Int,
        ),
        e(
            "group.min.session.timeout.ms",
            ms(engine.group.min_session_timeout),
            Int,
        ),
        e(
            "group.max.session.timeout.ms",
            ms(engine.group.max_session_timeout),
            Int,
        ),
        e("default.replication.factor", "1".to_string(), Int),
        e("offsets.topic.num.partitions", "50".to_string(), Int),
        e("offsets.topic.replication.factor", "1".to_string(), Short),
        e(
            "offsets.topic.segment.bytes",
            engine.offsets_segment_bytes.to_string(),
            Int,
        ),
    ]
}

fn result_for(
    srv: &ShardServer,
    res: &DescribeConfigsResource,
) -> Result<Vec<Entry>, (i16, String)> {
    match res.resource_type {
        RESOURCE_TOPIC => {
            let name = res.resource_name.as_str();
            let catalog = srv.shard.catalog();
            match catalog.topics.get(name) {
                Some(meta) => Ok(topic_entries(meta, &catalog, srv.config.node_id)),
                None => Err((
                    errors::code(&EngineError::UnknownTopicOrPartition),
                    format!("topic {name} does not exist"),
                )),
            }
        }
        RESOURCE_BROKER => {
            let name = res.resource_name.as_str();
            // "" asks for the cluster-wide defaults; Kafka answers those with
            // the dynamic defaults only.
            if name.is_empty() {
                return Ok(cluster_default_entries(&srv.shard.catalog()));
            }
            if name.parse::<i32>().ok() != Some(srv.config.node_id) {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    format!(
                        "unexpected broker id {name}: this is broker {}",
                        srv.config.node_id
                    ),
                ));
            }
            Ok(broker_entries(srv))
        }
        other => Err((
            ResponseError::InvalidRequest.code(),
            format!("Brook does not describe configs of resource type {other}"),
        )),
    }
}

fn encode(e: Entry, version: i16, with_synonyms: bool) -> DescribeConfigsResourceResult {
    let value = Some(StrBytes::from_string(e.value));
    let synonyms = match with_synonyms && version >= 1 {
        true => (e.synonyms.into_iter())
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_static_str(name))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_source(source)
            })
            .collect(),
        false => Vec::new(),
    };
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(e.name))
        .with_value(value)
        .with_read_only(e.read_only)
        .with_config_source(e.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(e.kind as i8)
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: DescribeConfigsRequest,
    version: i16,
    client: super::ClientInfo,
) -> DescribeConfigsResponse {
    use brook_engine::meta::acls::Operation::DescribeConfigs;
    let results = req
        .resources
        .iter()
        .map(|res| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let allowed = match res.resource_type {
                RESOURCE_TOPIC => srv.allowed_topic(&client, DescribeConfigs, &res.resource_name),
                _ => srv.allowed_on_cluster(&client, DescribeConfigs),
            };
            let outcome = match allowed {
                true => result_for(&srv, res),
                false if res.resource_type == RESOURCE_TOPIC => Err((
                    ResponseError::TopicAuthorizationFailed.code(),
                    String::new(),
                )),
                false => Err((
                    ResponseError::ClusterAuthorizationFailed.code(),
                    String::new(),
                )),
            };
            match outcome {
                Ok(entries) => {
                    let wanted = |e: &Entry| match &res.configuration_keys {
                        Some(keys) => keys.iter().any(|k| k.as_str() == e.name),
                        None => true,
                    };
                    result.with_configs(
                        entries
                            .into_iter()
                            .filter(wanted)
                            .map(|e| encode(e, version, req.include_synonyms))
                            .collect(),
                    )
                }
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
