//! Shards: one per core, each owning its partitions, talking only through rings.
//!
//! **Lives on:** a [`Shard`] is created on its own thread (pinned to core `id`) and
//! never leaves it (`Rc`). [`EngineShared`] is the only thing all shards see: the
//! immutable config, the inbound [`Mailbox`] of every shard, and the producer id
//! allocator (a mutex touched only by InitProducerId, never by produce or fetch).
//!
//! Every public operation takes a partition and runs on the shard that owns it
//! ([`shard_of`]): directly when that is the calling shard, otherwise as a job on
//! the owner's ring whose answer comes back on a oneshot channel. The caller never
//! needs to know which.
//!
//! Topic changes are serialised on shard 0, which persists the catalog, opens or
//! removes partitions on their owners, then sends every shard the new catalog
//! before answering, so a client that sees its CreateTopics answered finds the
//! topic on whichever core its next request lands.

mod broker_configs;
mod cluster;
mod data;
mod elections;
pub mod groups;
mod moves;
mod producer_ids;
mod quotas;
pub mod reassign;
mod replication;
pub mod ring;
mod topics;
pub mod txns;

pub use broker_configs::ReplicationMeter;
pub use cluster::ClusterShared;
pub use data::{Acks, ListedOffset, OffsetQuery, ProduceRefused, Produced};
pub use producer_ids::ProducerIdAllocator;
pub use replication::{Followed, ReplicaFetched};
pub use topics::{MAX_PARTITIONS_PER_TOPIC, NewTopic, PartitionOnDisk};

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use futures::channel::oneshot;
use futures::future::join_all;

use crate::config::EngineConfig;
use crate::coord::group::{OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::coord::group_log;
use crate::error::EngineError;
use crate::log::partition::{Partition, PartitionCell, PartitionRef, run_flusher};
use crate::meta::catalog::{Catalog, TopicMeta};
use crate::meta::log_dirs::LogDirs;
use crate::meta::quota::Quotas;
use crate::shard::ring::Mailbox;
use crate::types::{ShardId, TopicPartition};

/// Work sent to another shard: runs on that shard's thread with its state.
pub type Job = Box<dyn FnOnce(&Rc<Shard>) + Send>;

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// How often group sessions and rebalance deadlines are checked.
const GROUP_TICK: std::time::Duration = std::time::Duration::from_millis(100);
/// How often a leader checks whether its partitions' ISR should change.
const ISR_CHECK: std::time::Duration = std::time::Duration::from_millis(500);
/// The stall detector's timer period, and how late it must fire to be logged.
const STALL_PROBE: std::time::Duration = std::time::Duration::from_millis(10);
/// Logged at debug level (`RUST_LOG=brook_engine::shard=debug`), so that a run
/// can count delays down to the 2 ms bar without a special build.
const STALL_REPORT: std::time::Duration = std::time::Duration::from_millis(2);

/// Which shard owns a partition: FNV-1a of the topic name plus the partition
/// number, so a topic's partitions spread round-robin over the shards.
pub fn shard_of(tp: &TopicPartition, shards: usize) -> ShardId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tp.topic.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    ShardId((h.wrapping_add(tp.partition as u64) % shards as u64) as usize)
}

/// What every shard can see: immutable after start, plus the rings.
pub struct EngineShared {
    pub config: EngineConfig,
    pub mailboxes: Vec<Mailbox<Job>>,
    pub producer_ids: ProducerIdAllocator,
    initial_catalog: Arc<Catalog>,
    initial_quotas: Arc<Quotas>,
    /// Partitions that could not be opened at start-up, with why: reported
    /// offline, refused with KAFKA_STORAGE_ERROR, while the rest serve.
    offline: Mutex<BTreeMap<TopicPartition, String>>,
    /// The log directories and where each partition lives.
    pub log_dirs: LogDirs,
    /// Set when this broker is part of a cluster.
    pub cluster: Option<ClusterShared>,
    /// Throttled replication served as a leader and fetched as a follower.
    pub leader_replication: ReplicationMeter,
    pub follower_replication: ReplicationMeter,
}

impl EngineShared {
    /// Loads the catalog and prepares the rings; shards are started by the caller.
    pub fn new(config: EngineConfig) -> Result<Arc<Self>, EngineError> {
        std::fs::create_dir_all(crate::meta::data_dir::meta_dir(&config.data_dir))?;
        let (catalog, cluster) = match config.cluster.clone() {
            // In a cluster the topics are the quorum's; `__consumer_offsets`
            // is created through it on first use.
            Some(c) => {
                let (cluster, _) = ClusterShared::open(c, &config.data_dir)?;
                (cluster.initial_catalog(&config), Some(cluster))
            }
            None => {
                let mut catalog = Catalog::load(&config)?;
                ensure_offsets_topic(&mut catalog, &config)?;
                (catalog, None)
            }
        };
        let producer_ids = ProducerIdAllocator::open(&config.data_dir)?;
        let initial_quotas = Arc::new(Quotas::load(&config.data_dir)?);
        let mailboxes = (0..config.shards).map(|_| Mailbox::default()).collect();
        let log_dirs = LogDirs::open(&config.log_dirs)?;
        Ok(Arc::new(EngineShared {
            config,
            mailboxes,
            producer_ids,
            initial_catalog: Arc::new(catalog),
            initial_quotas,
            offline: Mutex::default(),
            log_dirs,
            cluster,
            leader_replication: ReplicationMeter::default(),
            follower_replication: ReplicationMeter::default(),
        }))
    }

    /// The partitions of `topic` that are offline (could not be opened).
    pub fn offline_partitions(&self, topic: &str) -> std::collections::BTreeSet<u32> {
        let offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        offline
            .keys()
            .filter(|tp| tp.topic == topic)
            .map(|tp| tp.partition)
            .collect()
    }

    fn offline_reason(&self, tp: &TopicPartition) -> Option<String> {
        let offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        offline.get(tp).cloned()
    }

    /// How many of this broker's partitions are offline.
    pub fn offline_count(&self) -> usize {
        self.offline.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn set_offline(&self, tp: TopicPartition, why: Option<String>) {
        let mut offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        match why {
            Some(why) => offline.insert(tp, why),
            None => offline.remove(&tp),
        };
    }
}

/// Creates `__consumer_offsets` (50 partitions, 100 MiB segments, compacted)
/// the first time a data directory is used, as Kafka does on first group use.
fn ensure_offsets_topic(catalog: &mut Catalog, config: &EngineConfig) -> Result<(), EngineError> {
    let overrides = offsets_topic_overrides(config);
    if let Some(meta) = catalog.topics.get_mut(OFFSETS_TOPIC) {
        // Data directories from before compaction: compact from now on.
        if meta.overrides == overrides {
            return Ok(());
        }
        meta.config = (catalog.settings.topic_defaults).with_overrides(&overrides)?;
        meta.overrides = overrides;
        return catalog.store(&config.data_dir);
    }
    let meta = TopicMeta {
        name: OFFSETS_TOPIC.to_string(),
        id: crate::ids::random_uuid(),
        partitions: OFFSETS_PARTITIONS,
        config: (catalog.settings.topic_defaults).with_overrides(&overrides)?,
        overrides,
    };
    catalog.topics.insert(meta.name.clone(), meta);
    catalog.store(&config.data_dir)
}

/// The internal topics' settings (`__consumer_offsets`,
/// `__transaction_state`): `offsets.topic.segment.bytes` segments (100 MiB
/// by default), compacted (the latest record
/// per group offset or transactional id is what counts), never deleted by
/// age or size.
pub(super) fn offsets_topic_overrides(config: &EngineConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "segment.bytes".to_string(),
            config.offsets_segment_bytes.to_string(),
        ),
        ("retention.ms".to_string(), "-1".to_string()),
        ("cleanup.policy".to_string(), "compact".to_string()),
    ])
}

/// A disk error under `dir`: its log directory fails, and every partition in
/// it is taken offline on its owner (poisoned, then closed), so that Metadata
/// reports it offline and its requests get KAFKA_STORAGE_ERROR while the
/// other directories keep serving.
fn fail_log_dir(shared: &Arc<EngineShared>, dir: &std::path::Path, why: &str) {
    let Some(lost) = shared.log_dirs.fail(dir, why) else {
        return;
    };
    for tp in lost {
        let why = format!("log directory failed: {why}");
        shared.set_offline(tp.clone(), Some(why.clone()));
        let owner = shard_of(&tp, shared.config.shards);
        shared.mailboxes[owner.0].push(Box::new(move |s: &Rc<Shard>| {
            if let Some(cell) = s.partition_open(&tp) {
                cell.state.borrow_mut().take_offline(why);
            }
            let s = s.clone();
            compio::runtime::spawn(async move {
                s.close_partition(&tp).await;
            })
            .detach();
        }));
    }
}

/// Topics the broker owns; clients may read them but not delete them.
pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == crate::coord::txn::TXN_TOPIC
}

pub(crate) struct LocalPartition {
    pub(crate) cell: PartitionRef,
    flusher: compio::runtime::JoinHandle<()>,
}

/// One core's share of the broker.
pub struct Shard {
    pub id: ShardId,
    pub shared: Arc<EngineShared>,
    pub(crate) partitions: RefCell<HashMap<TopicPartition, LocalPartition>>,
    catalog: RefCell<Arc<Catalog>>,
    /// Serialises catalog changes (used on shard 0 only).
    topic_lock: futures::lock::Mutex<()>,
    /// Consumer groups coordinated here (their offsets partition is on this shard).
    pub(crate) groups: RefCell<HashMap<String, crate::coord::group::Group>>,
    /// Partitions of this shard on their way to another log directory.
    moving: RefCell<std::collections::HashSet<TopicPartition>>,
    /// This shard's copy of the client quotas (replaced by shard 0's broadcasts).
    quotas: RefCell<Arc<Quotas>>,
    /// This shard's copy of the cluster image (cluster mode), replaced in
    /// order by shard 0's quorum member.
    image: RefCell<Option<Arc<crate::cluster::ClusterImage>>>,
    /// The quorum member (shard 0, cluster mode).
    quorum: RefCell<Option<Rc<crate::cluster::quorum::Quorum>>>,
    /// This broker's producer-id block from the quorum: (next, end) (shard 0).
    pid_block: std::cell::Cell<(i64, i64)>,
    pid_lock: futures::lock::Mutex<()>,
    /// Set when the image changed what this shard leads or follows.
    replication_changed: crate::log::partition::LocalEvent,
    /// Partitions led here whose ISR change is with the quorum.
    isr_pending: RefCell<std::collections::HashSet<TopicPartition>>,
    /// Checkpointed high watermarks not yet used (cluster mode; taken by the
    /// first open of each partition).
    hw_restore: RefCell<HashMap<TopicPartition, crate::log::hw_checkpoint::Entry>>,
    /// The checkpoint text last written in each log directory.
    hw_written: RefCell<HashMap<std::path::PathBuf, String>>,
    /// Transactional ids coordinated here (their `__transaction_state`
    /// partition is on this shard).
    txns: RefCell<HashMap<String, crate::coord::txn::TxnMeta>>,
    /// Transactional ids with an operation in flight.
    txn_busy: RefCell<std::collections::HashSet<String>>,
    /// Transactional ids whose markers a task is writing (one per id).
    txn_completing: RefCell<std::collections::HashSet<String>>,
    /// How markers reach other brokers (installed by the network layer).
    marker_sender: RefCell<Option<txns::MarkerSender>>,
    /// How a partition leader asks another broker's transaction coordinator
    /// about a batch (installed by the network layer).
    txn_partition_sender: RefCell<Option<txns::TxnPartitionSender>>,
    /// Transactional batches waiting for their coordinator's check, per
    /// partition and producer id; later batches of that producer queue
    /// behind the last one, so appends keep their order.
    txn_checks: RefCell<HashMap<(TopicPartition, u64), txns::PendingCheck>>,
    txn_check_seq: std::cell::Cell<u64>,
}

impl Shard {
    /// Opens (recovering) this shard's partitions. Runs on the shard's thread.
    pub fn open(id: ShardId, shared: Arc<EngineShared>) -> Result<Rc<Shard>, EngineError> {
        crate::log::writer::set_pool_limit(shared.config.write_pool_bytes);
        let catalog = shared.initial_catalog.clone();
        let quotas = shared.initial_quotas.clone();
        let image = shared.cluster.as_ref().map(|c| c.initial_image.clone());
        let shard = Rc::new(Shard {
            id,
            shared,
            partitions: RefCell::new(HashMap::new()),
            catalog: RefCell::new(catalog.clone()),
            topic_lock: futures::lock::Mutex::new(()),
            groups: RefCell::new(HashMap::new()),
            quotas: RefCell::new(quotas),
            moving: RefCell::default(),
            image: RefCell::new(image),
            quorum: RefCell::default(),
            pid_block: std::cell::Cell::new((0, 0)),
            pid_lock: futures::lock::Mutex::new(()),
            replication_changed: Default::default(),
            isr_pending: RefCell::default(),
            hw_restore: RefCell::default(),
            hw_written: RefCell::default(),
            txns: RefCell::default(),
            txn_busy: RefCell::default(),
            txn_completing: RefCell::default(),
            marker_sender: RefCell::default(),
            txn_partition_sender: RefCell::default(),
            txn_checks: RefCell::default(),
            txn_check_seq: std::cell::Cell::new(0),
        });
        if shard.shared.cluster.is_some() {
            let roots: Vec<std::path::PathBuf> = (shard.shared.log_dirs.describe().into_iter())
                .filter(|d| d.failed.is_none())
                .map(|d| d.path)
                .collect();
            *shard.hw_restore.borrow_mut() = crate::log::hw_checkpoint::load(&roots, id.0);
        }
        let started = Instant::now();
        for t in catalog.topics.values() {
            for p in
                (0..t.partitions).filter(|&p| shard.owns(&t.name, p) && shard.hosts(&t.name, p))
            {
                // A partition the cluster gave this broker while it was down
                // is created; the catalog's own partitions must be found.
                let create = shard.shared.cluster.is_some();
                if let Err(e) = shard.open_partition(t, p, create) {
                    let tp = TopicPartition {
                        topic: t.name.clone(),
                        partition: p,
                    };
                    tracing::error!(partition = %tp, error = %e, "cannot open partition; it stays offline, the others serve");
                    shard.shared.set_offline(tp.clone(), Some(e.to_string()));
                    shard.report_offline(vec![tp]);
                }
            }
        }
        let read_bytes: u64 = (shard.partitions.borrow().values())
            .map(|lp| lp.cell.state.borrow().recovery_read_bytes)
            .sum();
        tracing::info!(
            shard = id.0,
            partitions = shard.partitions.borrow().len(),
            read_bytes,
            took = ?started.elapsed(),
            "opened partitions"
        );
        match shard.cluster_image() {
            // Groups are loaded as this broker takes the lead of their
            // __consumer_offsets partitions (`apply_roles`).
            Some(img) => shard.apply_roles(&img),
            None => {
                shard.replay_group_offsets()?;
                shard.replay_txns()?;
            }
        }
        let shared = shard.shared.clone();
        crate::log::partition::on_disk_failure(Rc::new(move |dir, why| {
            fail_log_dir(&shared, dir, why)
        }));
        if shard.shared.cluster.is_some() {
            let weak = Rc::downgrade(&shard);
            crate::log::partition::on_poisoned(Rc::new(move |tp| {
                if let Some(s) = weak.upgrade() {
                    s.report_offline(vec![tp.clone()]);
                }
            }));
        }
        Ok(shard)
    }

    /// Rebuilds committed offsets from this shard's `__consumer_offsets` partitions.
    fn replay_group_offsets(&self) -> Result<(), EngineError> {
        let mut groups = self.groups.borrow_mut();
        let mut records = 0;
        for p in (0..OFFSETS_PARTITIONS).filter(|&p| self.owns(OFFSETS_TOPIC, p)) {
            let tp = TopicPartition {
                topic: OFFSETS_TOPIC.to_string(),
                partition: p,
            };
            if !self.partitions.borrow().contains_key(&tp) {
                continue; // offline: its groups are unavailable until it is back
            }
            let root = self.shared.log_dirs.locate(&tp, false)?;
            records += group_log::replay_partition(&Partition::dir_for(&root, &tp), &mut groups)?;
        }
        if records > 0 {
            tracing::info!(
                shard = self.id.0,
                groups = groups.len(),
                records,
                "rebuilt committed offsets"
            );
        }
        Ok(())
    }

    /// Serves this shard's ring and retention timer until the runtime stops;
    /// shard 0 of a cluster member also runs the quorum member.
    pub fn start_background(self: &Rc<Self>) -> Result<(), EngineError> {
        if self.id.0 == 0 {
            self.start_quorum()?;
        }
        let me = self.clone();
        compio::runtime::spawn(async move {
            let mut jobs = Vec::new();
            loop {
                me.shared.mailboxes[me.id.0].recv_batch(&mut jobs).await;
                for job in jobs.drain(..) {
                    job(&me);
                }
            }
        })
        .detach();
        let me = self.clone();
        compio::runtime::spawn(async move {
            loop {
                compio::time::sleep(me.shared.config.retention_check_interval).await;
                me.apply_retention();
            }
        })
        .detach();
        if self.shared.config.cleaner.enabled {
            let me = self.clone();
            compio::runtime::spawn(async move { me.run_cleaner().await }).detach();
        }
        let me = self.clone();
        compio::runtime::spawn(async move {
            loop {
                compio::time::sleep(me.shared.config.checkpoint_interval).await;
                me.ask_for_checkpoints();
                me.write_hw_checkpoints().await;
            }
        })
        .detach();
        let me = self.clone();
        compio::runtime::spawn(async move {
            loop {
                compio::time::sleep(GROUP_TICK).await;
                me.tick_groups();
                me.tick_txns();
            }
        })
        .detach();
        if self.shared.cluster.is_some() {
            let me = self.clone();
            compio::runtime::spawn(async move {
                loop {
                    compio::time::sleep(ISR_CHECK).await;
                    me.maintain_isr();
                }
            })
            .detach();
        }
        let id = self.id;
        compio::runtime::spawn(async move {
            // Stall detector: a timer that fires late means the shard's thread did
            // not get back to its event loop (a blocking syscall, long CPU work, or
            // no CPU at all); slow flushes without late timers are the disk's.
            loop {
                let asked = Instant::now();
                compio::time::sleep(STALL_PROBE).await;
                let late = asked.elapsed().saturating_sub(STALL_PROBE);
                crate::metrics::count(|m| m.loop_delay_seconds.observe(late));
                if late >= STALL_REPORT {
                    tracing::debug!(shard = id.0, ?late, "shard stalled");
                }
            }
        })
        .detach();
        Ok(())
    }

    pub fn shards(&self) -> usize {
        self.shared.config.shards
    }

    fn owns(&self, topic: &str, partition: u32) -> bool {
        let tp = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        shard_of(&tp, self.shards()) == self.id
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// Runs `f` on shard `target` and returns its output here.
    pub fn invoke_on<R, F, Fut>(
        &self,
        target: ShardId,
        f: F,
    ) -> impl Future<Output = Result<R, EngineError>> + use<R, F, Fut>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |shard: &Rc<Shard>| {
            // `f` runs now, in ring order: its synchronous part (e.g. an append)
            // keeps the order in which the sender queued it.
            let fut = f(shard.clone());
            compio::runtime::spawn(async move {
                let _ = tx.send(fut.await);
            })
            .detach();
        });
        self.shared.mailboxes[target.0].push(job);
        async move { rx.await.map_err(|_| EngineError::ShuttingDown) }
    }

    /// Runs `f` on every shard (this one included, through its own ring, so all
    /// see the same order) and waits for all; the results in shard order.
    pub async fn invoke_on_all<R, F, Fut>(&self, f: F) -> Vec<Result<R, EngineError>>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        join_all((0..self.shards()).map(|s| self.invoke_on(ShardId(s), f.clone()))).await
    }

    /// The partition if it is open on this shard.
    fn partition_open(&self, tp: &TopicPartition) -> Option<PartitionRef> {
        self.partitions.borrow().get(tp).map(|lp| lp.cell.clone())
    }

    fn partition(&self, tp: &TopicPartition) -> Result<PartitionRef, EngineError> {
        if let Some(lp) = self.partitions.borrow().get(tp) {
            return Ok(lp.cell.clone());
        }
        Err(match self.shared.offline_reason(tp) {
            Some(why) => EngineError::Storage(format!("partition {tp} is offline: {why}")),
            None => self.not_here(tp),
        })
    }

    /// The partition, if this broker leads it (clients read and write leaders).
    fn led_partition(&self, tp: &TopicPartition) -> Result<PartitionRef, EngineError> {
        self.check_leader(tp)?;
        self.partition(tp)
    }

    /// Opens (recovering) or creates one partition of `topic` on this shard.
    /// `create`: a new partition (CreateTopics), placed on a log directory;
    /// otherwise one of the catalog's, opened where it is found.
    fn open_partition(&self, topic: &TopicMeta, p: u32, create: bool) -> Result<(), EngineError> {
        let cfg = &self.shared.config;
        let tp = TopicPartition {
            topic: topic.name.clone(),
            partition: p,
        };
        if self.partitions.borrow().contains_key(&tp) {
            return Ok(());
        }
        let root = self.shared.log_dirs.locate(&tp, create)?;
        let mut part = Partition::open(
            &root,
            tp.clone(),
            topic.config.clone(),
            cfg.cache_bytes_per_partition,
        )?;
        if self.shared.cluster.is_some() {
            match self.hw_restore.borrow_mut().remove(&tp) {
                Some((id, hw)) if id == topic.id => {
                    part.restore_high_watermark(crate::types::Offset(hw))
                }
                _ => part.relearn_high_watermark(),
            }
        }
        let cell = PartitionCell::new(part);
        let flusher = compio::runtime::spawn(run_flusher(cell.clone()));
        self.partitions
            .borrow_mut()
            .insert(tp, LocalPartition { cell, flusher });
        Ok(())
    }

    /// Closes partitions `range` of `topic` on this shard (those it owns and
    /// has open) and removes their directories.
    async fn discard_partitions(&self, topic: &str, range: std::ops::Range<u32>) {
        for p in range.filter(|&p| self.owns(topic, p)) {
            let tp = TopicPartition {
                topic: topic.to_string(),
                partition: p,
            };
            self.close_partition(&tp).await;
            self.shared.set_offline(tp.clone(), None);
            if let Ok(root) = self.shared.log_dirs.locate(&tp, false) {
                let dir = Partition::dir_for(&root, &tp);
                if let Err(e) = std::fs::remove_dir_all(&dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition directory");
                }
            }
            self.shared.log_dirs.forget(&tp);
        }
    }

    async fn close_partition(&self, tp: &TopicPartition) -> Option<PartitionRef> {
        let lp = self.partitions.borrow_mut().remove(tp)?;
        lp.cell.state.borrow_mut().begin_close();
        lp.cell.stop_cleaner(false).await;
        lp.cell.flush_event.notify();
        let _ = lp.flusher.await;
        Some(lp.cell)
    }

    /// Stops taking appends, flushes everything appended, and closes every
    /// partition, all at once: each one's last flush and clean-stop checkpoint
    /// overlap with the others' (the file system commits their fsyncs together).
    pub async fn close_all(&self) {
        self.write_hw_checkpoints().await;
        let tps: Vec<TopicPartition> = self.partitions.borrow().keys().cloned().collect();
        join_all(tps.iter().map(|tp| self.close_partition(tp))).await;
    }

    /// Has every partition that moved since its last recovery checkpoint take
    /// a new one (with its next flush that syncs, or at once if idle).
    fn ask_for_checkpoints(&self) {
        for lp in self.partitions.borrow().values() {
            if lp.cell.state.borrow_mut().want_checkpoint() {
                lp.cell.flush_event.notify();
            }
        }
    }

    /// Writes this shard's high-watermark checkpoint in each log directory
    /// where it changed (cluster mode).
    async fn write_hw_checkpoints(&self) {
        use crate::log::hw_checkpoint;
        if self.shared.cluster.is_none() {
            return;
        }
        let catalog = self.catalog();
        let mut by_dir: HashMap<std::path::PathBuf, Vec<_>> = HashMap::new();
        for root in self.hw_written.borrow().keys() {
            by_dir.entry(root.clone()).or_default();
        }
        for (tp, lp) in self.partitions.borrow().iter() {
            let p = lp.cell.state.borrow();
            let (Some(meta), Some(root)) = (catalog.topics.get(&tp.topic), p.dir.parent()) else {
                continue;
            };
            (by_dir.entry(root.to_path_buf()).or_default()).push((
                tp.clone(),
                meta.id,
                p.high_watermark.0,
            ));
        }
        for (root, mut entries) in by_dir {
            entries.sort_by(|a, b| (&a.0.topic, a.0.partition).cmp(&(&b.0.topic, b.0.partition)));
            let text = hw_checkpoint::encode(&entries);
            if self.hw_written.borrow().get(&root) == Some(&text) {
                continue;
            }
            let path = hw_checkpoint::path(&root, self.id.0);
            let t = text.clone();
            match crate::log::partition::blocking(move || hw_checkpoint::store(&path, &t)).await {
                Ok(()) => {
                    self.hw_written.borrow_mut().insert(root, text);
                }
                Err(e) => {
                    tracing::warn!(dir = %root.display(), error = %e, "cannot write the high-watermark checkpoint")
                }
            }
        }
    }

    /// The shard's log cleaner: one pass at a time over its compacted
    /// partitions, then a `log.cleaner.backoff.ms` sleep when none needed one.
    async fn run_cleaner(&self) {
        loop {
            // Dynamic settings (`log.cleaner.*`) apply from the next pass.
            let cfg = self.catalog().settings.cleaner.clone();
            let cells: Vec<PartitionRef> = (self.partitions.borrow().values())
                .filter(|lp| lp.cell.state.borrow().config.cleanup_compact)
                .map(|lp| lp.cell.clone())
                .collect();
            let mut cleaned = false;
            for cell in cells {
                match cell.clean(&cfg).await {
                    Ok(Some(done)) => {
                        cleaned = true;
                        let tp = cell.state.borrow().tp.clone();
                        crate::metrics::count(|m| {
                            m.cleaner_passes += 1;
                            m.cleaner_bytes_read += done.bytes_read;
                            m.cleaner_bytes_written += done.bytes_written;
                            m.cleaner_records_removed += done.records_removed;
                        });
                        tracing::info!(partition = %tp, read = done.bytes_read, written = done.bytes_written, removed = done.records_removed, "log cleaner pass");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let tp = cell.state.borrow().tp.clone();
                        tracing::warn!(partition = %tp, error = %e, "log cleaner pass failed; retried after the backoff");
                    }
                }
            }
            if !cleaned {
                compio::time::sleep(cfg.backoff).await;
            }
        }
    }

    fn apply_retention(&self) {
        let now = SystemTime::now();
        for lp in self.partitions.borrow().values() {
            lp.cell.state.borrow_mut().apply_retention(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_over_shards() {
        let mut counts = [0usize; 4];
        for p in 0..400 {
            let tp = TopicPartition {
                topic: "events".into(),
                partition: p,
            };
            counts[shard_of(&tp, 4).0] += 1;
        }
        assert_eq!(counts, [100; 4], "consecutive partitions go round-robin");
    }
}
