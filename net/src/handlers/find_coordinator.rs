//! FindCoordinator: this broker coordinates every group (it is the only node).
//!
//! Other key types get an error a client treats as final, so that it fails at
//! once instead of retrying until its timeout:
//! - transaction (1): Brook has no transaction coordinator yet. It answers as a
//!   Kafka cluster whose ACLs allow no transactional id does:
//!   TRANSACTIONAL_ID_AUTHORIZATION_FAILED, with a message saying why. That is the
//!   one FindCoordinator error that every client treats as fatal (librdkafka
//!   retries anything else, UNSUPPORTED_VERSION included; COORDINATOR_NOT_AVAILABLE
//!   is retried by all of them until `transaction.timeout.ms` or `max.block.ms`).
//! - share (2) and unknown types: INVALID_REQUEST, Kafka's own answer when the
//!   share coordinator is absent or the key type is not one it knows.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::server::ShardServer;

/// (error code, error message, node, host, port)
type Answer = (i16, Option<StrBytes>, BrokerId, StrBytes, i32);

fn answer(srv: &ShardServer, key_type: i8) -> Answer {
    const GROUP: i8 = 0;
    const TRANSACTION: i8 = 1;
    if key_type != GROUP {
        let (error, message) = match key_type {
            TRANSACTION => (
                ResponseError::TransactionalIdAuthorizationFailed,
                "Brook does not support transactions yet",
            ),
            _ => (
                ResponseError::InvalidRequest,
                "Brook has no coordinator of this key type",
            ),
        };
        return (
            error.code(),
            Some(StrBytes::from_static_str(message)),
            BrokerId(-1),
            StrBytes::default(),
            -1,
        );
    }
    let host = StrBytes::from_string(srv.config.advertise_host.clone());
    (
        0,
        None,
        BrokerId(srv.config.node_id),
        host,
        srv.config.advertise_port,
    )
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (code, message, node, host, port) = answer(&srv, req.key_type);
                Coordinator::default()
                    .with_key(key)
                    .with_error_message(message)
                    .with_node_id(node)
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(code)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, message, node, host, port) = answer(&srv, req.key_type);
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_error_message(message)
        .with_node_id(node)
        .with_host(host)
        .with_port(port)
}
