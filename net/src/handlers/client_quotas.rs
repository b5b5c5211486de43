//! DescribeClientQuotas / AlterClientQuotas for client-id entities (Kafka's
//! `producer_byte_rate` and `consumer_byte_rate`). Users are not supported until
//! authentication exists: filters or entities naming them get INVALID_REQUEST.

use std::rc::Rc;

use brook_engine::EngineError;
use brook_engine::meta::quota::QuotaOp;
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlterEntity, EntryData as AlterEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::server::ShardServer;

const CLIENT_ID: &str = "client-id";

/// How a DescribeClientQuotas component matches a client id.
enum Match {
    Exact(String),
    Default,
    Any,
}

fn parse_filter(req: &DescribeClientQuotasRequest) -> Result<Option<Match>, EngineError> {
    let mut found = None;
    for c in &req.components {
        if c.entity_type.as_str() != CLIENT_ID {
            return Err(EngineError::InvalidRequest(format!(
                "entity type {} is not supported",
                c.entity_type
            )));
        }
        found = Some(match c.match_type {
            0 => Match::Exact(c._match.as_ref().map(|m| m.to_string()).unwrap_or_default()),
            1 => Match::Default,
            _ => Match::Any,
        });
    }
    Ok(found)
}

pub async fn describe(
    srv: Rc<ShardServer>,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let filter = match parse_filter(&req) {
        Ok(f) => f,
        Err(e) => {
            return DescribeClientQuotasResponse::default()
                .with_error_code(errors::code(&e))
                .with_error_message(Some(StrBytes::from_string(e.to_string())));
        }
    };
    let quotas = srv.shard.quotas();
    let entries = quotas
        .clients
        .iter()
        .filter(|(id, _)| match &filter {
            None | Some(Match::Any) => true,
            Some(Match::Default) => id.is_none(),
            Some(Match::Exact(want)) => id.as_deref() == Some(want.as_str()),
        })
        .map(|(id, q)| {
            let entity = EntityData::default()
                .with_entity_type(StrBytes::from_static_str(CLIENT_ID))
                .with_entity_name(id.clone().map(StrBytes::from_string));
            let values = q
                .values()
                .into_iter()
                .map(|(k, v)| {
                    ValueData::default()
                        .with_key(StrBytes::from_static_str(k))
                        .with_value(v)
                })
                .collect();
            EntryData::default()
                .with_entity(vec![entity])
                .with_values(values)
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

pub async fn alter(
    srv: Rc<ShardServer>,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let mut changes = Vec::with_capacity(req.entries.len());
    let mut refused: Vec<Option<EngineError>> = Vec::with_capacity(req.entries.len());
    for e in &req.entries {
        let [entity] = e.entity.as_slice() else {
            refused.push(Some(EngineError::InvalidRequest(
                "exactly one client-id entity is supported".into(),
            )));
            continue;
        };
        if entity.entity_type.as_str() != CLIENT_ID {
            refused.push(Some(EngineError::InvalidRequest(format!(
                "entity type {} is not supported",
                entity.entity_type
            ))));
            continue;
        }
        let ops = e
            .ops
            .iter()
            .map(|op| QuotaOp {
                key: op.key.to_string(),
                value: (!op.remove).then_some(op.value),
            })
            .collect();
        changes.push((entity.entity_name.as_ref().map(|n| n.to_string()), ops));
        refused.push(None);
    }
    let outcome = srv.shard.alter_quotas(changes, req.validate_only).await;
    let mut applied = match outcome {
        Ok(results) => results.into_iter(),
        Err(e) => vec![Err(e); refused.iter().filter(|r| r.is_none()).count()].into_iter(),
    };
    let entries = req
        .entries
        .into_iter()
        .zip(refused)
        .map(|(e, refusal)| {
            let result = match refusal {
                Some(err) => Err(err),
                None => applied.next().unwrap_or(Ok(())),
            };
            let entity = e
                .entity
                .into_iter()
                .map(|en| {
                    AlterEntity::default()
                        .with_entity_type(en.entity_type)
                        .with_entity_name(en.entity_name)
                })
                .collect();
            let entry = AlterEntry::default().with_entity(entity);
            match result {
                Ok(()) => entry,
                Err(err) => entry
                    .with_error_code(errors::code(&err))
                    .with_error_message(Some(StrBytes::from_string(err.to_string()))),
            }
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
