//! Heartbeat: keeps a member's session alive; tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: HeartbeatRequest,
    client: super::ClientInfo,
) -> HeartbeatResponse {
    if !srv.allowed_group(
        &client,
        brook_engine::meta::acls::Operation::Read,
        &req.group_id,
    ) {
        return HeartbeatResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let r = srv
        .shard
        .heartbeat(
            req.group_id.to_string(),
            req.member_id.to_string(),
            req.generation_id,
            req.group_instance_id.map(|i| i.to_string()),
        )
        .await;
    HeartbeatResponse::default().with_error_code(r.err().map_or(errors::NONE, |e| errors::code(&e)))
}
