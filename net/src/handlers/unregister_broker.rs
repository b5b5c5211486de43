//! UnregisterBroker (`kafka-cluster unregister --id N`): a retired broker
//! leaves the cluster's broker list once it is stopped. The change goes
//! through the metadata quorum (`Shard::unregister_broker`); a broker that
//! is not registered is BROKER_ID_NOT_REGISTERED, one still running is
//! INVALID_REQUEST.

use std::rc::Rc;

use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};
use kafka_protocol::protocol::StrBytes;

use brook_engine::meta::acls::Operation;
use kafka_protocol::ResponseError;

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: UnregisterBrokerRequest,
    client: super::ClientInfo,
) -> UnregisterBrokerResponse {
    if !srv.allowed_on_cluster(&client, Operation::Alter) {
        return UnregisterBrokerResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    match srv.shard.unregister_broker(req.broker_id.0).await {
        Ok(()) => UnregisterBrokerResponse::default(),
        Err(e) => UnregisterBrokerResponse::default()
            .with_error_code(errors::code(&e))
            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
    }
}
