//! FindCoordinator: this broker coordinates every group (it is the only node).
//! Transaction coordinators (key type 1) are not available: no transactions yet.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::server::ShardServer;

fn answer(srv: &ShardServer, key_type: i8) -> (i16, BrokerId, StrBytes, i32) {
    if key_type != 0 {
        return (
            ResponseError::CoordinatorNotAvailable.code(),
            BrokerId(-1),
            StrBytes::default(),
            -1,
        );
    }
    let host = StrBytes::from_string(srv.config.advertise_host.clone());
    (
        0,
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
                let (code, node, host, port) = answer(&srv, req.key_type);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node)
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(code)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, node, host, port) = answer(&srv, req.key_type);
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_node_id(node)
        .with_host(host)
        .with_port(port)
}
