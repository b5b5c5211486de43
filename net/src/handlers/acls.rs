//! CreateAcls, DescribeAcls and DeleteAcls (`kafka-acls`), with Kafka's
//! validation: a binding names a concrete resource type, a LITERAL or
//! PREFIXED pattern, a `Type:name` principal, an operation and ALLOW or DENY.
//! The change is stored before the answer (`Shard::alter_acls`). Without an
//! authorizer (`authorizer.class.name` unset) each answers SECURITY_DISABLED,
//! as Kafka does. All three need the cluster's ALTER (create, delete) or
//! DESCRIBE (describe).

use std::collections::BTreeMap;
use std::rc::Rc;

use brook_engine::meta::acls::{
    AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::ClientInfo;
use crate::errors;
use crate::server::ShardServer;

fn text(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

fn disabled() -> (i16, Option<StrBytes>) {
    (
        ResponseError::SecurityDisabled.code(),
        text("No Authorizer is configured."),
    )
}

/// A CreateAcls entry as a binding, or why it is refused.
fn binding(
    rt: i8,
    name: &str,
    pattern: i8,
    principal: &str,
    host: &str,
    op: i8,
    perm: i8,
) -> Result<AclBinding, String> {
    let resource_type = ResourceType::from_wire(rt).ok_or(format!("invalid resource type {rt}"))?;
    let pattern = match pattern {
        3 => PatternType::Literal,
        4 => PatternType::Prefixed,
        p => return Err(format!("invalid pattern type {p}: LITERAL or PREFIXED")),
    };
    if name.is_empty() {
        return Err("the resource name is empty".into());
    }
    if resource_type == ResourceType::Cluster && name != crate::security::authz::CLUSTER {
        return Err("the cluster resource is named kafka-cluster".into());
    }
    if pattern == PatternType::Prefixed && name == "*" {
        return Err("a PREFIXED pattern of \"*\" is not allowed".into());
    }
    match principal.split_once(':') {
        Some((t, n)) if !t.is_empty() && !n.is_empty() => {}
        _ => {
            return Err(format!(
                "principal {principal:?} is not of the form Type:name"
            ));
        }
    }
    let operation = Operation::from_wire(op).ok_or(format!("invalid operation {op}"))?;
    let permission =
        Permission::from_wire(perm).ok_or(format!("invalid permission type {perm}"))?;
    Ok(AclBinding {
        resource_type,
        resource_name: name.to_string(),
        pattern,
        principal: principal.to_string(),
        host: host.to_string(),
        operation,
        permission,
    })
}

/// A Describe/DeleteAcls filter, or why it is refused.
#[allow(clippy::too_many_arguments)]
fn filter(
    rt: i8,
    name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    op: i8,
    perm: i8,
) -> Result<AclFilter, String> {
    const ANY: i8 = 1;
    let resource_type = match rt {
        ANY => None,
        t => Some(ResourceType::from_wire(t).ok_or(format!("invalid resource type {t}"))?),
    };
    let pattern = match pattern {
        ANY => PatternFilter::Any,
        2 => PatternFilter::Match,
        3 => PatternFilter::Exactly(PatternType::Literal),
        4 => PatternFilter::Exactly(PatternType::Prefixed),
        p => return Err(format!("invalid pattern type filter {p}")),
    };
    let operation = match op {
        ANY => None,
        o => Some(Operation::from_wire(o).ok_or(format!("invalid operation {o}"))?),
    };
    let permission = match perm {
        ANY => None,
        p => Some(Permission::from_wire(p).ok_or(format!("invalid permission type {p}"))?),
    };
    Ok(AclFilter {
        resource_type,
        resource_name: name.map(|n| n.to_string()),
        pattern,
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation,
        permission,
    })
}

/// Whether the request may go on: `Err` is the error code and message.
fn gate(
    srv: &ShardServer,
    client: &ClientInfo,
    op: Operation,
) -> Result<(), (i16, Option<StrBytes>)> {
    if !srv.config.authz.enabled {
        return Err(disabled());
    }
    if !srv.allowed_on_cluster(client, op) {
        return Err((
            ResponseError::ClusterAuthorizationFailed.code(),
            text("Cluster authorization failed."),
        ));
    }
    Ok(())
}

pub async fn create(
    srv: Rc<ShardServer>,
    req: CreateAclsRequest,
    client: ClientInfo,
) -> CreateAclsResponse {
    let fail = |(code, msg): (i16, Option<StrBytes>)| {
        let r = AclCreationResult::default()
            .with_error_code(code)
            .with_error_message(msg);
        CreateAclsResponse::default().with_results(vec![r; req.creations.len()])
    };
    if let Err(e) = gate(&srv, &client, Operation::Alter) {
        return fail(e);
    }
    let parsed: Vec<Result<AclBinding, String>> = (req.creations.iter())
        .map(|c| {
            binding(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclBinding> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let stored = match valid.is_empty() {
        true => Ok(Vec::new()),
        false => srv.shard.alter_acls(valid, Vec::new()).await,
    };
    let results = (parsed.into_iter())
        .map(|p| match (p, &stored) {
            (Err(why), _) => AclCreationResult::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(text(why)),
            (Ok(_), Err(e)) => AclCreationResult::default()
                .with_error_code(errors::code(e))
                .with_error_message(text(e.to_string())),
            (Ok(_), Ok(_)) => AclCreationResult::default(),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub async fn describe(
    srv: Rc<ShardServer>,
    req: DescribeAclsRequest,
    client: ClientInfo,
) -> DescribeAclsResponse {
    if let Err((code, msg)) = gate(&srv, &client, Operation::Describe) {
        return DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(msg);
    }
    let f = match filter(
        req.resource_type_filter,
        req.resource_name_filter.as_ref(),
        req.pattern_type_filter,
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(why) => {
            return DescribeAclsResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(text(why));
        }
    };
    let acls = srv.shard.catalog().acls.clone();
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in acls.matching(&f) {
        (by_resource.entry((
            b.resource_type.wire(),
            b.resource_name.clone(),
            b.pattern.wire(),
        )))
        .or_default()
        .push(description(b));
    }
    let resources = (by_resource.into_iter())
        .map(|((rt, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rt)
                .with_resource_name(StrBytes::from_string(name))
                .with_pattern_type(pattern)
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

fn description(b: &AclBinding) -> AclDescription {
    AclDescription::default()
        .with_principal(StrBytes::from_string(b.principal.clone()))
        .with_host(StrBytes::from_string(b.host.clone()))
        .with_operation(b.operation.wire())
        .with_permission_type(b.permission.wire())
}

pub async fn delete(
    srv: Rc<ShardServer>,
    req: DeleteAclsRequest,
    client: ClientInfo,
) -> DeleteAclsResponse {
    let fail = |(code, msg): (i16, Option<StrBytes>)| {
        let r = DeleteAclsFilterResult::default()
            .with_error_code(code)
            .with_error_message(msg);
        DeleteAclsResponse::default().with_filter_results(vec![r; req.filters.len()])
    };
    if let Err(e) = gate(&srv, &client, Operation::Alter) {
        return fail(e);
    }
    let parsed: Vec<Result<AclFilter, String>> = (req.filters.iter())
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclFilter> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let removed = match valid.is_empty() {
        true => Ok(Vec::new()),
        false => srv.shard.alter_acls(Vec::new(), valid).await,
    };
    let mut removed_each = match &removed {
        Ok(r) => r.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let results = (parsed.into_iter())
        .map(|p| match (p, &removed) {
            (Err(why), _) => DeleteAclsFilterResult::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(text(why)),
            (Ok(_), Err(e)) => DeleteAclsFilterResult::default()
                .with_error_code(errors::code(e))
                .with_error_message(text(e.to_string())),
            (Ok(_), Ok(_)) => {
                let matching = (removed_each.next().unwrap_or_default().iter())
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type.wire())
                            .with_resource_name(StrBytes::from_string(b.resource_name.clone()))
                            .with_pattern_type(b.pattern.wire())
                            .with_principal(StrBytes::from_string(b.principal.clone()))
                            .with_host(StrBytes::from_string(b.host.clone()))
                            .with_operation(b.operation.wire())
                            .with_permission_type(b.permission.wire())
                    })
                    .collect();
                DeleteAclsFilterResult::default().with_matching_acls(matching)
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
