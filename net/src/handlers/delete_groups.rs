//! DeleteGroups: only empty groups; their committed offsets are tombstoned.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: DeleteGroupsRequest,
    client: super::ClientInfo,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let r = match srv.allowed_group(&client, brook_engine::meta::acls::Operation::Delete, &id) {
            true => srv.shard.delete_group(id.to_string()).await,
            false => Err(brook_engine::EngineError::GroupAuthorizationFailed),
        };
        let code = r.err().map_or(errors::NONE, |e| errors::code(&e));
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
