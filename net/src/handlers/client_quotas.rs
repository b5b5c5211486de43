//! DescribeClientQuotas / AlterClientQuotas for user, client-id and
//! (user, client-id) entities, each with its default (Kafka's
//! `producer_byte_rate` and `consumer_byte_rate`; see `meta::quota` for the
//! precedence). Other entity types (`ip`) get INVALID_REQUEST.

use std::rc::Rc;

use brook_engine::EngineError;
use brook_engine::meta::acls::Operation;
use brook_engine::meta::quota::{EntityName, QuotaEntity, QuotaOp};
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlterEntity, EntryData as AlterEntry,
};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors;
use crate::server::ShardServer;

const CLIENT_ID: &str = "client-id";
const USER: &str = "user";

fn unsupported(t: &str) -> EngineError {
    EngineError::InvalidRequest(format!("entity type {t} is not supported"))
}

/// Whether `e` passes one filter component (`Err` for an unknown type).
fn matches(e: &QuotaEntity, c: &ComponentData) -> Result<bool, EngineError> {
    let part = match c.entity_type.as_str() {
        USER => &e.user,
        CLIENT_ID => &e.client,
        other => return Err(unsupported(other)),
    };
    Ok(match (c.match_type, part) {
        (_, None) => false,
        (0, Some(EntityName::Named(n))) => c._match.as_ref().is_some_and(|m| m.as_str() == n),
        (0, Some(EntityName::Default)) => false,
        (1, Some(name)) => *name == EntityName::Default,
        (_, Some(_)) => true,
    })
}

fn entity_data(t: &'static str, name: &EntityName) -> EntityData {
    EntityData::default()
        .with_entity_type(StrBytes::from_static_str(t))
        .with_entity_name(match name {
            EntityName::Default => None,
            EntityName::Named(n) => Some(StrBytes::from_string(n.clone())),
        })
}

pub async fn describe(
    srv: Rc<ShardServer>,
    req: DescribeClientQuotasRequest,
    client: super::ClientInfo,
) -> DescribeClientQuotasResponse {
    if !srv.allowed_on_cluster(&client, Operation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(kafka_protocol::ResponseError::ClusterAuthorizationFailed.code());
    }
    let quotas = srv.shard.quotas();
    let mut entries = Vec::new();
    for (e, q) in &quotas.entities {
        let mut hit = true;
        for c in &req.components {
            match matches(e, c) {
                Ok(m) => hit &= m,
                Err(err) => {
                    return DescribeClientQuotasResponse::default()
                        .with_error_code(errors::code(&err))
                        .with_error_message(Some(StrBytes::from_string(err.to_string())));
                }
            }
        }
        // Strict: the entity has no parts beyond the filter's.
        let parts = e.user.is_some() as usize + e.client.is_some() as usize;
        if !hit || (req.strict && parts != req.components.len()) {
            continue;
        }
        let mut entity = Vec::new();
        if let Some(u) = &e.user {
            entity.push(entity_data(USER, u));
        }
        if let Some(c) = &e.client {
            entity.push(entity_data(CLIENT_ID, c));
        }
        let values = (q.values().into_iter())
            .map(|(k, v)| {
                ValueData::default()
                    .with_key(StrBytes::from_static_str(k))
                    .with_value(v)
            })
            .collect();
        entries.push(EntryData::default().with_entity(entity).with_values(values));
    }
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// The entity an AlterClientQuotas entry names.
fn entity_of(
    parts: &[kafka_protocol::messages::alter_client_quotas_request::EntityData],
) -> Result<QuotaEntity, EngineError> {
    let mut e = QuotaEntity {
        user: None,
        client: None,
    };
    for p in parts {
        let name = match &p.entity_name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.to_string()),
        };
        let slot = match p.entity_type.as_str() {
            USER => &mut e.user,
            CLIENT_ID => &mut e.client,
            other => return Err(unsupported(other)),
        };
        if slot.replace(name).is_some() {
            return Err(EngineError::InvalidRequest(format!(
                "entity type {} given twice",
                p.entity_type
            )));
        }
    }
    if e.user.is_none() && e.client.is_none() {
        return Err(EngineError::InvalidRequest(
            "an entry names no entity".into(),
        ));
    }
    Ok(e)
}

pub async fn alter(
    srv: Rc<ShardServer>,
    req: AlterClientQuotasRequest,
    client: super::ClientInfo,
) -> AlterClientQuotasResponse {
    let allowed = srv.allowed_on_cluster(&client, Operation::AlterConfigs);
    let mut changes = Vec::with_capacity(req.entries.len());
    let mut refused: Vec<Option<EngineError>> = Vec::with_capacity(req.entries.len());
    for e in &req.entries {
        if !allowed {
            refused.push(Some(EngineError::ClusterAuthorizationFailed));
            continue;
        }
        let entity = match entity_of(&e.entity) {
            Ok(en) => en,
            Err(err) => {
                refused.push(Some(err));
                continue;
            }
        };
        let ops = e
            .ops
            .iter()
            .map(|op| QuotaOp {
                key: op.key.to_string(),
                value: (!op.remove).then_some(op.value),
            })
            .collect();
        changes.push((entity, ops));
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
