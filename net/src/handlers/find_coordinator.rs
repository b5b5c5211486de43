//! FindCoordinator: a single broker coordinates every group and transactional
//! id; in a cluster the coordinator is the leader of the key's partition of
//! `__consumer_offsets` (groups, key type 0) or `__transaction_state`
//! (transactional ids, key type 1). Both topics are created on first use.
//!
//! Share groups (2) and unknown key types get INVALID_REQUEST, Kafka's own
//! answer when the share coordinator is absent or the key type is not one it
//! knows, which a client treats as final.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::handlers::cluster_view;
use crate::server::ShardServer;

/// (error code, error message, node, host, port)
type Answer = (i16, Option<StrBytes>, BrokerId, StrBytes, i32);

async fn answer(
    srv: &Rc<ShardServer>,
    key_type: i8,
    key: &str,
    client: &super::ClientInfo,
) -> Answer {
    use brook_engine::meta::acls::Operation::Describe;
    let listener = client.listener;
    // DESCRIBE on the group or the transactional id.
    let denied = match key_type {
        TRANSACTION => (!srv.allowed_txn(client, Describe, key))
            .then_some(ResponseError::TransactionalIdAuthorizationFailed),
        _ => (!srv.allowed_group(client, Describe, key))
            .then_some(ResponseError::GroupAuthorizationFailed),
    };
    if let Some(e) = denied {
        return (e.code(), None, BrokerId(-1), StrBytes::default(), -1);
    }
    const GROUP: i8 = 0;
    const TRANSACTION: i8 = 1;
    if key_type != GROUP && key_type != TRANSACTION {
        return (
            ResponseError::InvalidRequest.code(),
            Some(StrBytes::from_static_str(
                "Brook has no coordinator of this key type",
            )),
            BrokerId(-1),
            StrBytes::default(),
            -1,
        );
    }
    if srv.shard.cluster().is_some() {
        return in_cluster(srv, key_type == TRANSACTION, key, listener).await;
    }
    if key_type == TRANSACTION
        && let Err(e) = srv.shard.ensure_txn_topic().await
    {
        return failed(&e);
    }
    let l = &srv.config.listeners[listener];
    (
        0,
        None,
        BrokerId(srv.config.node_id),
        StrBytes::from_string(l.advertise_host.clone()),
        l.advertise_port,
    )
}

fn failed(e: &brook_engine::EngineError) -> Answer {
    let code = match e {
        // Retriable: the client asks again until the topic has leaders.
        brook_engine::EngineError::NoQuorum(_)
        | brook_engine::EngineError::InvalidReplicationFactor(_) => {
            ResponseError::CoordinatorNotAvailable.code()
        }
        e => errors::code(e),
    };
    (
        code,
        Some(StrBytes::from_string(e.to_string())),
        BrokerId(-1),
        StrBytes::default(),
        -1,
    )
}

/// The key's coordinator in a cluster: the leader of its partition of
/// `__consumer_offsets` or `__transaction_state` (created on first use).
async fn in_cluster(
    srv: &Rc<ShardServer>,
    transaction: bool,
    key: &str,
    listener: usize,
) -> Answer {
    let node = if transaction {
        srv.shard.txn_coordinator(key).await
    } else {
        srv.shard.group_coordinator(key).await
    };
    let node = match node {
        Ok(n) => n,
        Err(e) => return failed(&e),
    };
    match cluster_view::brokers(srv, listener)
        .into_iter()
        .find(|b| b.node == node)
    {
        Some(b) => (
            0,
            None,
            BrokerId(b.node),
            StrBytes::from_string(b.host),
            b.port,
        ),
        None => failed(&brook_engine::EngineError::CoordinatorNotAvailable),
    }
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: FindCoordinatorRequest,
    version: i16,
    client: super::ClientInfo,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let mut coordinators = Vec::new();
        for key in req.coordinator_keys {
            let (code, message, node, host, port) = answer(&srv, req.key_type, &key, &client).await;
            coordinators.push(
                Coordinator::default()
                    .with_key(key)
                    .with_error_message(message)
                    .with_node_id(node)
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(code),
            );
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, message, node, host, port) = answer(&srv, req.key_type, &req.key, &client).await;
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_error_message(message)
        .with_node_id(node)
        .with_host(host)
        .with_port(port)
}
