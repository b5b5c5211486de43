//! JoinGroup: parked on the group's shard until the rebalance completes.

use std::rc::Rc;
use std::time::Duration;

use brook_engine::EngineError;
use brook_engine::coord::group::JoinRequest;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: JoinGroupRequest,
    version: i16,
    client: super::ClientInfo,
) -> JoinGroupResponse {
    let who = client.clone();
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance = if version >= 1 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let join = JoinRequest {
        group: req.group_id.to_string(),
        member_id: Some(req.member_id.to_string()).filter(|m| !m.is_empty()),
        instance_id: req.group_instance_id.map(|i| i.to_string()),
        client_id: client.client_id,
        client_host: client.host,
        session_timeout: session,
        rebalance_timeout: Duration::from_millis(rebalance.max(0) as u64),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    // An error answer echoes the request's member id and, from v7 where it is
    // nullable, leaves the protocol name null, as Kafka's does.
    let mut resp = JoinGroupResponse::default()
        .with_generation_id(-1)
        .with_member_id(req.member_id.clone());
    if version >= 7 {
        resp = resp.with_protocol_name(None);
    }
    if join.group.is_empty() {
        return resp.with_error_code(errors::code(&EngineError::InvalidGroupId));
    }
    if !srv.allowed_group(&who, brook_engine::meta::acls::Operation::Read, &join.group) {
        return resp.with_error_code(errors::code(&EngineError::GroupAuthorizationFailed));
    }
    match srv.shard.join_group(join).await {
        Ok(j) => {
            let members = j
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                        .with_metadata(m.metadata)
                })
                .collect();
            let r = resp
                .with_generation_id(j.generation)
                .with_protocol_name(Some(StrBytes::from_string(j.protocol)))
                .with_leader(StrBytes::from_string(j.leader))
                .with_member_id(StrBytes::from_string(j.member_id))
                .with_members(members);
            if version >= 7 {
                r.with_protocol_type(Some(StrBytes::from_string(j.protocol_type)))
            } else {
                r
            }
        }
        Err(EngineError::MemberIdRequired(id)) => resp
            .with_error_code(errors::code(&EngineError::MemberIdRequired(String::new())))
            .with_member_id(StrBytes::from_string(id)),
        Err(e) => resp.with_error_code(errors::code(&e)),
    }
}
