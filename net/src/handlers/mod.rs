//! One file per Kafka API, as Redpanda lays out `kafka/server/handlers/`.
pub mod acls;
pub mod alter_configs;
pub mod alter_replica_log_dirs;
pub mod api_versions;
pub mod client_quotas;
pub mod cluster_view;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod reassignments;
pub mod sasl;
pub mod scram_credentials;
pub mod sync_group;
pub mod txn;
pub mod unregister_broker;

/// Who sent a request, for the APIs that record it (JoinGroup).
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub client_id: String,
    /// `/ip`, as Kafka reports client hosts.
    pub host: String,
    /// `User:…` (see `security`).
    pub principal: std::sync::Arc<str>,
    /// The index of the listener the request came in on (`NetConfig::listeners`).
    pub listener: usize,
}

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Per-partition results grouped by topic, topics in first-seen order (the
/// shape of most admin responses).
pub(crate) fn by_topic<T>(
    items: impl IntoIterator<Item = (String, T)>,
) -> Vec<(TopicName, Vec<T>)> {
    let mut out: Vec<(String, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, v)) => v.push(item),
            None => out.push((topic, vec![item])),
        }
    }
    out.into_iter().map(|(t, v)| (topic_name(&t), v)).collect()
}

/// An engine outcome as an error code and message.
pub(crate) fn code_and_message(
    r: Result<(), brook_engine::EngineError>,
) -> (i16, Option<StrBytes>) {
    match r {
        Ok(()) => (crate::errors::NONE, None),
        Err(e) => (
            crate::errors::code(&e),
            Some(StrBytes::from_string(e.to_string())),
        ),
    }
}
