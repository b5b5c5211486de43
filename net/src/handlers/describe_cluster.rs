//! DescribeCluster: this broker, the cluster id and the controller. The admin
//! clients' `describeCluster` uses it when listed (Metadata otherwise).
//!
//! The brokers are the live ones (this broker alone, or every unfenced node of
//! the cluster) and the controller id is the one Metadata reports. A request for the controller endpoints
//! (v1 `endpoint_type` 2) gets Kafka's UNSUPPORTED_ENDPOINT_TYPE: clients ask
//! those only of a controller listener, which Brook does not have yet.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::cluster_view;
use crate::server::ShardServer;

const ENDPOINT_TYPE_BROKERS: i8 = 1;

/// Kafka's `AclOperation` codes allowed on the cluster resource (KIP-430);
/// without an authorizer every one of them is allowed.
const CLUSTER_OPERATIONS: [u8; 7] = [
    5,  // CREATE
    7,  // ALTER
    8,  // DESCRIBE
    9,  // CLUSTER_ACTION
    10, // DESCRIBE_CONFIGS
    11, // ALTER_CONFIGS
    12, // IDEMPOTENT_WRITE
];

/// Kafka's "authorized operations not requested" value.
const OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: DescribeClusterRequest,
    listener: usize,
) -> DescribeClusterResponse {
    let cfg = &srv.config;
    let resp = DescribeClusterResponse::default().with_endpoint_type(req.endpoint_type);
    if req.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return resp
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "Brook serves broker endpoints only",
            )))
            .with_controller_id(BrokerId(-1))
            .with_cluster_authorized_operations(OPERATIONS_OMITTED);
    }
    let operations = if req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
            .iter()
            .fold(0i32, |bits, op| bits | 1 << op)
    } else {
        OPERATIONS_OMITTED
    };
    let brokers = cluster_view::brokers(&srv, listener)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    resp.with_cluster_id(StrBytes::from_string(cfg.cluster_id.clone()))
        .with_controller_id(BrokerId(cluster_view::controller_id(&srv)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(operations)
}
