//! LeaveGroup: one member (v0–2) or a batch of members by id or instance id (v3+).

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: LeaveGroupRequest,
    version: i16,
    client: super::ClientInfo,
) -> LeaveGroupResponse {
    if !srv.allowed_group(
        &client,
        brook_engine::meta::acls::Operation::Read,
        &req.group_id,
    ) {
        return LeaveGroupResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let results = srv
        .shard
        .leave_group(req.group_id.to_string(), members)
        .await;
    let results = match results {
        Ok(r) => r,
        Err(e) => return LeaveGroupResponse::default().with_error_code(errors::code(&e)),
    };
    if version < 3 {
        let code = results
            .into_iter()
            .next()
            .and_then(|r| r.err())
            .map_or(errors::NONE, |e| errors::code(&e));
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = req
        .members
        .into_iter()
        .zip(results)
        .map(|(m, r)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(r.err().map_or(errors::NONE, |e| errors::code(&e)))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
