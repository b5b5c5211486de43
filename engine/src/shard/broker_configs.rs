//! Dynamic broker settings, SCRAM credentials, ACLs and the broker's place in
//! the cluster, changed from the admin APIs: IncrementalAlterConfigs /
//! AlterConfigs on a broker resource (see `meta::broker_configs`),
//! AlterUserScramCredentials (`meta::scram`), CreateAcls / DeleteAcls
//! (`meta::acls`), and UnregisterBroker.
//!
//! Both run on shard 0, like topic changes: it checks the change against the
//! settings it has, then stores it (the quorum in a cluster, the broker's
//! own file alone) and every shard takes the re-resolved catalog before the
//! answer goes out.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Shard;
use crate::cluster::NodeId;
use crate::cluster::image::MetaRecord;
use crate::config::ConfigChange;
use crate::error::EngineError;
use crate::meta::acls::{AclBinding, AclFilter};
use crate::meta::quota::RateWindow;
use crate::meta::scram::ScramChange;
use crate::types::ShardId;

/// The bytes of throttled replication this broker moved over the last few
/// seconds, in one direction (leader or follower), shared by its shards:
/// Kafka's `*.replication.throttled.rate` is a limit per broker.
#[derive(Default)]
pub struct ReplicationMeter(Mutex<Option<RateWindow>>);

impl ReplicationMeter {
    /// Whether throttled replication is over `rate` bytes/s (never when
    /// there is no limit).
    pub fn exceeded(&self, rate: Option<u64>) -> bool {
        let Some(rate) = rate else {
            return false;
        };
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.as_mut()
            .is_some_and(|w| w.excess(rate as f64, Instant::now()) > 0.0)
    }

    pub fn record(&self, bytes: usize) {
        let now = Instant::now();
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.get_or_insert_with(|| RateWindow::new(now))
            .record(bytes, now);
    }
}

impl Shard {
    /// Changes the dynamic settings of broker `node`, or (`None`) the
    /// cluster-wide default, as IncrementalAlterConfigs (`Update`) or
    /// AlterConfigs (`Replace`) asks; on shard 0 wherever it is called.
    pub async fn alter_broker_configs(
        self: &Rc<Self>,
        node: Option<NodeId>,
        change: ConfigChange,
        validate_only: bool,
    ) -> Result<(), EngineError> {
        if self.id.0 != 0 {
            let fut = self.invoke_on(ShardId(0), move |s| async move {
                s.alter_broker_configs(node, change, validate_only).await
            });
            return fut.await?;
        }
        let _guard = self.topic_lock.lock().await;
        let catalog = self.catalog();
        let next = (catalog.broker_configs).checked_change(&self.shared.config, node, &change)?;
        if validate_only || next == catalog.broker_configs {
            return Ok(());
        }
        if self.shared.cluster.is_some() {
            let record = MetaRecord::AlterBrokerConfigs { node, change };
            self.propose_and_install(vec![record]).await?;
        } else {
            next.store(&self.shared.config.data_dir)?;
            let mut updated = (*catalog).clone();
            updated.broker_configs = next;
            updated.resolve(&self.shared.config, self.shared.config.node_id);
            self.broadcast_catalog(Arc::new(updated)).await;
        }
        tracing::info!(broker = ?node, "altered dynamic broker configs");
        Ok(())
    }

    /// Whether throttled partitions this broker follows must sit out their
    /// next fetch (the broker is over `follower.replication.throttled.rate`).
    pub fn follower_throttle_exceeded(&self) -> bool {
        let rate = self.catalog().settings.follower_replication_rate;
        self.shared.follower_replication.exceeded(rate)
    }

    /// Counts bytes a throttled partition fetched as a follower.
    pub fn record_follower_throttled(&self, bytes: usize) {
        self.shared.follower_replication.record(bytes);
    }

    /// AlterUserScramCredentials: `changes` checked one by one against the
    /// credentials as they stand (with the earlier changes applied); the
    /// accepted ones are stored together (the quorum in a cluster, the
    /// broker's file alone) before the answer. One result per change, in
    /// order.
    pub async fn alter_scram_credentials(
        self: &Rc<Self>,
        changes: Vec<ScramChange>,
    ) -> Result<Vec<Result<(), EngineError>>, EngineError> {
        if self.id.0 != 0 {
            let fut = self.invoke_on(ShardId(0), move |s| async move {
                s.alter_scram_credentials(changes).await
            });
            return fut.await?;
        }
        let _guard = self.topic_lock.lock().await;
        let catalog = self.catalog();
        let mut next = (*catalog.scram).clone();
        let mut accepted = Vec::new();
        let mut results = Vec::new();
        for c in changes {
            let r = next.check(&c);
            if r.is_ok() {
                next = next.changed(std::slice::from_ref(&c));
                accepted.push(c);
            }
            results.push(r);
        }
        if accepted.is_empty() {
            return Ok(results);
        }
        let users: std::collections::BTreeSet<String> =
            accepted.iter().map(|c| c.user().to_string()).collect();
        if self.shared.cluster.is_some() {
            let record = MetaRecord::AlterScramCredentials { changes: accepted };
            self.propose_and_install(vec![record]).await?;
        } else {
            next.store(&self.shared.config.data_dir)?;
            let mut updated = (*catalog).clone();
            updated.scram = Arc::new(next);
            self.broadcast_catalog(Arc::new(updated)).await;
        }
        tracing::info!(?users, "altered SCRAM credentials");
        Ok(results)
    }

    /// CreateAcls and DeleteAcls: adds `created` and removes every binding
    /// matching one of `deleted`, stored (the quorum in a cluster, the
    /// broker's file alone) before the answer. Returns, per filter, the
    /// bindings it removed.
    pub async fn alter_acls(
        self: &Rc<Self>,
        created: Vec<AclBinding>,
        deleted: Vec<AclFilter>,
    ) -> Result<Vec<Vec<AclBinding>>, EngineError> {
        if self.id.0 != 0 {
            let fut = self.invoke_on(ShardId(0), move |s| async move {
                s.alter_acls(created, deleted).await
            });
            return fut.await?;
        }
        let _guard = self.topic_lock.lock().await;
        let catalog = self.catalog();
        let removed: Vec<Vec<AclBinding>> = (deleted.iter())
            .map(|f| catalog.acls.matching(f).cloned().collect())
            .collect();
        let next = catalog.acls.changed(&created, &deleted);
        if next == *catalog.acls {
            return Ok(removed);
        }
        let (n_created, n_removed) = (created.len(), removed.iter().map(Vec::len).sum::<usize>());
        if self.shared.cluster.is_some() {
            let record = MetaRecord::AlterAcls { created, deleted };
            self.propose_and_install(vec![record]).await?;
        } else {
            next.store(&self.shared.config.data_dir)?;
            let mut updated = (*catalog).clone();
            updated.acls = Arc::new(next);
            self.broadcast_catalog(Arc::new(updated)).await;
        }
        tracing::info!(created = n_created, removed = n_removed, "altered ACLs");
        Ok(removed)
    }

    /// UnregisterBroker: retired broker `node`, stopped (fenced), leaves the
    /// cluster's broker list. Replicas still assigned to it stay offline
    /// until they are reassigned, as in Kafka.
    pub async fn unregister_broker(self: &Rc<Self>, node: NodeId) -> Result<(), EngineError> {
        if self.shared.cluster.is_none() {
            return Err(match node == self.shared.config.node_id {
                true => EngineError::InvalidRequest(
                    "this broker runs alone and cannot unregister itself".into(),
                ),
                false => EngineError::BrokerIdNotRegistered(node),
            });
        }
        self.propose_and_install(vec![MetaRecord::UnregisterBroker { node }])
            .await?;
        tracing::info!(broker = node, "unregistered broker");
        Ok(())
    }
}
