//! Access control lists with Kafka's semantics (`StandardAuthorizer`): a
//! binding allows or denies one principal, from one host, one operation on
//! the resources one pattern names (a literal name, `*`, or a prefix).
//!
//! A request is allowed when no DENY binding matches it and an ALLOW binding
//! does; an operation implies DESCRIBE when it is READ, WRITE, DELETE or
//! ALTER, and DESCRIBE_CONFIGS when it is ALTER_CONFIGS; ALL matches every
//! operation. Super users and, when `allow.everyone.if.no.acl.found` is set,
//! requests on resources no binding names are decided by the protocol layer
//! ([`Acls::authorize`] takes both).
//!
//! A cluster keeps the bindings in the metadata quorum (`CreateAcls` and
//! `DeleteAcls` records); a single broker in `<data-dir>/__brook/acls.json`
//! (temp file, fsync, rename), before the change is answered.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// Kafka's `ResourceType` (wire numbers: TOPIC 2 … USER 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl ResourceType {
    pub fn from_wire(t: i8) -> Option<ResourceType> {
        Some(match t {
            2 => ResourceType::Topic,
            3 => ResourceType::Group,
            4 => ResourceType::Cluster,
            5 => ResourceType::TransactionalId,
            6 => ResourceType::DelegationToken,
            7 => ResourceType::User,
            _ => return None,
        })
    }

    pub fn wire(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::DelegationToken => 6,
            ResourceType::User => 7,
        }
    }
}

/// Kafka's `PatternType` for a binding (LITERAL 3, PREFIXED 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn wire(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }
}

/// Kafka's `AclOperation` (ALL 2 … DESCRIBE_TOKENS 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

impl Operation {
    const WIRE: [(i8, Operation); 13] = [
        (2, Operation::All),
        (3, Operation::Read),
        (4, Operation::Write),
        (5, Operation::Create),
        (6, Operation::Delete),
        (7, Operation::Alter),
        (8, Operation::Describe),
        (9, Operation::ClusterAction),
        (10, Operation::DescribeConfigs),
        (11, Operation::AlterConfigs),
        (12, Operation::IdempotentWrite),
        (13, Operation::CreateTokens),
        (14, Operation::DescribeTokens),
    ];

    pub fn from_wire(t: i8) -> Option<Operation> {
        Self::WIRE.iter().find(|(w, _)| *w == t).map(|(_, o)| *o)
    }

    pub fn wire(self) -> i8 {
        Self::WIRE
            .iter()
            .find(|(_, o)| *o == self)
            .map_or(0, |(w, _)| *w)
    }

    /// Whether a binding for `self` covers a request for `wanted`.
    fn covers(self, wanted: Operation) -> bool {
        use Operation::*;
        self == All
            || self == wanted
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }
}

/// Kafka's `AclPermissionType` (DENY 2, ALLOW 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn from_wire(t: i8) -> Option<Permission> {
        match t {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }

    pub fn wire(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }
}

/// One ACL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern: PatternType,
    /// `User:alice`, or `User:*` for every principal.
    pub principal: String,
    /// A client address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// How a filter matches a binding's pattern (Kafka's filter pattern types:
/// ANY 1, MATCH 2, LITERAL 3, PREFIXED 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatternFilter {
    Any,
    /// Every binding that would apply to the named resource.
    Match,
    Exactly(PatternType),
}

/// DescribeAcls / DeleteAcls filter; `None` fields match anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

/// Whether a binding's pattern names `resource`.
fn names(b: &AclBinding, resource: &str) -> bool {
    match b.pattern {
        PatternType::Literal => b.resource_name == resource || b.resource_name == "*",
        PatternType::Prefixed => resource.starts_with(&b.resource_name),
    }
}

impl AclFilter {
    pub fn matches(&self, b: &AclBinding) -> bool {
        let name_ok = match (self.pattern, &self.resource_name) {
            (PatternFilter::Match, Some(n)) => names(b, n),
            (PatternFilter::Match, None) => true,
            (PatternFilter::Any, n) => n.as_ref().is_none_or(|n| *n == b.resource_name),
            (PatternFilter::Exactly(p), n) => {
                p == b.pattern && n.as_ref().is_none_or(|n| *n == b.resource_name)
            }
        };
        name_ok
            && self.resource_type.is_none_or(|t| t == b.resource_type)
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

/// What the bindings say about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
    /// No binding names the resource at all.
    NoAcls,
}

/// Every binding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acls {
    pub bindings: BTreeSet<AclBinding>,
}

impl Acls {
    /// Whether `principal` from `host` may do `op` on the resource.
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        resource_type: ResourceType,
        resource: &str,
    ) -> Decision {
        let mut any = false;
        let mut allowed = false;
        for b in self
            .bindings
            .iter()
            .filter(|b| b.resource_type == resource_type)
        {
            if !names(b, resource) {
                continue;
            }
            any = true;
            let applies = (b.principal == principal || b.principal == "User:*")
                && (b.host == host || b.host == "*")
                && b.operation.covers(op);
            match (applies, b.permission) {
                (true, Permission::Deny) => return Decision::Denied,
                (true, Permission::Allow) => allowed = true,
                _ => {}
            }
        }
        match (allowed, any) {
            (true, _) => Decision::Allowed,
            (false, true) => Decision::Denied,
            (false, false) => Decision::NoAcls,
        }
    }

    /// Whether some ALLOW binding of `resource_type` lets `principal` from
    /// `host` do `op` on some resource.
    pub fn allows_some(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        resource_type: ResourceType,
    ) -> bool {
        self.bindings.iter().any(|b| {
            b.resource_type == resource_type
                && b.permission == Permission::Allow
                && (b.principal == principal || b.principal == "User:*")
                && (b.host == host || b.host == "*")
                && b.operation.covers(op)
        })
    }

    pub fn matching<'a>(&'a self, f: &'a AclFilter) -> impl Iterator<Item = &'a AclBinding> + 'a {
        self.bindings.iter().filter(move |b| f.matches(b))
    }

    /// `self` with `created` added and every binding matching one of
    /// `deleted` removed.
    pub fn changed(&self, created: &[AclBinding], deleted: &[AclFilter]) -> Acls {
        let mut next = self.clone();
        next.bindings.extend(created.iter().cloned());
        next.bindings
            .retain(|b| !deleted.iter().any(|f| f.matches(b)));
        next
    }

    fn path(data_dir: &Path) -> std::path::PathBuf {
        crate::meta::data_dir::acls_path(data_dir)
    }

    pub fn load(data_dir: &Path) -> Result<Acls, EngineError> {
        crate::meta::json_file::load(&Self::path(data_dir))
    }

    pub fn store(&self, data_dir: &Path) -> Result<(), EngineError> {
        crate::meta::json_file::store(&Self::path(data_dir), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        who: &str,
        op: Operation,
        p: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: p,
        }
    }

    #[test]
    fn kafkas_rules() {
        use Decision::*;
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let acls = Acls::default().changed(
            &[
                acl(Topic, "orders", Literal, "User:alice", Write, Allow),
                acl(Topic, "logs-", Prefixed, "User:alice", Read, Allow),
                acl(Topic, "logs-secret", Literal, "User:alice", Read, Deny),
                acl(Topic, "*", Literal, "User:bob", Describe, Allow),
                acl(Group, "g", Literal, "User:*", All, Allow),
                acl(Topic, "conf", Literal, "User:carol", AlterConfigs, Allow),
            ],
            &[],
        );
        let a = |who: &str, op, rt, name: &str| acls.authorize(who, "10.0.0.1", op, rt, name);
        assert_eq!(a("User:alice", Write, Topic, "orders"), Allowed);
        assert_eq!(
            a("User:alice", Describe, Topic, "orders"),
            Allowed,
            "WRITE implies DESCRIBE"
        );
        assert_eq!(a("User:alice", Read, Topic, "orders"), Denied);
        assert_eq!(
            a("User:alice", Read, Topic, "logs-app"),
            Allowed,
            "prefixed"
        );
        assert_eq!(
            a("User:alice", Read, Topic, "logs-secret"),
            Denied,
            "DENY wins"
        );
        assert_eq!(
            a("User:bob", Describe, Topic, "anything"),
            Allowed,
            "wildcard name"
        );
        assert_eq!(a("User:bob", Read, Topic, "anything"), Denied);
        assert_eq!(
            a("User:zed", Read, Group, "g"),
            Allowed,
            "wildcard principal, ALL"
        );
        assert_eq!(
            a("User:carol", DescribeConfigs, Topic, "conf"),
            Allowed,
            "ALTER_CONFIGS implies DESCRIBE_CONFIGS"
        );
        assert_eq!(a("User:alice", Read, Group, "other"), NoAcls);
        assert_eq!(a("User:alice", Alter, Cluster, "kafka-cluster"), NoAcls);
        // A host-specific binding.
        let h = Acls::default().changed(
            &[AclBinding {
                host: "10.0.0.2".into(),
                ..acl(Topic, "t", Literal, "User:alice", Read, Allow)
            }],
            &[],
        );
        assert_eq!(
            h.authorize("User:alice", "10.0.0.2", Read, Topic, "t"),
            Allowed
        );
        assert_eq!(
            h.authorize("User:alice", "10.0.0.1", Read, Topic, "t"),
            Denied
        );
    }

    #[test]
    fn filters_describe_and_delete() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let acls = Acls::default().changed(
            &[
                acl(Topic, "logs-", Prefixed, "User:alice", Read, Allow),
                acl(Topic, "logs-app", Literal, "User:bob", Read, Allow),
                acl(Group, "g", Literal, "User:alice", Read, Allow),
            ],
            &[],
        );
        let any = AclFilter {
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        };
        assert_eq!(acls.matching(&any).count(), 3);
        let matching_logs_app = AclFilter {
            resource_type: Some(Topic),
            resource_name: Some("logs-app".into()),
            pattern: PatternFilter::Match,
            ..any.clone()
        };
        assert_eq!(acls.matching(&matching_logs_app).count(), 2);
        let literal_only = AclFilter {
            pattern: PatternFilter::Exactly(Literal),
            ..matching_logs_app.clone()
        };
        assert_eq!(acls.matching(&literal_only).count(), 1);
        let alice = AclFilter {
            principal: Some("User:alice".into()),
            ..any
        };
        let left = acls.changed(&[], &[alice]);
        assert_eq!(left.bindings.len(), 1);
        assert_eq!(left.bindings.iter().next().unwrap().principal, "User:bob");
    }

    #[test]
    fn stored_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("__brook")).unwrap();
        assert_eq!(Acls::load(dir.path()).unwrap(), Acls::default());
        let acls = Acls::default().changed(
            &[acl(
                ResourceType::Cluster,
                "kafka-cluster",
                PatternType::Literal,
                "User:ops",
                Operation::Alter,
                Permission::Allow,
            )],
            &[],
        );
        acls.store(dir.path()).unwrap();
        assert_eq!(Acls::load(dir.path()).unwrap(), acls);
    }
}
