//! ListGroups: every group on every shard, with its state (v4+ filter by state).

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let wanted: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_string().to_lowercase())
        .collect();
    let groups = srv
        .shard
        .list_groups()
        .await
        .into_iter()
        .filter(|g| wanted.is_empty() || wanted.contains(&g.state.to_lowercase()))
        .map(|g| {
            let l = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            if version >= 4 {
                l.with_group_state(StrBytes::from_static_str(g.state))
            } else {
                l
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
