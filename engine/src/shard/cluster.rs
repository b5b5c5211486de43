//! The shards' side of the cluster: each shard's copy of the image, the
//! partitions it hosts because of it, and the ways into the quorum on shard 0.
//!
//! Shard 0 runs the quorum member. Every image it applies is pushed onto every
//! shard's ring in order ([`Shard::install_image`]); a shard opens the
//! partitions the image newly gives this broker (among those it owns) and
//! closes and removes those it no longer hosts. A proposal made on any shard
//! travels to shard 0 over the ring.

use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::cluster::image::{
    Applied, BrokerInfo, Endpoint, MetaRecord, NodeId, place_replicas_racked,
};
use crate::cluster::quorum::{Quorum, QuorumConfig, raft_id};
use crate::cluster::store::QuorumStore;
use crate::cluster::{ClusterConfig, ClusterImage, NO_LEADER};
use crate::coord::group::{OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::error::EngineError;
use crate::meta::catalog::Catalog;
use crate::types::{ShardId, TopicPartition};

use super::{EngineShared, Shard};

/// Producer ids a broker takes from the quorum at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// What every shard sees of the cluster set-up (inside [`EngineShared`]).
pub struct ClusterShared {
    pub config: ClusterConfig,
    /// This start of the broker (microseconds since the epoch): registered
    /// with the quorum and carried by its follower fetches.
    pub incarnation: u64,
    pub(super) initial_image: Arc<ClusterImage>,
    store: Mutex<Option<QuorumStore>>,
}

impl ClusterShared {
    /// Opens this member's quorum log and rebuilds the image from what it
    /// holds committed: the catalog shards start from.
    pub(super) fn open(
        config: ClusterConfig,
        data_dir: &std::path::Path,
    ) -> Result<(ClusterShared, ClusterImage), EngineError> {
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        if config.controller_listen.is_none() {
            // A broker-only node keeps no quorum log: its image comes from
            // the voters once it runs.
            let shared = ClusterShared {
                config,
                incarnation,
                initial_image: Arc::new(ClusterImage::default()),
                store: Mutex::new(None),
            };
            return Ok((shared, ClusterImage::default()));
        }
        let voters = config.voters.iter().map(|(n, _)| raft_id(*n)).collect();
        let recovered = QuorumStore::open(data_dir, voters)?;
        if recovered.discarded > 0 {
            tracing::warn!(
                bytes = recovered.discarded,
                "cut a torn tail off the metadata quorum log"
            );
        }
        let store = recovered.store;
        let snap = store.latest_snapshot();
        let mut image = if snap.get_data().is_empty() {
            ClusterImage::default()
        } else {
            serde_json::from_slice(snap.get_data())
                .map_err(|e| EngineError::Storage(format!("metadata snapshot: {e}")))?
        };
        for e in store.committed_entries()? {
            if e.data.is_empty() {
                image.applied = e.index;
                continue;
            }
            match serde_json::from_slice(&e.data) {
                Ok(p) => {
                    let _ = image.apply(e.index, &p);
                }
                Err(err) => {
                    tracing::error!(index = e.index, error = %err, "undecodable metadata entry skipped");
                    image.applied = e.index;
                }
            }
        }
        tracing::info!(
            applied = image.applied,
            brokers = image.brokers.len(),
            topics = image.topics.len(),
            "metadata image rebuilt from the quorum log"
        );
        let shared = ClusterShared {
            config,
            incarnation,
            initial_image: Arc::new(image.clone()),
            store: Mutex::new(Some(store)),
        };
        Ok((shared, image))
    }

    /// The topics of the initial image, as the shards' catalog.
    pub(super) fn initial_catalog(&self, engine: &crate::config::EngineConfig) -> Catalog {
        self.initial_image.catalog(engine, self.config.node_id)
    }
}

impl Shard {
    pub fn cluster(&self) -> Option<&ClusterShared> {
        self.shared.cluster.as_ref()
    }

    /// This shard's copy of the cluster image (`None` for a single broker).
    pub fn cluster_image(&self) -> Option<Arc<ClusterImage>> {
        self.image.borrow().clone()
    }

    /// This broker's node id.
    pub fn node_id(&self) -> Option<NodeId> {
        self.cluster().map(|c| c.config.node_id)
    }

    /// Whether this broker holds a replica of `topic`-`p` (always, alone).
    pub(super) fn hosts(&self, topic: &str, p: u32) -> bool {
        let (Some(img), Some(me)) = (self.image.borrow().clone(), self.node_id()) else {
            return true;
        };
        img.partition(topic, p)
            .is_some_and(|pi| pi.replicas.contains(&me))
    }

    /// Why a partition that is not open here cannot be served here: another
    /// broker has it, or nobody does.
    pub(super) fn not_here(&self, tp: &TopicPartition) -> EngineError {
        match self.image.borrow().as_ref() {
            Some(img) if img.partition(&tp.topic, tp.partition).is_some() => {
                EngineError::NotLeaderOrFollower
            }
            _ => EngineError::UnknownTopicOrPartition,
        }
    }

    /// Checks that this broker leads `tp` (clients produce to and fetch from
    /// the leader only).
    pub(super) fn check_leader(&self, tp: &TopicPartition) -> Result<(), EngineError> {
        let (Some(img), Some(me)) = (self.image.borrow().clone(), self.node_id()) else {
            return Ok(());
        };
        match img.partition(&tp.topic, tp.partition) {
            Some(p) if p.leader == me => Ok(()),
            Some(_) => Err(EngineError::NotLeaderOrFollower),
            None => Err(EngineError::UnknownTopicOrPartition),
        }
    }

    /// Starts the quorum member on shard 0 (cluster mode only).
    pub(super) fn start_quorum(self: &Rc<Self>) -> Result<(), EngineError> {
        let Some(c) = self.cluster() else {
            return Ok(());
        };
        let mut qc = QuorumConfig::new(
            c.config.node_id,
            c.config.voters.iter().map(|(n, _)| *n).collect(),
        );
        qc.session_timeout = c.config.session_timeout;
        qc.rebalance_every = c.config.rebalance_every;
        qc.unclean_default = self.shared.config.topic_defaults.unclean_leader_election;
        let quorum = if c.config.controller_listen.is_none() {
            Quorum::observer(qc, c.incarnation)
        } else {
            let store = (c.store.lock().unwrap_or_else(|p| p.into_inner()))
                .take()
                .ok_or_else(|| EngineError::Storage("the quorum was started twice".into()))?;
            Quorum::new(qc, store, c.initial_image.clone(), c.incarnation)?
        };
        let shared = self.shared.clone();
        quorum.set_sink(Box::new(move |img| publish(&shared, img)));
        *self.quorum.borrow_mut() = Some(quorum.clone());
        compio::runtime::spawn(quorum.run()).detach();
        Ok(())
    }

    /// The quorum member (on shard 0 only).
    pub fn quorum(&self) -> Option<Rc<Quorum>> {
        self.quorum.borrow().clone()
    }

    /// Proposes `records` to the quorum from any shard and waits for the outcome.
    pub async fn propose(
        self: &Rc<Self>,
        records: Vec<MetaRecord>,
    ) -> Result<Applied, EngineError> {
        if let Some(q) = self.quorum() {
            return q.propose(records).await;
        }
        self.invoke_on(ShardId(0), move |s| async move {
            match s.quorum() {
                Some(q) => q.propose(records).await,
                None => Err(EngineError::NoQuorum("this broker runs no quorum".into())),
            }
        })
        .await?
    }

    /// Proposes and then waits until every shard of this broker has the image
    /// that includes the change, so the caller's next request sees it.
    pub(super) async fn propose_and_install(
        self: &Rc<Self>,
        records: Vec<MetaRecord>,
    ) -> Result<Applied, EngineError> {
        let outcome = self.propose(records).await?;
        // Rings are FIFO: once each shard has run this, it has installed the
        // image shard 0 pushed when the change applied.
        self.invoke_on_all(|_| async {}).await;
        Ok(outcome)
    }

    /// Takes a new image: this shard's copy, catalog and partitions.
    pub(super) fn install_image(self: &Rc<Self>, img: Arc<ClusterImage>) {
        let newer = self
            .image
            .borrow()
            .as_ref()
            .is_none_or(|old| old.applied < img.applied);
        if !newer {
            return;
        }
        *self.image.borrow_mut() = Some(img.clone());
        let me = self.node_id().unwrap_or(self.shared.config.node_id);
        let catalog = Arc::new(img.catalog(&self.shared.config, me));
        self.adopt_topic_configs(&catalog);
        *self.catalog.borrow_mut() = catalog.clone();
        for t in catalog.topics.values() {
            for p in 0..t.partitions {
                if !self.owns(&t.name, p) || !self.hosts(&t.name, p) {
                    continue;
                }
                let tp = TopicPartition {
                    topic: t.name.clone(),
                    partition: p,
                };
                if self.partitions.borrow().contains_key(&tp) {
                    continue;
                }
                let me = self.node_id();
                let copy_offline = (img.partition(&t.name, p))
                    .is_some_and(|pi| me.is_some_and(|me| pi.offline.contains(&me)));
                if copy_offline {
                    continue; // until this broker starts again
                }
                if let Err(e) = self.open_partition(t, p, true) {
                    tracing::error!(partition = %tp, error = %e, "cannot open a partition the cluster gave this broker; it stays offline");
                    self.shared.set_offline(tp.clone(), Some(e.to_string()));
                    self.report_offline(vec![tp]);
                }
            }
        }
        self.apply_roles(&img);
        let gone: Vec<TopicPartition> = (self.partitions.borrow().keys())
            .filter(|tp| !self.hosts(&tp.topic, tp.partition))
            .cloned()
            .collect();
        if !gone.is_empty() {
            let me = self.clone();
            compio::runtime::spawn(async move {
                for tp in gone {
                    tracing::info!(partition = %tp, "removing a partition this broker no longer hosts");
                    me.discard_partitions(&tp.topic, tp.partition..tp.partition + 1)
                        .await;
                }
            })
            .detach();
        }
    }

    /// This broker's copies of `tps` are offline (poisoned, or their log
    /// directory failed or would not open): tells the controller, so that
    /// they leave their ISRs and their leaderships move. Retried until the
    /// image shows them offline (the broker may not be registered yet), for
    /// at most a minute.
    pub(super) fn report_offline(self: &Rc<Self>, tps: Vec<TopicPartition>) {
        let (Some(c), Some(me)) = (self.cluster(), self.node_id()) else {
            return;
        };
        let incarnation = c.incarnation;
        let shard = self.clone();
        compio::runtime::spawn(async move {
            for _ in 0..60 {
                let img = shard.cluster_image().unwrap_or_default();
                let left: Vec<(String, u32)> = (tps.iter())
                    .filter(|tp| {
                        img.partition(&tp.topic, tp.partition)
                            .is_some_and(|pi| pi.replicas.contains(&me) && !pi.offline.contains(&me))
                    })
                    .map(|tp| (tp.topic.clone(), tp.partition))
                    .collect();
                if left.is_empty() && img.brokers.get(&me).is_some_and(|b| b.incarnation == incarnation) {
                    return;
                }
                if !left.is_empty() {
                    let record = MetaRecord::MarkReplicasOffline {
                        node: me,
                        incarnation,
                        partitions: left,
                    };
                    match shard.propose_and_install(vec![record]).await {
                        Ok(_) => {
                            tracing::warn!(partitions = ?tps, "reported this broker's copies offline to the controller");
                            continue;
                        }
                        Err(e) => tracing::debug!(error = %e, "offline report not taken yet; retrying"),
                    }
                }
                compio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
        .detach();
    }

    /// This broker serves clients now (called on shard 0 once listening):
    /// the quorum member keeps it registered with its client address.
    pub fn serve_in_cluster(&self, host: String, port: i32, endpoints: Vec<Endpoint>) {
        let (Some(q), Some(c)) = (self.quorum(), self.cluster()) else {
            return;
        };
        q.serve_as(BrokerInfo {
            node: c.config.node_id,
            host,
            port,
            rack: c.config.rack.clone(),
            incarnation: q.incarnation(),
            fenced: false,
            endpoints,
        });
    }

    /// Controlled shutdown (on shard 0): fences this broker through the
    /// quorum, which moves its leaderships away, before it stops serving.
    pub async fn leave_cluster(&self) {
        let Some(q) = self.quorum() else {
            return;
        };
        match q.leave().await {
            Ok(()) => tracing::info!("controlled shutdown: leaderships moved off this broker"),
            Err(e) => {
                tracing::warn!(error = %e, "controlled shutdown could not reach the quorum; stopping anyway")
            }
        }
    }

    /// The replicas of `count` new partitions of `topic` from `first`, on the
    /// live brokers, with replication factor `rf` (`None`: the default).
    pub(super) fn place(
        &self,
        topic: &str,
        first: u32,
        count: u32,
        rf: Option<i16>,
    ) -> Result<Vec<Vec<NodeId>>, EngineError> {
        let img = self.cluster_image().unwrap_or_default();
        let live = img.live_brokers();
        let configured = self
            .cluster()
            .and_then(|c| c.config.default_replication_factor);
        let rf = match rf.filter(|&r| r != -1).or(configured) {
            Some(r) if r < 1 => {
                return Err(EngineError::InvalidReplicationFactor(format!(
                    "{r}: must be at least 1"
                )));
            }
            Some(r) => r as usize,
            // Kafka's default.replication.factor, as the issue sets it for a
            // cluster: three copies where there are three brokers.
            None => live.len().clamp(1, 3),
        };
        let racked: Vec<(NodeId, Option<String>)> = (live.iter())
            .map(|n| (*n, img.brokers.get(n).and_then(|b| b.rack.clone())))
            .collect();
        place_replicas_racked(&racked, topic, first, count, rf)
    }

    /// A manual replica assignment, if every broker it names is registered
    /// and not fenced (Kafka: "no such broker is registered").
    pub(super) fn check_assignment(
        &self,
        assignment: &[Vec<NodeId>],
    ) -> Result<Vec<Vec<NodeId>>, EngineError> {
        let img = self.cluster_image().unwrap_or_default();
        let live = img.live_brokers();
        for (p, replicas) in assignment.iter().enumerate() {
            if let Some(b) = replicas.iter().find(|b| !live.contains(b)) {
                return Err(EngineError::InvalidReplicaAssignment(format!(
                    "the manual partition assignment of partition {p} includes broker {b}, \
                     but no such broker is registered and live"
                )));
            }
        }
        Ok(assignment.to_vec())
    }

    /// The coordinator of `group`: the leader of its `__consumer_offsets`
    /// partition (created through the quorum on first use).
    pub async fn group_coordinator(self: &Rc<Self>, group: &str) -> Result<NodeId, EngineError> {
        if self.cluster().is_none() {
            return Err(EngineError::InvalidRequest("not a cluster".into()));
        }
        self.ensure_offsets_topic_in_cluster().await?;
        let img = self.cluster_image().unwrap_or_default();
        let p = crate::coord::group::offsets_partition_of(group);
        match img.partition(OFFSETS_TOPIC, p).map(|pi| pi.leader) {
            Some(NO_LEADER) | None => Err(EngineError::CoordinatorNotAvailable),
            Some(leader) => Ok(leader),
        }
    }

    /// Checks that this broker coordinates `group` (cluster mode).
    pub(super) fn check_coordinator(&self, group: &str) -> Result<(), EngineError> {
        let (Some(img), Some(me)) = (self.cluster_image(), self.node_id()) else {
            return Ok(());
        };
        let p = crate::coord::group::offsets_partition_of(group);
        match img.partition(OFFSETS_TOPIC, p).map(|pi| pi.leader) {
            Some(l) if l == me => Ok(()),
            Some(NO_LEADER) | None => Err(EngineError::CoordinatorNotAvailable),
            Some(_) => Err(EngineError::NotCoordinator),
        }
    }

    async fn ensure_offsets_topic_in_cluster(self: &Rc<Self>) -> Result<(), EngineError> {
        if self.catalog().topics.contains_key(OFFSETS_TOPIC) {
            return Ok(());
        }
        // Kafka's offsets.topic.replication.factor (3, or every voter when
        // fewer): until that many brokers are live, FindCoordinator answers
        // COORDINATOR_NOT_AVAILABLE rather than create it under-replicated.
        let voters = self.cluster().map_or(1, |c| c.config.voters.len());
        let rf = voters.clamp(1, 3) as i16;
        let replicas = self.place(OFFSETS_TOPIC, 0, OFFSETS_PARTITIONS, Some(rf))?;
        let configs = super::offsets_topic_overrides(&self.shared.config);
        let created = self
            .propose_and_install(vec![MetaRecord::CreateTopic {
                name: OFFSETS_TOPIC.to_string(),
                id: crate::ids::random_uuid(),
                configs,
                replicas,
            }])
            .await;
        match created {
            Ok(_) | Err(EngineError::TopicAlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A producer id from this broker's block, taking a new block from the
    /// quorum when it runs out (on shard 0, wherever it is called).
    pub(super) async fn producer_id_from_quorum(self: &Rc<Self>) -> Result<u64, EngineError> {
        if self.id.0 != 0 {
            return self
                .invoke_on(
                    ShardId(0),
                    |s| async move { s.producer_id_from_quorum().await },
                )
                .await?;
        }
        let _guard = self.pid_lock.lock().await;
        let (next, end) = self.pid_block.get();
        if next < end {
            self.pid_block.set((next + 1, end));
            return Ok(next as u64);
        }
        let node = self.node_id().unwrap_or(0);
        let first = match self
            .propose(vec![MetaRecord::AllocateProducerIds {
                node,
                count: PRODUCER_ID_BLOCK,
            }])
            .await?
        {
            Applied::ProducerIds(first) => first,
            Applied::Done => return Err(EngineError::NoQuorum("no producer id block".into())),
        };
        self.pid_block.set((first + 1, first + PRODUCER_ID_BLOCK));
        Ok(first as u64)
    }
}

/// Pushes a new image onto every shard's ring, in order (called on shard 0
/// by the quorum member as each batch of entries applies).
fn publish(shared: &Arc<EngineShared>, img: Arc<ClusterImage>) {
    for mailbox in &shared.mailboxes {
        let img = img.clone();
        mailbox.push(Box::new(move |shard: &Rc<Shard>| shard.install_image(img)));
    }
}
