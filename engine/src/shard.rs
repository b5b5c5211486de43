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

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{join_all, select_all};

use crate::catalog::{Catalog, TopicMeta, validate_topic_name};
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::group::{OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::group_log;
use crate::partition::{
    Appended, FetchedData, Partition, PartitionCell, PartitionRef, ReadPlan, run_flusher,
};
use crate::quota::{QuotaOp, Quotas};
use crate::ring::Mailbox;
use crate::segment;
use crate::types::{Offset, ShardId, TimestampMs, TopicPartition};

/// Work sent to another shard: runs on that shard's thread with its state.
pub type Job = Box<dyn FnOnce(&Rc<Shard>) + Send>;

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// How often group sessions and rebalance deadlines are checked.
const GROUP_TICK: std::time::Duration = std::time::Duration::from_millis(100);
/// The stall detector's timer period, and how late it must fire to be logged.
const STALL_PROBE: std::time::Duration = std::time::Duration::from_millis(10);
const STALL_REPORT: std::time::Duration = std::time::Duration::from_millis(20);

/// Most partitions one topic may have.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 10_000;

/// Which shard owns a partition: FNV-1a of the topic name plus the partition
/// number, so a topic's partitions spread round-robin over the shards.
pub fn shard_of(tp: &TopicPartition, shards: usize) -> ShardId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tp.topic.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    ShardId((h.wrapping_add(tp.partition as u64) % shards as u64) as usize)
}

/// How many replicas must have a batch before the producer is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    None,
    Leader,
    All,
}

/// A successful produce to one partition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Produced {
    pub base_offset: Offset,
    pub log_start: Offset,
}

/// The offset a ListOffsets query asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    MaxTimestamp,
    /// The first batch whose max timestamp is at least this.
    Timestamp(TimestampMs),
}

/// Answer to an [`OffsetQuery`]; `offset` is `None` when no batch matches the
/// timestamp. For timestamp queries `batch` holds the matching stored batch: the
/// offset is its base offset, and the caller may refine it to the first record
/// at or after the target by decoding the records.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedOffset {
    pub offset: Option<Offset>,
    pub timestamp: Option<TimestampMs>,
    pub batch: Option<Bytes>,
}

/// A refused Produce partition entry. `log_start` is the partition's log start
/// offset when the log itself refused the batches (producer state, timestamps):
/// Kafka's answer carries it then (`ReplicaManager.appendToLocalLog`), and the
/// Java producer reads it on OUT_OF_ORDER_SEQUENCE_NUMBER to tell a truncated
/// log from a lost write.
#[derive(Clone, Debug, PartialEq)]
pub struct ProduceRefused {
    pub error: EngineError,
    pub log_start: Option<Offset>,
}

impl ProduceRefused {
    fn without_log_start(error: EngineError) -> Self {
        ProduceRefused {
            error,
            log_start: None,
        }
    }
}

/// Refusals for which Kafka reports the log start offset: every error of the
/// log's own validation except the "known" ones its `appendToLocalLog` answers
/// without it (unknown partition, too large, corrupt, storage).
fn refusal_reports_log_start(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::OutOfOrderSequence { .. }
            | EngineError::InvalidProducerEpoch
            | EngineError::UnknownProducerId
            | EngineError::InvalidTimestamp { .. }
    )
}

/// A CreateTopics entry, engine-side.
#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    pub partitions: Option<u32>,
    pub replication_factor: Option<i16>,
    pub configs: BTreeMap<String, String>,
    pub validate_only: bool,
}

/// Hands out producer ids in blocks, persisting each block's end before using it,
/// so ids are never reused across restarts.
pub struct ProducerIdAllocator {
    path: std::path::PathBuf,
    state: Mutex<(u64, u64)>,
}

const PRODUCER_ID_BLOCK: u64 = 1000;

impl ProducerIdAllocator {
    fn open(data_dir: &std::path::Path) -> Result<Self, EngineError> {
        let path = crate::data_dir::producer_id_block_path(data_dir);
        let next = match std::fs::read_to_string(&path) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|e| EngineError::Storage(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(ProducerIdAllocator {
            path,
            state: Mutex::new((next, next)),
        })
    }

    pub fn allocate(&self) -> Result<u64, EngineError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 == st.1 {
            let end = st.1 + PRODUCER_ID_BLOCK;
            crate::index::write_file_atomically(&self.path, format!("{end}\n").as_bytes())?;
            st.1 = end;
        }
        st.0 += 1;
        Ok(st.0 - 1)
    }
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
}

impl EngineShared {
    /// Loads the catalog and prepares the rings; shards are started by the caller.
    pub fn new(config: EngineConfig) -> Result<Arc<Self>, EngineError> {
        std::fs::create_dir_all(crate::data_dir::meta_dir(&config.data_dir))?;
        let mut catalog = Catalog::load(&config.data_dir, &config.topic_defaults)?;
        ensure_offsets_topic(&mut catalog, &config)?;
        let producer_ids = ProducerIdAllocator::open(&config.data_dir)?;
        let initial_quotas = Arc::new(Quotas::load(&config.data_dir)?);
        let mailboxes = (0..config.shards).map(|_| Mailbox::default()).collect();
        Ok(Arc::new(EngineShared {
            config,
            mailboxes,
            producer_ids,
            initial_catalog: Arc::new(catalog),
            initial_quotas,
            offline: Mutex::default(),
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

    fn set_offline(&self, tp: TopicPartition, why: Option<String>) {
        let mut offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        match why {
            Some(why) => offline.insert(tp, why),
            None => offline.remove(&tp),
        };
    }
}

/// Creates `__consumer_offsets` (50 partitions, 100 MiB segments, kept forever)
/// the first time a data directory is used, as Kafka does on first group use.
fn ensure_offsets_topic(catalog: &mut Catalog, config: &EngineConfig) -> Result<(), EngineError> {
    if catalog.topics.contains_key(OFFSETS_TOPIC) {
        return Ok(());
    }
    let overrides = BTreeMap::from([
        ("segment.bytes".to_string(), (100u64 << 20).to_string()),
        ("retention.ms".to_string(), "-1".to_string()),
    ]);
    let meta = TopicMeta {
        name: OFFSETS_TOPIC.to_string(),
        id: crate::ids::random_uuid(),
        partitions: OFFSETS_PARTITIONS,
        config: config.topic_defaults.with_overrides(&overrides)?,
        overrides,
    };
    catalog.topics.insert(meta.name.clone(), meta);
    catalog.store(&config.data_dir)
}

/// Topics the broker owns; clients may read them but not delete them.
pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

struct LocalPartition {
    cell: PartitionRef,
    flusher: compio::runtime::JoinHandle<()>,
}

/// One core's share of the broker.
pub struct Shard {
    pub id: ShardId,
    pub shared: Arc<EngineShared>,
    partitions: RefCell<HashMap<TopicPartition, LocalPartition>>,
    catalog: RefCell<Arc<Catalog>>,
    /// Serialises catalog changes (used on shard 0 only).
    topic_lock: futures::lock::Mutex<()>,
    /// Consumer groups coordinated here (their offsets partition is on this shard).
    pub(crate) groups: RefCell<HashMap<String, crate::group::Group>>,
    /// This shard's copy of the client quotas (replaced by shard 0's broadcasts).
    quotas: RefCell<Arc<Quotas>>,
}

impl Shard {
    /// Opens (recovering) this shard's partitions. Runs on the shard's thread.
    pub fn open(id: ShardId, shared: Arc<EngineShared>) -> Result<Rc<Shard>, EngineError> {
        crate::writer::set_pool_limit(shared.config.write_pool_bytes);
        let catalog = shared.initial_catalog.clone();
        let quotas = shared.initial_quotas.clone();
        let shard = Rc::new(Shard {
            id,
            shared,
            partitions: RefCell::new(HashMap::new()),
            catalog: RefCell::new(catalog.clone()),
            topic_lock: futures::lock::Mutex::new(()),
            groups: RefCell::new(HashMap::new()),
            quotas: RefCell::new(quotas),
        });
        let started = Instant::now();
        for t in catalog.topics.values() {
            for p in (0..t.partitions).filter(|&p| shard.owns(&t.name, p)) {
                if let Err(e) = shard.open_partition(t, p) {
                    let tp = TopicPartition {
                        topic: t.name.clone(),
                        partition: p,
                    };
                    tracing::error!(partition = %tp, error = %e, "cannot open partition; it stays offline, the others serve");
                    shard.shared.set_offline(tp, Some(e.to_string()));
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
        shard.replay_group_offsets()?;
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
            let dir = Partition::dir_for(&self.shared.config.data_dir, &tp);
            records += group_log::replay_partition(&dir, &mut groups)?;
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

    /// Serves this shard's ring and retention timer until the runtime stops.
    pub fn start_background(self: &Rc<Self>) {
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
        let me = self.clone();
        compio::runtime::spawn(async move {
            loop {
                compio::time::sleep(me.shared.config.checkpoint_interval).await;
                me.ask_for_checkpoints();
            }
        })
        .detach();
        let me = self.clone();
        compio::runtime::spawn(async move {
            loop {
                compio::time::sleep(GROUP_TICK).await;
                me.tick_groups();
            }
        })
        .detach();
        let id = self.id;
        compio::runtime::spawn(async move {
            // Stall detector: a timer that fires late means the shard's thread did
            // not get back to its event loop (a blocking syscall, long CPU work, or
            // no CPU at all); slow flushes without late timers are the disk's.
            loop {
                let asked = Instant::now();
                compio::time::sleep(STALL_PROBE).await;
                let late = asked.elapsed().saturating_sub(STALL_PROBE);
                if late >= STALL_REPORT {
                    tracing::debug!(shard = id.0, ?late, "shard stalled");
                }
            }
        })
        .detach();
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

    fn partition(&self, tp: &TopicPartition) -> Result<PartitionRef, EngineError> {
        if let Some(lp) = self.partitions.borrow().get(tp) {
            return Ok(lp.cell.clone());
        }
        Err(match self.shared.offline_reason(tp) {
            Some(why) => EngineError::Storage(format!("partition {tp} is offline: {why}")),
            None => EngineError::UnknownTopicOrPartition,
        })
    }

    /// Opens (recovering) or creates one partition of `topic` on this shard.
    fn open_partition(&self, topic: &TopicMeta, p: u32) -> Result<(), EngineError> {
        let cfg = &self.shared.config;
        let tp = TopicPartition {
            topic: topic.name.clone(),
            partition: p,
        };
        if self.partitions.borrow().contains_key(&tp) {
            return Ok(());
        }
        let part = Partition::open(
            &cfg.data_dir,
            tp.clone(),
            topic.config.clone(),
            cfg.cache_bytes_per_partition,
        )?;
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
            let dir = Partition::dir_for(&self.shared.config.data_dir, &tp);
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition directory");
            }
        }
    }

    async fn close_partition(&self, tp: &TopicPartition) -> Option<PartitionRef> {
        let lp = self.partitions.borrow_mut().remove(tp)?;
        lp.cell.state.borrow_mut().begin_close();
        lp.cell.flush_event.notify();
        let _ = lp.flusher.await;
        Some(lp.cell)
    }

    /// Stops taking appends, flushes everything appended, and closes every
    /// partition, all at once: each one's last flush and clean-stop checkpoint
    /// overlap with the others' (the file system commits their fsyncs together).
    pub async fn close_all(&self) {
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

    fn apply_retention(&self) {
        let now = SystemTime::now();
        for lp in self.partitions.borrow().values() {
            lp.cell.state.borrow_mut().apply_retention(now);
        }
    }
}

// ---- produce, fetch, offsets -------------------------------------------------

impl Shard {
    /// Appends to a partition wherever it lives. The append itself happens before
    /// this returns (locally) or in ring order (remotely), so requests pipelined on
    /// one connection keep their order; the future resolves when `acks` is met.
    pub fn produce(
        self: &Rc<Self>,
        tp: TopicPartition,
        records: Bytes,
        acks: Acks,
    ) -> LocalFuture<Result<Produced, ProduceRefused>> {
        if is_internal_topic(&tp.topic) {
            let e = EngineError::InvalidTopicName(format!(
                "{} is written only by the broker",
                tp.topic
            ));
            return Box::pin(async move { Err(ProduceRefused::without_log_start(e)) });
        }
        let owner = shard_of(&tp, self.shards());
        if owner == self.id {
            return self.produce_answered(&tp, &records, acks);
        }
        let fut = self.invoke_on(owner, move |s| s.produce_answered(&tp, &records, acks));
        Box::pin(async move { fut.await.map_err(ProduceRefused::without_log_start)? })
    }

    /// [`Self::produce_local`], with the log start offset a refusal reports.
    fn produce_answered(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: Acks,
    ) -> LocalFuture<Result<Produced, ProduceRefused>> {
        let log_start = self.partition(tp).ok().map(|c| c.state.borrow().log_start);
        let fut = self.produce_local(tp, records, acks);
        Box::pin(async move {
            fut.await.map_err(|error| ProduceRefused {
                log_start: log_start.filter(|_| refusal_reports_log_start(&error)),
                error,
            })
        })
    }

    pub(crate) fn produce_local(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: Acks,
    ) -> LocalFuture<Result<Produced, EngineError>> {
        let cell = match self.partition(tp) {
            Ok(c) => c,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let appended = cell.state.borrow_mut().append(records, TimestampMs::now());
        let (base_offset, end) = match appended {
            Ok(Appended::New {
                base_offset,
                end_offset,
            }) => (base_offset, end_offset),
            Ok(Appended::Duplicate { base_offset }) => (base_offset, base_offset.next(1)),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        cell.flush_event.notify();
        let log_start = cell.state.borrow().log_start;
        let done = Produced {
            base_offset,
            log_start,
        };
        if acks == Acks::None {
            return Box::pin(async move { Ok(done) });
        }
        let rx = cell.state.borrow_mut().wait_durable(end);
        Box::pin(async move {
            rx.await.map_err(|_| EngineError::ShuttingDown)??;
            Ok(done)
        })
    }

    /// Reads batches from `offset`, at most `max_bytes` (but at least one batch).
    pub fn fetch(
        self: &Rc<Self>,
        tp: TopicPartition,
        offset: Offset,
        max_bytes: usize,
    ) -> LocalFuture<Result<FetchedData, EngineError>> {
        let owner = shard_of(&tp, self.shards());
        if owner == self.id {
            return Box::pin(Self::fetch_local(self.partition(&tp), offset, max_bytes));
        }
        let fut = self.invoke_on(owner, move |s| {
            Self::fetch_local(s.partition(&tp), offset, max_bytes)
        });
        Box::pin(async move { fut.await? })
    }

    async fn fetch_local(
        cell: Result<PartitionRef, EngineError>,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<FetchedData, EngineError> {
        let plan = cell?.state.borrow().read(offset, max_bytes)?;
        match plan {
            ReadPlan::Ready(d) => Ok(d),
            ReadPlan::Disk {
                read,
                high_watermark,
                log_start,
            } => {
                let records = segment::read_batches(read).await?;
                Ok(FetchedData {
                    records,
                    high_watermark,
                    log_start,
                })
            }
        }
    }

    /// Waits until the high watermark of any of these partitions passes the given
    /// offset, or until `deadline`. Used by long-polling fetches.
    pub async fn wait_for_data(
        self: &Rc<Self>,
        watch: Vec<(TopicPartition, Offset)>,
        deadline: Instant,
    ) {
        let mut by_shard: HashMap<ShardId, Vec<(TopicPartition, Offset)>> = HashMap::new();
        for (tp, o) in watch {
            by_shard
                .entry(shard_of(&tp, self.shards()))
                .or_default()
                .push((tp, o));
        }
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
        for (owner, list) in by_shard {
            if owner == self.id {
                waits.push(Box::pin(self.wait_local(list, deadline)));
            } else {
                let fut =
                    self.invoke_on(
                        owner,
                        move |s| async move { s.wait_local(list, deadline).await },
                    );
                waits.push(Box::pin(async move {
                    let _ = fut.await;
                }));
            }
        }
        if waits.is_empty() {
            return;
        }
        let _ = compio::time::timeout_at(deadline, select_all(waits)).await;
    }

    async fn wait_local(&self, list: Vec<(TopicPartition, Offset)>, deadline: Instant) {
        let mut rxs = Vec::new();
        for (tp, offset) in list {
            let Ok(cell) = self.partition(&tp) else {
                return;
            };
            let mut p = cell.state.borrow_mut();
            if p.high_watermark > offset {
                return;
            }
            rxs.push(p.watch_data());
        }
        if rxs.is_empty() {
            return;
        }
        let _ = compio::time::timeout_at(deadline, select_all(rxs)).await;
    }

    /// Answers a ListOffsets query for one partition.
    pub fn list_offset(
        self: &Rc<Self>,
        tp: TopicPartition,
        q: OffsetQuery,
    ) -> LocalFuture<Result<ListedOffset, EngineError>> {
        let owner = shard_of(&tp, self.shards());
        if owner == self.id {
            return Box::pin(Self::list_offset_local(self.partition(&tp), q));
        }
        let fut = self.invoke_on(owner, move |s| Self::list_offset_local(s.partition(&tp), q));
        Box::pin(async move { fut.await? })
    }

    async fn list_offset_local(
        cell: Result<PartitionRef, EngineError>,
        q: OffsetQuery,
    ) -> Result<ListedOffset, EngineError> {
        let cell = cell?;
        let none = ListedOffset {
            offset: None,
            timestamp: None,
            batch: None,
        };
        let (hw, start, target, candidates) = {
            let p = cell.state.borrow();
            let target = match q {
                OffsetQuery::Earliest => {
                    return Ok(ListedOffset {
                        offset: Some(p.log_start),
                        ..none
                    });
                }
                OffsetQuery::Latest => {
                    return Ok(ListedOffset {
                        offset: Some(p.high_watermark),
                        ..none
                    });
                }
                OffsetQuery::MaxTimestamp => match p.max_timestamp() {
                    Some(t) => t,
                    None => return Ok(none),
                },
                OffsetQuery::Timestamp(t) => t,
            };
            (
                p.high_watermark,
                p.log_start,
                target,
                p.timestamp_candidates(target)?,
            )
        };
        for (file, from, to) in candidates {
            if let Some(hit) = segment::find_timestamp(&file, from, to, target).await? {
                if hit.base_offset >= hw {
                    break;
                }
                return Ok(ListedOffset {
                    offset: Some(hit.base_offset.max(start)),
                    timestamp: Some(hit.max_timestamp),
                    batch: Some(hit.batch),
                });
            }
        }
        Ok(none)
    }

    /// A fresh producer id for InitProducerId, with epoch 0.
    pub fn init_producer_id(&self) -> Result<(u64, u16), EngineError> {
        Ok((self.shared.producer_ids.allocate()?, 0))
    }
}

// ---- client quotas --------------------------------------------------------------

impl Shard {
    pub fn quotas(&self) -> Arc<Quotas> {
        self.quotas.borrow().clone()
    }

    /// Applies AlterClientQuotas changes (on shard 0), persists and broadcasts them.
    pub async fn alter_quotas(
        self: &Rc<Self>,
        changes: Vec<(Option<String>, Vec<QuotaOp>)>,
        validate_only: bool,
    ) -> Result<Vec<Result<(), EngineError>>, EngineError> {
        if self.id.0 != 0 {
            let fut = self.invoke_on(ShardId(0), move |s| async move {
                s.alter_quotas(changes, validate_only).await
            });
            return fut.await?;
        }
        let _guard = self.topic_lock.lock().await;
        let mut next = (*self.quotas()).clone();
        let mut results = Vec::with_capacity(changes.len());
        for (entity, ops) in &changes {
            results.push(next.with_changes(entity, ops).map(|q| next = q));
        }
        if validate_only || next == *self.quotas() {
            return Ok(results);
        }
        next.store(&self.shared.config.data_dir)?;
        let next = Arc::new(next);
        self.invoke_on_all(move |shard| async move {
            *shard.quotas.borrow_mut() = next;
        })
        .await;
        Ok(results)
    }
}

// ---- topics -------------------------------------------------------------------

impl Shard {
    /// Creates a topic (on shard 0, wherever it is called).
    pub async fn create_topic(self: &Rc<Self>, t: NewTopic) -> Result<TopicMeta, EngineError> {
        if self.id.0 == 0 {
            return self.create_topic_on_zero(t).await;
        }
        self.invoke_on(ShardId(0), move |s| async move {
            s.create_topic_on_zero(t).await
        })
        .await?
    }

    async fn create_topic_on_zero(self: &Rc<Self>, t: NewTopic) -> Result<TopicMeta, EngineError> {
        let _guard = self.topic_lock.lock().await;
        let meta = self.validate_new_topic(&t)?;
        if t.validate_only {
            return Ok(meta);
        }
        let mut next = (*self.catalog()).clone();
        next.topics.insert(meta.name.clone(), meta.clone());
        self.open_then_store(&meta, 0, next).await?;
        tracing::info!(topic = %meta.name, partitions = meta.partitions, "created topic");
        Ok(meta)
    }

    /// Grows a topic to `count` partitions (Kafka's CreatePartitions), on shard 0
    /// wherever it is called. As with a new topic, the catalog is persisted
    /// before the new partitions are opened on their owners, and every shard has
    /// the new catalog before this returns. Existing partitions are untouched;
    /// note that a keyed producer's partition for a key changes with the count.
    pub async fn create_partitions(
        self: &Rc<Self>,
        name: String,
        count: u32,
        validate_only: bool,
    ) -> Result<TopicMeta, EngineError> {
        if self.id.0 == 0 {
            return self
                .create_partitions_on_zero(name, count, validate_only)
                .await;
        }
        self.invoke_on(ShardId(0), move |s| async move {
            s.create_partitions_on_zero(name, count, validate_only)
                .await
        })
        .await?
    }

    async fn create_partitions_on_zero(
        self: &Rc<Self>,
        name: String,
        count: u32,
        validate_only: bool,
    ) -> Result<TopicMeta, EngineError> {
        let _guard = self.topic_lock.lock().await;
        let Some(current) = self.catalog().topics.get(&name).cloned() else {
            return Err(EngineError::UnknownTopicOrPartition);
        };
        if is_internal_topic(&name) {
            return Err(EngineError::InvalidRequest(format!(
                "the partition count of {name} is fixed"
            )));
        }
        if count <= current.partitions {
            return Err(EngineError::PartitionsNotIncreased {
                topic: name,
                current: current.partitions,
                requested: count,
            });
        }
        if count > MAX_PARTITIONS_PER_TOPIC {
            return Err(EngineError::InvalidPartitions(format!(
                "{count} (must be at most {MAX_PARTITIONS_PER_TOPIC})"
            )));
        }
        let meta = TopicMeta {
            partitions: count,
            ..current
        };
        if validate_only {
            return Ok(meta);
        }
        let mut next = (*self.catalog()).clone();
        next.topics.insert(name.clone(), meta.clone());
        self.open_then_store(&meta, current.partitions, next)
            .await?;
        tracing::info!(topic = %name, partitions = count, "added partitions");
        Ok(meta)
    }

    /// Adds partitions `first..meta.partitions` of `meta`, all or nothing:
    /// each is created and opened on its owner, then the catalog `next` is
    /// persisted and sent to every shard. If any partition cannot be opened
    /// (no space, no file descriptors, …) or the catalog cannot be stored,
    /// every new partition is closed and its directory removed, the catalog
    /// is unchanged, and the error is returned.
    async fn open_then_store(
        self: &Rc<Self>,
        meta: &TopicMeta,
        first: u32,
        next: Catalog,
    ) -> Result<(), EngineError> {
        let m = meta.clone();
        let opened = self
            .invoke_on_all(move |shard| async move {
                for p in (first..m.partitions).filter(|&p| shard.owns(&m.name, p)) {
                    shard.open_partition(&m, p)?;
                }
                Ok::<(), EngineError>(())
            })
            .await;
        let failed = opened.into_iter().find_map(|r| r.and_then(|r| r).err());
        let res = match failed {
            Some(e) => Err(e),
            None => next.store(&self.shared.config.data_dir),
        };
        if let Err(e) = res {
            tracing::warn!(topic = %meta.name, error = %e, "cannot add partitions; undoing");
            let (name, end) = (meta.name.clone(), meta.partitions);
            self.invoke_on_all(move |shard| async move {
                shard.discard_partitions(&name, first..end).await
            })
            .await;
            return Err(e);
        }
        self.broadcast_catalog(Arc::new(next)).await;
        Ok(())
    }

    fn validate_new_topic(&self, t: &NewTopic) -> Result<TopicMeta, EngineError> {
        validate_topic_name(&t.name)?;
        if self.catalog().topics.contains_key(&t.name) {
            return Err(EngineError::TopicAlreadyExists);
        }
        if let Some(other) = self.catalog().colliding_topic(&t.name) {
            return Err(EngineError::InvalidTopicName(format!(
                "{:?} collides with existing topic {other:?} ('.' and '_' share metric names)",
                t.name
            )));
        }
        let partitions = t
            .partitions
            .unwrap_or(self.shared.config.default_partitions);
        if partitions == 0 || partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(EngineError::InvalidPartitions(format!(
                "{partitions} (must be 1 to {MAX_PARTITIONS_PER_TOPIC})"
            )));
        }
        if let Some(rf) = t.replication_factor
            && rf != 1
        {
            return Err(EngineError::InvalidReplicationFactor(rf));
        }
        let config = self
            .shared
            .config
            .topic_defaults
            .with_overrides(&t.configs)?;
        Ok(TopicMeta {
            name: t.name.clone(),
            id: crate::ids::random_uuid(),
            partitions,
            overrides: t.configs.clone(),
            config,
        })
    }

    async fn broadcast_catalog(self: &Rc<Self>, catalog: Arc<Catalog>) {
        self.invoke_on_all(move |shard| async move {
            *shard.catalog.borrow_mut() = catalog;
        })
        .await;
    }

    /// Deletes a topic and its data (on shard 0, wherever it is called).
    pub async fn delete_topic(self: &Rc<Self>, name: String) -> Result<(), EngineError> {
        if self.id.0 == 0 {
            return self.delete_topic_on_zero(name).await;
        }
        self.invoke_on(ShardId(0), move |s| async move {
            s.delete_topic_on_zero(name).await
        })
        .await?
    }

    async fn delete_topic_on_zero(self: &Rc<Self>, name: String) -> Result<(), EngineError> {
        let _guard = self.topic_lock.lock().await;
        if is_internal_topic(&name) {
            return Err(EngineError::InvalidTopicName(format!(
                "{name} is an internal topic"
            )));
        }
        let Some(meta) = self.catalog().topics.get(&name).cloned() else {
            return Err(EngineError::UnknownTopicOrPartition);
        };
        let (topic, end) = (meta.name.clone(), meta.partitions);
        self.invoke_on_all(
            move |shard| async move { shard.discard_partitions(&topic, 0..end).await },
        )
        .await;
        let mut next = (*self.catalog()).clone();
        next.topics.remove(&name);
        next.store(&self.shared.config.data_dir)?;
        self.broadcast_catalog(Arc::new(next)).await;
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
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
