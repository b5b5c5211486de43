//! DescribeConfigs: a topic's effective settings, and this broker's.
//!
//! Values are Kafka-named and typed as Kafka types them, so `kafka-topics
//! --describe` (which prints the configs whose source is not the default),
//! `kafka-configs --describe` and the admin clients read them unchanged. A
//! topic's value comes from its own override (source TOPIC_CONFIG, changed at
//! run time by AlterConfigs) or from the broker (DEFAULT_CONFIG). Broker
//! settings are static, so their entries are read-only.

use std::rc::Rc;

use brook_engine::EngineError;
use brook_engine::config::FlushPolicy;
use brook_engine::meta::catalog::TopicMeta;
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
}

fn topic_type(name: &str) -> ConfigType {
    match name {
        "segment.bytes" | "max.message.bytes" => ConfigType::Int,
        "cleanup.policy" => ConfigType::List,
        "min.cleanable.dirty.ratio" => ConfigType::Double,
        _ => ConfigType::Long,
    }
}

fn topic_entries(meta: &TopicMeta) -> Vec<Entry> {
    meta.config
        .describe()
        .into_iter()
        .map(|(name, value)| Entry {
            name,
            value,
            kind: topic_type(name),
            source: if meta.overrides.contains_key(name) {
                SOURCE_TOPIC_CONFIG
            } else {
                SOURCE_DEFAULT_CONFIG
            },
            read_only: false,
        })
        .collect()
}

fn broker_entries(srv: &ShardServer) -> Vec<Entry> {
    let engine = &srv.shard.shared.config;
    let net = &srv.config;
    let topic = &engine.topic_defaults;
    let opt = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    let flush = match topic.flush {
        FlushPolicy::EveryBatch => i64::MAX.to_string(),
        FlushPolicy::Interval(d) => d.as_millis().to_string(),
    };
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    use ConfigType::*;
    let e = |name, value: String, kind| Entry {
        name,
        value,
        kind,
        source: SOURCE_STATIC_BROKER_CONFIG,
        read_only: true,
    };
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
        e("listeners", format!("PLAINTEXT://{}", net.listen), List),
        e(
            "advertised.listeners",
            format!("PLAINTEXT://{}:{}", net.advertise_host, net.advertise_port),
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
        e(
            "log.cleaner.enable",
            engine.cleaner.enabled.to_string(),
            Boolean,
        ),
        e("log.cleaner.backoff.ms", ms(engine.cleaner.backoff), Long),
        e(
            "log.cleaner.dedupe.buffer.size",
            engine.cleaner.dedupe_buffer_bytes.to_string(),
            Long,
        ),
        e(
            "log.cleaner.io.max.bytes.per.second",
            (engine.cleaner.io_max_bytes_per_second)
                .map_or(f64::MAX.to_string(), |b| b.to_string()),
            Double,
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
            match srv.shard.catalog().topics.get(name) {
                Some(meta) => Ok(topic_entries(meta)),
                None => Err((
                    errors::code(&EngineError::UnknownTopicOrPartition),
                    format!("topic {name} does not exist"),
                )),
            }
        }
        RESOURCE_BROKER => {
            let name = res.resource_name.as_str();
            // "" asks for the cluster-wide defaults; Kafka answers those with
            // the dynamic defaults only, of which Brook has none.
            if name.is_empty() {
                return Ok(Vec::new());
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
    let synonyms = if with_synonyms && version >= 1 {
        vec![
            DescribeConfigsSynonym::default()
                .with_name(StrBytes::from_static_str(e.name))
                .with_value(value.clone())
                .with_source(e.source),
        ]
    } else {
        Vec::new()
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
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|res| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match result_for(&srv, res) {
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
