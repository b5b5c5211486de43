//! ListGroups: every group on every shard, with its state (v4+ filter by state)
//! and its type (v5+, KIP-848). Every Brook group is a classic one: a filter
//! for `consumer` or `share` groups matches none.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::server::ShardServer;

/// Kafka's name for the classic group protocol's groups.
const GROUP_TYPE: &str = "classic";

pub async fn handle(
    srv: Rc<ShardServer>,
    req: ListGroupsRequest,
    version: i16,
    client: super::ClientInfo,
) -> ListGroupsResponse {
    use brook_engine::meta::acls::Operation::Describe;
    // DESCRIBE on the cluster lists every group; otherwise those the
    // principal may describe.
    let all = srv.allowed_on_cluster(&client, Describe);
    let wanted: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_string().to_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|t| t.to_string().to_lowercase())
        .collect();
    if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE) {
        return ListGroupsResponse::default();
    }
    let groups = srv
        .shard
        .list_groups()
        .await
        .into_iter()
        .filter(|g| wanted.is_empty() || wanted.contains(&g.state.to_lowercase()))
        .filter(|g| all || srv.allowed_group(&client, Describe, &g.group))
        .map(|g| {
            let l = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            let l = if version >= 4 {
                l.with_group_state(StrBytes::from_static_str(g.state))
            } else {
                l
            };
            if version >= 5 {
                l.with_group_type(StrBytes::from_static_str(GROUP_TYPE))
            } else {
                l
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
