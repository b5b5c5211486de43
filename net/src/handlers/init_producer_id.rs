//! InitProducerId: a fresh producer id for idempotent producers. An existing id
//! presented with its epoch (KIP-360) gets its epoch bumped instead.
//! Transactions are not supported yet.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(srv: Rc<ShardServer>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        tracing::warn!("InitProducerId with a transactional id: transactions are not supported");
        return resp
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return resp
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match srv.shard.init_producer_id().await {
        Ok((id, epoch)) => resp
            .with_producer_id(ProducerId(id as i64))
            .with_producer_epoch(epoch as i16),
        Err(e) => resp
            .with_error_code(errors::code(&e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
