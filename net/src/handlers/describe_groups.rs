//! DescribeGroups: state, protocol, members with their metadata and assignment.
//! Unknown groups are "Dead" with no error, as Kafka answers.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: DescribeGroupsRequest,
    version: i16,
    client: super::ClientInfo,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in req.groups {
        let base = DescribedGroup::default().with_group_id(id.clone());
        if !srv.allowed_group(&client, brook_engine::meta::acls::Operation::Describe, &id) {
            groups.push(
                base.with_error_code(
                    kafka_protocol::ResponseError::GroupAuthorizationFailed.code(),
                ),
            );
            continue;
        }
        groups.push(match srv.shard.describe_group(id.to_string()).await {
            Err(e) => base.with_error_code(errors::code(&e)),
            Ok(d) => {
                let members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let dm = DescribedGroupMember::default()
                            .with_member_id(StrBytes::from_string(m.member_id))
                            .with_client_id(StrBytes::from_string(m.client_id))
                            .with_client_host(StrBytes::from_string(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment);
                        if version >= 4 {
                            dm.with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                        } else {
                            dm
                        }
                    })
                    .collect();
                base.with_group_state(StrBytes::from_static_str(d.state))
                    .with_protocol_type(StrBytes::from_string(d.protocol_type))
                    .with_protocol_data(StrBytes::from_string(d.protocol))
                    .with_members(members)
            }
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
