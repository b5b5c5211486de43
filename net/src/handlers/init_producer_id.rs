//! InitProducerId: a fresh producer id for idempotent producers. An existing id
//! presented with its epoch (KIP-360) gets its epoch bumped instead. With a
//! transactional id the transaction coordinator answers (`shard::txns`).

use std::rc::Rc;

use brook_engine::EngineError;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: InitProducerIdRequest,
    version: i16,
    client: super::ClientInfo,
) -> InitProducerIdResponse {
    use brook_engine::meta::acls::Operation::{IdempotentWrite, Write};
    let resp = InitProducerIdResponse::default();
    // A transactional producer needs WRITE on its id; an idempotent one
    // IDEMPOTENT_WRITE on the cluster or WRITE on some topic, as in Kafka.
    let denied = match &req.transactional_id {
        Some(id) => (!srv.allowed_txn(&client, Write, id))
            .then_some(ResponseError::TransactionalIdAuthorizationFailed),
        None => (!srv.allowed_on_cluster(&client, IdempotentWrite)
            && !srv.allowed_on_some_topic(&client, Write))
        .then_some(ResponseError::ClusterAuthorizationFailed),
    };
    if let Some(e) = denied {
        return resp
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    if let Some(id) = &req.transactional_id {
        let expected = (req.producer_id.0, req.producer_epoch);
        let r = (srv.shard)
            .init_txn_producer(id.to_string(), req.transaction_timeout_ms, expected)
            .await;
        return match r {
            Ok((id, epoch)) => resp
                .with_producer_id(ProducerId(id as i64))
                .with_producer_epoch(epoch as i16),
            Err(e) => {
                // PRODUCER_FENCED is v4's; older clients know INVALID_PRODUCER_EPOCH.
                let code = match e {
                    EngineError::ProducerFenced { .. } if version < 4 => {
                        ResponseError::InvalidProducerEpoch.code()
                    }
                    e => errors::code(&e),
                };
                resp.with_error_code(code)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        };
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
