//! Authorization: whether a request's principal may do an operation on a
//! resource, from the ACLs in the catalog (`meta::acls`), Kafka's
//! `StandardAuthorizer` rules and settings:
//!
//! - `authorizer.class.name`: set (to anything; Kafka's
//!   `org.apache.kafka.metadata.authorizer.StandardAuthorizer`) to enforce
//!   ACLs; unset, every request is allowed and the ACL APIs answer
//!   SECURITY_DISABLED, as in Kafka.
//! - `super.users`: principals allowed everything (`User:admin;User:ops`).
//! - `allow.everyone.if.no.acl.found`: a resource no ACL names is open to all
//!   (default false: closed).
//!
//! Every API checks in its handler, with Kafka's operation and error for it
//! (ARCHITECTURE.md lists them).

use std::collections::BTreeSet;

use brook_engine::meta::acls::{Decision, Operation, ResourceType};

use crate::handlers::ClientInfo;
use crate::server::ShardServer;

/// The name of the cluster resource in ACLs.
pub const CLUSTER: &str = "kafka-cluster";

#[derive(Clone, Debug, Default)]
pub struct AuthzConfig {
    pub enabled: bool,
    pub super_users: BTreeSet<String>,
    pub allow_if_no_acl: bool,
}

impl ShardServer {
    /// Whether `client` may do `op` on `name` of type `rt`.
    pub fn allowed(
        &self,
        client: &ClientInfo,
        op: Operation,
        rt: ResourceType,
        name: &str,
    ) -> bool {
        let cfg = &self.config.authz;
        if !cfg.enabled || cfg.super_users.contains(client.principal.as_ref()) {
            return true;
        }
        let host = client.host.strip_prefix('/').unwrap_or(&client.host);
        let acls = self.shard.catalog().acls.clone();
        match acls.authorize(&client.principal, host, op, rt, name) {
            Decision::Allowed => true,
            Decision::Denied => false,
            Decision::NoAcls => cfg.allow_if_no_acl,
        }
    }

    /// Whether `client` may do `op` on the cluster.
    pub fn allowed_on_cluster(&self, client: &ClientInfo, op: Operation) -> bool {
        self.allowed(client, op, ResourceType::Cluster, CLUSTER)
    }

    /// Whether some ACL lets `client` do `op` on some topic (Kafka's
    /// `authorizeByResourceType`, which an idempotent producer needs).
    pub fn allowed_on_some_topic(&self, client: &ClientInfo, op: Operation) -> bool {
        let cfg = &self.config.authz;
        if !cfg.enabled
            || cfg.allow_if_no_acl
            || cfg.super_users.contains(client.principal.as_ref())
        {
            return true;
        }
        let host = client.host.strip_prefix('/').unwrap_or(&client.host);
        let acls = self.shard.catalog().acls.clone();
        acls.allows_some(&client.principal, host, op, ResourceType::Topic)
    }

    pub fn allowed_topic(&self, client: &ClientInfo, op: Operation, topic: &str) -> bool {
        self.allowed(client, op, ResourceType::Topic, topic)
    }

    pub fn allowed_group(&self, client: &ClientInfo, op: Operation, group: &str) -> bool {
        self.allowed(client, op, ResourceType::Group, group)
    }

    pub fn allowed_txn(&self, client: &ClientInfo, op: Operation, id: &str) -> bool {
        self.allowed(client, op, ResourceType::TransactionalId, id)
    }
}
