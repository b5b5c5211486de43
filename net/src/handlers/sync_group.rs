//! SyncGroup: the leader hands in the assignment; everyone gets their share.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: SyncGroupRequest,
    version: i16,
    client: super::ClientInfo,
) -> SyncGroupResponse {
    if !srv.allowed_group(
        &client,
        brook_engine::meta::acls::Operation::Read,
        &req.group_id,
    ) {
        return SyncGroupResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let (protocol_type, protocol_name) = (req.protocol_type.clone(), req.protocol_name.clone());
    let result = srv
        .shard
        .sync_group(
            req.group_id.to_string(),
            req.member_id.to_string(),
            req.generation_id,
            req.group_instance_id.map(|i| i.to_string()),
            assignments,
        )
        .await;
    // From v5 a successful answer names the protocol type and name; an error
    // answer leaves both null, as Kafka's does.
    match result {
        Ok(assignment) if version >= 5 => SyncGroupResponse::default()
            .with_assignment(assignment)
            .with_protocol_type(protocol_type)
            .with_protocol_name(protocol_name),
        Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
        Err(e) => SyncGroupResponse::default().with_error_code(errors::code(&e)),
    }
}
