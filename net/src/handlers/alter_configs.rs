//! AlterConfigs and IncrementalAlterConfigs: topic and broker settings
//! changed at run time (`kafka-configs --alter`, `Admin.incrementalAlterConfigs`,
//! `kafka-reassign-partitions --throttle`).
//!
//! Both resolve the resource's whole new set of overrides here, as Kafka's
//! `ConfigAdminManager` does: AlterConfigs replaces the set, the incremental
//! form sets, deletes, appends to or subtracts from single entries. The set
//! is then checked and stored by the engine (`Shard::alter_topic_configs`,
//! `Shard::alter_broker_configs`, through the metadata quorum in a cluster)
//! and used from the next operation on.
//!
//! A broker resource is this broker (its id) or the cluster-wide default
//! (the empty name). Only the settings `meta::broker_configs::DYNAMIC` lists
//! change at run time; setting any other is refused with Kafka's answer for
//! a setting that cannot be updated dynamically (INVALID_REQUEST); deleting
//! one (a dynamic value that cannot exist) succeeds and changes nothing.
//! Errors are Kafka's: a resource named twice, a key named twice or a
//! missing value is INVALID_REQUEST, an unknown or invalid topic setting or
//! an invalid broker value INVALID_CONFIG, an unknown topic
//! UNKNOWN_TOPIC_OR_PARTITION.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use brook_engine::config::ConfigChange;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::server::ShardServer;

/// Kafka's `ConfigResource.Type` ids.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Settings of Kafka's LIST type, the only ones APPEND and SUBTRACT take,
/// with their defaults.
const LIST_DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("log.cleanup.policy", "delete"),
    ("leader.replication.throttled.replicas", ""),
    ("follower.replication.throttled.replicas", ""),
];

/// One change to one setting (Kafka's `AlterConfigOp.OpType`).
#[derive(Clone, Debug, PartialEq)]
enum Op {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

type Failure = (i16, String);

/// One resource of a request: its type, name and changes (or why they do
/// not read).
type Resource = (i8, StrBytes, Result<Vec<(String, Op)>, Failure>);

fn invalid_request(why: String) -> Failure {
    (ResponseError::InvalidRequest.code(), why)
}

fn invalid_config(why: String) -> Failure {
    (ResponseError::InvalidConfig.code(), why)
}

/// The incremental operation `op` with `value`, as Kafka reads it: a value is
/// required except to delete.
fn incremental_op(name: &str, op: i8, value: Option<&str>) -> Result<Op, Failure> {
    let value = || {
        value
            .map(str::to_string)
            .ok_or_else(|| invalid_request(format!("Null value not supported for : {name}")))
    };
    Ok(match op {
        0 => Op::Set(value()?),
        1 => Op::Delete,
        2 => Op::Append(value()?),
        3 => Op::Subtract(value()?),
        other => return Err(invalid_request(format!("Unknown operations type {other}"))),
    })
}

/// Each setting's new value (`None`: back to its default) after `ops`, as
/// Kafka's `prepareIncrementalConfigs` computes it: APPEND adds the values not
/// already listed, SUBTRACT removes the ones listed, both starting from the
/// topic's current override (`current`) or the default. A key appears at most
/// once (checked before).
fn resolve(
    current: &BTreeMap<String, String>,
    ops: Vec<(String, Op)>,
) -> Result<Vec<(String, Option<String>)>, Failure> {
    let mut out = Vec::with_capacity(ops.len());
    for (name, op) in ops {
        let list_default = LIST_DEFAULTS.iter().find(|(n, _)| *n == name).map(|d| d.1);
        let old_list = || -> Vec<String> {
            let old = current.get(&name).map(String::as_str).or(list_default);
            old.unwrap_or("")
                .split(',')
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        };
        let value = match op {
            Op::Set(v) => Some(v),
            Op::Delete => None,
            Op::Append(_) | Op::Subtract(_) if list_default.is_none() => {
                let kind = if matches!(op, Op::Append(_)) {
                    "append"
                } else {
                    "subtract"
                };
                return Err(invalid_config(format!(
                    "Config value {kind} is not allowed for config key: {name}"
                )));
            }
            Op::Append(v) => {
                let mut list = old_list();
                for item in v.split(',') {
                    if !list.iter().any(|x| x == item) {
                        list.push(item.to_string());
                    }
                }
                Some(list.join(","))
            }
            Op::Subtract(v) => {
                let gone: Vec<&str> = v.split(',').collect();
                let list: Vec<String> = (old_list().into_iter())
                    .filter(|x| !gone.contains(&x.as_str()))
                    .collect();
                Some(list.join(","))
            }
        };
        out.push((name, value));
    }
    Ok(out)
}

/// Which broker a broker resource names: this one (its id), or the
/// cluster-wide default (`None`, the empty name), checked as Kafka checks it.
fn broker_scope(srv: &ShardServer, name: &str) -> Result<Option<i32>, Failure> {
    let me = srv.config.node_id;
    match name {
        "" => Ok(None),
        _ if name.parse::<i32>().ok() == Some(me) => Ok(Some(me)),
        _ => Err(invalid_request(format!(
            "Unexpected broker id, expected {me}, but received {name}"
        ))),
    }
}

/// The change `changes` makes: AlterConfigs (`full`) replaces the whole set.
fn config_change(changes: Vec<(String, Option<String>)>, full: bool) -> ConfigChange {
    match full {
        true => ConfigChange::Replace(
            (changes.into_iter())
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
        ),
        false => ConfigChange::Update(changes),
    }
}

/// Resources named more than once in one request: all of them fail.
fn duplicated<'a>(ids: impl Iterator<Item = (i8, &'a str)>) -> HashSet<(i8, String)> {
    let mut seen = HashSet::new();
    let mut dup = HashSet::new();
    for (t, n) in ids {
        if !seen.insert((t, n)) {
            dup.insert((t, n.to_string()));
        }
    }
    dup
}

/// Resolves and stores one topic resource's change; `full` replaces the
/// overrides (AlterConfigs), otherwise `ops` apply to them. APPEND and
/// SUBTRACT are resolved here against this broker's view of the overrides;
/// SET and DELETE apply to the overrides current where the change is made.
async fn alter_topic(
    srv: &ShardServer,
    name: &str,
    ops: Vec<(String, Op)>,
    full: bool,
    validate_only: bool,
) -> Result<(), Failure> {
    let current = match srv.shard.catalog().topics.get(name) {
        Some(t) => t.overrides.clone(),
        None => {
            let e = brook_engine::EngineError::UnknownTopicOrPartition;
            return Err((errors::code(&e), format!("topic {name} does not exist")));
        }
    };
    let change = config_change(resolve(&current, ops)?, full);
    (srv.shard)
        .alter_topic_configs(name.to_string(), change, validate_only)
        .await
        .map_err(|e| (errors::code(&e), e.to_string()))
}

/// Resolves and stores one broker resource's change, as [`alter_topic`].
async fn alter_broker(
    srv: &ShardServer,
    name: &str,
    ops: Vec<(String, Op)>,
    full: bool,
    validate_only: bool,
) -> Result<(), Failure> {
    let node = broker_scope(srv, name)?;
    let catalog = srv.shard.catalog();
    let current = catalog
        .broker_configs
        .scope(node)
        .cloned()
        .unwrap_or_default();
    let change = config_change(resolve(&current, ops)?, full);
    (srv.shard)
        .alter_broker_configs(node, change, validate_only)
        .await
        .map_err(|e| (errors::code(&e), e.to_string()))
}

/// One resource's outcome, as both responses carry it.
struct Outcome {
    resource_type: i8,
    name: StrBytes,
    error: Option<Failure>,
}

async fn run(
    srv: &ShardServer,
    client: &super::ClientInfo,
    resources: Vec<Resource>,
    full: bool,
    validate_only: bool,
) -> Vec<Outcome> {
    use brook_engine::meta::acls::Operation::AlterConfigs;
    let dup = duplicated(resources.iter().map(|(t, n, _)| (*t, n.as_str())));
    let mut out = Vec::with_capacity(resources.len());
    for (resource_type, name, ops) in resources {
        let res = async {
            if dup.contains(&(resource_type, name.to_string())) {
                return Err(invalid_request(
                    "Each resource must appear at most once.".into(),
                ));
            }
            let allowed = match resource_type {
                RESOURCE_TOPIC => srv.allowed_topic(client, AlterConfigs, &name),
                _ => srv.allowed_on_cluster(client, AlterConfigs),
            };
            if !allowed {
                let code = match resource_type {
                    RESOURCE_TOPIC => ResponseError::TopicAuthorizationFailed,
                    _ => ResponseError::ClusterAuthorizationFailed,
                };
                return Err((code.code(), String::new()));
            }
            let ops = ops?;
            let mut seen = HashSet::new();
            if !ops.iter().all(|(k, _)| seen.insert(k.as_str())) {
                return Err(invalid_request("Error due to duplicate config keys".into()));
            }
            match resource_type {
                RESOURCE_TOPIC => alter_topic(srv, &name, ops, full, validate_only).await,
                RESOURCE_BROKER => alter_broker(srv, &name, ops, full, validate_only).await,
                other => Err(invalid_request(format!(
                    "Brook does not alter configs of resource type {other}"
                ))),
            }
        };
        let error = res.await.err();
        out.push(Outcome {
            resource_type,
            name,
            error,
        });
    }
    out
}

pub async fn alter(
    srv: Rc<ShardServer>,
    req: AlterConfigsRequest,
    client: super::ClientInfo,
) -> AlterConfigsResponse {
    let resources = (req.resources.into_iter())
        .map(|r| {
            let ops = (r.configs.iter())
                .map(|c| match &c.value {
                    Some(v) => Ok((c.name.to_string(), Op::Set(v.to_string()))),
                    None => Err(invalid_request(format!(
                        "Null value not supported for : {}",
                        c.name.as_str()
                    ))),
                })
                .collect();
            (r.resource_type, r.resource_name, ops)
        })
        .collect();
    let responses = run(&srv, &client, resources, true, req.validate_only)
        .await
        .into_iter()
        .map(|o| {
            let (code, message) = o.error.map_or((0, None), |(c, m)| (c, Some(m)));
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(o.resource_type)
                .with_resource_name(o.name)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn incremental(
    srv: Rc<ShardServer>,
    req: IncrementalAlterConfigsRequest,
    client: super::ClientInfo,
) -> IncrementalAlterConfigsResponse {
    let resources = (req.resources.into_iter())
        .map(|r| {
            let ops = (r.configs.iter())
                .map(|c| {
                    let value = c.value.as_ref().map(|v| v.as_str());
                    let op = incremental_op(&c.name, c.config_operation, value)?;
                    Ok((c.name.to_string(), op))
                })
                .collect();
            (r.resource_type, r.resource_name, ops)
        })
        .collect();
    let responses = run(&srv, &client, resources, false, req.validate_only)
        .await
        .into_iter()
        .map(|o| {
            let (code, message) = o.error.map_or((0, None), |(c, m)| (c, Some(m)));
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(o.resource_type)
                .with_resource_name(o.name)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn set_and_delete_change_single_entries() {
        let current = map(&[("retention.ms", "1000"), ("segment.bytes", "4096")]);
        let ops = vec![
            ("retention.ms".into(), Op::Set("2000".into())),
            ("segment.bytes".into(), Op::Delete),
        ];
        let changes = resolve(&current, ops).unwrap();
        assert_eq!(
            changes,
            vec![
                ("retention.ms".to_string(), Some("2000".to_string())),
                ("segment.bytes".to_string(), None)
            ]
        );
        let next = ConfigChange::Update(changes).applied_to(&current);
        assert_eq!(next, map(&[("retention.ms", "2000")]));
    }

    #[test]
    fn append_and_subtract_work_on_lists_from_their_default() {
        let ops = vec![("cleanup.policy".into(), Op::Append("compact,delete".into()))];
        assert_eq!(
            resolve(&BTreeMap::new(), ops).unwrap(),
            vec![(
                "cleanup.policy".to_string(),
                Some("delete,compact".to_string())
            )]
        );
        let ops = vec![("cleanup.policy".into(), Op::Subtract("compact".into()))];
        let current = map(&[("cleanup.policy", "compact,delete")]);
        assert_eq!(
            resolve(&current, ops).unwrap(),
            vec![("cleanup.policy".to_string(), Some("delete".to_string()))]
        );
    }

    #[test]
    fn append_to_a_scalar_is_invalid_config() {
        let ops = vec![("retention.ms".into(), Op::Append("5".into()))];
        let (code, why) = resolve(&BTreeMap::new(), ops).unwrap_err();
        assert_eq!(code, ResponseError::InvalidConfig.code());
        assert!(why.contains("append is not allowed"), "{why}");
    }

    #[test]
    fn operations_read_as_kafka_reads_them() {
        assert_eq!(incremental_op("x", 1, None), Ok(Op::Delete));
        assert_eq!(incremental_op("x", 0, Some("1")), Ok(Op::Set("1".into())));
        let null = incremental_op("x", 0, None).unwrap_err();
        assert_eq!(null.0, ResponseError::InvalidRequest.code());
        let unknown = incremental_op("x", 7, Some("1")).unwrap_err();
        assert_eq!(unknown.0, ResponseError::InvalidRequest.code());
    }

    #[test]
    fn a_resource_named_twice_is_found() {
        let ids = [(2, "a"), (4, "1"), (2, "a"), (2, "b")];
        let dup = duplicated(ids.into_iter());
        assert_eq!(dup, HashSet::from([(2, "a".to_string())]));
    }
}
