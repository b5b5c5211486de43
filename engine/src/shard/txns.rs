//! Transaction coordinator operations on [`Shard`]: each runs on the shard that
//! owns the transactional id's `__transaction_state` partition (in a cluster,
//! on the broker that leads it), wherever it is called from.
//!
//! Every state change is appended to that partition with acks=all before it
//! takes effect or is answered, so a coordinator that starts (or takes over)
//! rebuilds the same state from the log (`coord::txn::replay_partition`) and
//! finishes any commit or abort whose markers may be missing. Markers go to
//! each partition's leader: here through the owning shard, on another broker
//! through WriteTxnMarkers (the [`MarkerSender`] the network layer installs).
//!
//! One operation per transactional id at a time: another one meanwhile, or any
//! while markers are being written, gets CONCURRENT_TRANSACTIONS, which every
//! client retries. One task per id writes markers (`complete_txn`).
//!
//! Partition leaders check a transactional batch with the coordinator before
//! appending the producer's first batch of a transaction there
//! (`produce_in_txn`, KIP-890): verify under transaction version 1, add the
//! partition under version 2; on another broker through AddPartitionsToTxn
//! v5 (the [`TxnPartitionSender`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::Shared;

use super::{LocalFuture, Shard, shard_of};
use crate::cluster::NO_LEADER;
use crate::cluster::image::NodeId;
use crate::coord::group::OFFSETS_TOPIC;
use crate::coord::txn::{
    self, EndStep, InitStep, MAX_TIMEOUT_MS, TXN_PARTITIONS, TXN_TOPIC, TxnMeta, TxnState,
};
use crate::error::EngineError;
use crate::log::batch;
use crate::log::batch::Marker;
use crate::shard::Acks;
use crate::shard::data::{ProduceRefused, Produced};
use crate::shard::groups::as_coordinator_error;
use crate::types::{TimestampMs, TopicPartition};

/// The markers one broker is asked to write (one WriteTxnMarkers entry).
#[derive(Clone, Debug)]
pub struct MarkerRequest {
    pub producer_id: u64,
    pub epoch: u16,
    pub marker: Marker,
    pub partitions: Vec<TopicPartition>,
}

/// Per-partition outcome of a [`MarkerRequest`].
pub type MarkerResults = Vec<(TopicPartition, Result<(), EngineError>)>;

/// Sends a [`MarkerRequest`] to another broker; installed by the network layer.
pub type MarkerSender = Rc<dyn Fn(NodeId, MarkerRequest) -> LocalFuture<MarkerResults>>;

/// How a partition leader checks a transactional batch with the
/// transaction coordinator before appending it (KIP-890).
#[derive(Clone, Debug)]
pub struct TxnCheck {
    pub transactional_id: String,
    /// Transaction version 2 (Produce v12+): the leader adds the partition
    /// to the transaction itself. Otherwise it only verifies that the
    /// producer added it (AddPartitionsToTxn with verifyOnly).
    pub add: bool,
}

/// One partition check sent to another broker's coordinator
/// (AddPartitionsToTxn v5 between brokers).
#[derive(Clone, Debug)]
pub struct TxnPartitionRequest {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub partition: TopicPartition,
    pub verify_only: bool,
}

/// Sends a [`TxnPartitionRequest`]; installed by the network layer.
pub type TxnPartitionSender =
    Rc<dyn Fn(NodeId, TxnPartitionRequest) -> LocalFuture<Result<(), EngineError>>>;

/// A batch being checked: its sequence number and a future that resolves
/// once its append is issued (or refused).
pub(super) type PendingCheck = (u64, Shared<oneshot::Receiver<()>>);

/// How often, and how many times, an AddPartitionsToTxn looks again whether
/// the previous transaction has completed (at most 100 ms in all).
const SETTLE_POLL: Duration = Duration::from_millis(1);
const SETTLE_POLLS: u32 = 100;

/// Longest wait between two rounds of markers a partition refused.
const MARKER_RETRY_MAX: Duration = Duration::from_secs(1);

/// A DescribeTransactions / ListTransactions row.
#[derive(Clone, Debug, PartialEq)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub producer_id: u64,
    pub epoch: u16,
    pub state: &'static str,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<TopicPartition>,
}

fn now_ms() -> i64 {
    TimestampMs::now().0
}

fn txn_tp(transactional_id: &str) -> TopicPartition {
    TopicPartition {
        topic: TXN_TOPIC.to_string(),
        partition: txn::txn_partition_of(transactional_id),
    }
}

/// Holds a transactional id in one of the shard's sets (`txn_busy`: one
/// operation at a time; `txn_completing`: one marker task); released on drop.
struct Held {
    shard: Rc<Shard>,
    id: String,
    set: fn(&Shard) -> &RefCell<HashSet<String>>,
}

impl Held {
    fn take(
        shard: &Rc<Shard>,
        id: &str,
        set: fn(&Shard) -> &RefCell<HashSet<String>>,
    ) -> Option<Held> {
        set(shard)
            .borrow_mut()
            .insert(id.to_string())
            .then(|| Held {
                shard: shard.clone(),
                id: id.to_string(),
                set,
            })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.set)(&self.shard).borrow_mut().remove(&self.id);
    }
}

impl Shard {
    /// Installs how markers reach partitions led by other brokers.
    pub fn set_marker_sender(&self, f: MarkerSender) {
        *self.marker_sender.borrow_mut() = Some(f);
    }

    /// Whether this broker coordinates `transactional_id` (leads its partition).
    fn check_txn_coordinator(&self, transactional_id: &str) -> Result<(), EngineError> {
        let p = txn::txn_partition_of(transactional_id);
        match (self.cluster_image(), self.node_id()) {
            (Some(img), Some(me)) => match img.partition(TXN_TOPIC, p).map(|pi| pi.leader) {
                Some(l) if l == me => Ok(()),
                Some(NO_LEADER) | None => Err(EngineError::CoordinatorNotAvailable),
                Some(_) => Err(EngineError::NotCoordinator),
            },
            _ if self.catalog().topics.contains_key(TXN_TOPIC) => Ok(()),
            _ => Err(EngineError::NotCoordinator),
        }
    }

    /// Runs `f` on the shard that coordinates `transactional_id`.
    fn on_txn<R, F, Fut>(
        self: &Rc<Self>,
        transactional_id: &str,
        f: F,
    ) -> LocalFuture<Result<R, EngineError>>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, EngineError>> + 'static,
    {
        let checked = self.check_txn_coordinator(transactional_id);
        self.on_owner_if(checked, &txn_tp(transactional_id), f)
    }

    fn begin_txn_op(self: &Rc<Self>, id: &str) -> Result<Held, EngineError> {
        Held::take(self, id, |s| &s.txn_busy).ok_or(EngineError::ConcurrentTransactions)
    }

    /// Waits (briefly, bounded) while the previous transaction's markers are
    /// being written or another operation holds the id. The next
    /// transaction's first AddPartitionsToTxn usually arrives during that
    /// window; answered CONCURRENT_TRANSACTIONS the client would retry after
    /// its backoff (20 ms in the Java client, more in others), which is most
    /// of a small transaction's time when markers are fsynced.
    async fn wait_until_settled(&self, id: &str) {
        for _ in 0..SETTLE_POLLS {
            let prepared = self.txn(id).is_some_and(|m| m.state.is_prepared());
            if !prepared && !self.txn_busy.borrow().contains(id) {
                return;
            }
            compio::time::sleep(SETTLE_POLL).await;
        }
    }

    fn txn(&self, id: &str) -> Option<TxnMeta> {
        self.txns.borrow().get(id).cloned()
    }

    /// Appends `m` to the log (acks=all) and only then makes it the state.
    async fn persist_txn(self: &Rc<Self>, mut m: TxnMeta) -> Result<(), EngineError> {
        m.last_update_ms = now_ms();
        let batch = Bytes::from(txn::record_batch(&m, m.last_update_ms));
        self.produce_local(&txn_tp(&m.transactional_id), &batch, Acks::All)
            .await
            .map_err(as_coordinator_error)?;
        self.txns.borrow_mut().insert(m.transactional_id.clone(), m);
        Ok(())
    }

    /// Creates `__transaction_state` on first use, as Kafka does (replication
    /// factor 3, or every voter when fewer, in a cluster).
    pub async fn ensure_txn_topic(self: &Rc<Self>) -> Result<(), EngineError> {
        if self.catalog().topics.contains_key(TXN_TOPIC) {
            return Ok(());
        }
        let rf = self
            .cluster()
            .map(|c| c.config.voters.len().clamp(1, 3) as i16);
        let created = self
            .create_topic(super::topics::NewTopic {
                name: TXN_TOPIC.to_string(),
                partitions: Some(TXN_PARTITIONS),
                replication_factor: rf,
                configs: super::offsets_topic_overrides(&self.shared.config),
                validate_only: false,
                assignment: None,
            })
            .await;
        match created {
            Ok(_) | Err(EngineError::TopicAlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The broker that coordinates `transactional_id` (cluster mode).
    pub async fn txn_coordinator(self: &Rc<Self>, id: &str) -> Result<NodeId, EngineError> {
        self.ensure_txn_topic().await?;
        let img = self.cluster_image().unwrap_or_default();
        match img
            .partition(TXN_TOPIC, txn::txn_partition_of(id))
            .map(|pi| pi.leader)
        {
            Some(NO_LEADER) | None => Err(EngineError::CoordinatorNotAvailable),
            Some(leader) => Ok(leader),
        }
    }

    /// InitProducerId with a transactional id: the id's producer id with its
    /// epoch bumped (fencing any older instance), a new one the first time.
    /// An open transaction of the previous instance is aborted first: the
    /// call answers CONCURRENT_TRANSACTIONS until that is done.
    /// `expected` is KIP-360's (producer id, epoch) of a producer that
    /// re-initialises itself; -1 when new.
    pub fn init_txn_producer(
        self: &Rc<Self>,
        id: String,
        timeout_ms: i32,
        expected: (i64, i16),
    ) -> LocalFuture<Result<(u64, u16), EngineError>> {
        if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Box::pin(async move {
                Err(EngineError::InvalidTransactionTimeout {
                    given: timeout_ms,
                    max: MAX_TIMEOUT_MS,
                })
            });
        }
        self.on_txn(&id.clone(), move |s| async move {
            let _busy = s.begin_txn_op(&id)?;
            let Some(m) = s.txn(&id) else {
                let (pid, _) = s.init_producer_id().await?;
                s.persist_txn(TxnMeta::new(id, pid, timeout_ms, now_ms()))
                    .await?;
                return Ok((pid, 0));
            };
            let fresh = match m.init_needs_id() {
                true => Some(s.init_producer_id().await?.0),
                false => None,
            };
            match m.init(expected, timeout_ms, fresh)? {
                InitStep::FenceFirst(fenced) => {
                    // The old instance's transaction is aborted with markers
                    // of the bumped epoch; the caller retries meanwhile.
                    s.prepare_end(fenced).await?;
                    Err(EngineError::ConcurrentTransactions)
                }
                InitStep::Ready(m) => {
                    let answer = (m.producer_id, m.epoch);
                    s.persist_txn(m).await?;
                    Ok(answer)
                }
            }
        })
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn, and a partition leader adding a
    /// partition for a transaction version 2 producer (`client_version` 2):
    /// `tps` join the transaction (which begins with the first of them).
    pub fn add_to_txn(
        self: &Rc<Self>,
        id: String,
        producer_id: i64,
        epoch: i16,
        tps: Vec<TopicPartition>,
        client_version: i16,
    ) -> LocalFuture<Result<(), EngineError>> {
        self.on_txn(&id.clone(), move |s| async move {
            s.wait_until_settled(&id).await;
            let _busy = s.begin_txn_op(&id)?;
            let m = s
                .txn(&id)
                .ok_or(EngineError::InvalidProducerIdMapping { given: producer_id })?;
            match m.add(producer_id, epoch, &tps, client_version, now_ms())? {
                Some(m) => s.persist_txn(m).await,
                None => Ok(()),
            }
        })
    }

    /// A partition leader's check (AddPartitionsToTxn with verifyOnly) that
    /// `tp` is part of the producer's open transaction.
    pub fn verify_in_txn(
        self: &Rc<Self>,
        id: String,
        producer_id: i64,
        epoch: i16,
        tp: TopicPartition,
    ) -> LocalFuture<Result<(), EngineError>> {
        self.on_txn(&id.clone(), move |s| async move {
            s.wait_until_settled(&id).await;
            let m = s
                .txn(&id)
                .ok_or(EngineError::InvalidProducerIdMapping { given: producer_id })?;
            m.verify(producer_id, epoch, &tp)
        })
    }

    /// EndTxn: commits or aborts the open transaction. Answered once the
    /// decision is in the log, with the producer id and epoch the client
    /// uses next (bumped under transaction version 2); the markers follow in
    /// the background.
    pub fn end_txn(
        self: &Rc<Self>,
        id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        client_version: i16,
    ) -> LocalFuture<Result<(u64, u16), EngineError>> {
        self.on_txn(&id.clone(), move |s| async move {
            let _busy = s.begin_txn_op(&id)?;
            let m = s
                .txn(&id)
                .ok_or(EngineError::InvalidProducerIdMapping { given: producer_id })?;
            let fresh = match m.end_needs_id(client_version) {
                true => Some(s.init_producer_id().await?.0),
                false => None,
            };
            match m.end(producer_id, epoch, commit, client_version, fresh)? {
                EndStep::Done { producer_id, epoch } => Ok((producer_id, epoch)),
                EndStep::Prepare(prepared) => {
                    let next = prepared.complete();
                    s.prepare_end(prepared).await?;
                    Ok((next.producer_id, next.epoch))
                }
            }
        })
    }

    /// Stores a prepared state (PrepareCommit / PrepareAbort) and starts
    /// writing its markers.
    async fn prepare_end(self: &Rc<Self>, m: TxnMeta) -> Result<(), EngineError> {
        debug_assert!(m.state.is_prepared());
        let id = m.transactional_id.clone();
        self.persist_txn(m).await?;
        let me = self.clone();
        compio::runtime::spawn(async move { me.complete_txn(id).await }).detach();
        Ok(())
    }

    /// Writes every marker of the id's prepared transaction, retrying
    /// partitions that refuse, then records it complete. One such task per
    /// id (another returns at once), so two never write markers or record
    /// an end for the same state; it follows the state, and stops once the
    /// id is not prepared or this broker stops coordinating it (the next
    /// coordinator finishes it from the log).
    async fn complete_txn(self: Rc<Self>, id: String) {
        let Some(_task) = Held::take(&self, &id, |s| &s.txn_completing) else {
            return;
        };
        let mut backoff = Duration::from_millis(50);
        'state: loop {
            let Some(m) = self.txn(&id).filter(|m| m.state.is_prepared()) else {
                return;
            };
            let commit = m.state == TxnState::PrepareCommit;
            let mut left: Vec<TopicPartition> = m.partitions.iter().cloned().collect();
            while !left.is_empty() {
                if self.check_txn_coordinator(&id).is_err() {
                    return;
                }
                if self.txn(&id).as_ref() != Some(&m) {
                    continue 'state;
                }
                let marker = Marker {
                    commit,
                    coordinator_epoch: self.txn_coordinator_epoch(&id),
                };
                let results = self.write_markers(&m, marker, left.clone()).await;
                left.clear();
                for (tp, r) in results {
                    match r {
                        Ok(()) => {}
                        // A deleted topic needs no marker.
                        Err(EngineError::UnknownTopicOrPartition)
                            if !self.topic_exists(&tp.topic) => {}
                        Err(e) => {
                            tracing::debug!(transactional_id = %id, partition = %tp, error = %e, "marker not written yet; retrying");
                            left.push(tp);
                        }
                    }
                }
                if !left.is_empty() {
                    compio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MARKER_RETRY_MAX);
                }
            }
            // Record the end; wait for any operation that holds the id.
            loop {
                if self.check_txn_coordinator(&id).is_err() {
                    return;
                }
                if self.txn(&id).as_ref() != Some(&m) {
                    continue 'state;
                }
                if let Ok(_busy) = self.begin_txn_op(&id) {
                    match self.persist_txn(m.complete()).await {
                        Ok(()) => continue 'state,
                        Err(e) => {
                            tracing::warn!(transactional_id = %id, error = %e, "cannot record the transaction's end; retrying")
                        }
                    }
                }
                compio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MARKER_RETRY_MAX);
            }
        }
    }

    fn topic_exists(&self, topic: &str) -> bool {
        self.catalog().topics.contains_key(topic)
    }

    /// The leader epoch of the id's `__transaction_state` partition: markers
    /// carry it, so a partition can tell an old coordinator's from a new one's.
    fn txn_coordinator_epoch(&self, id: &str) -> i32 {
        self.cluster_image()
            .and_then(|img| {
                img.partition(TXN_TOPIC, txn::txn_partition_of(id))
                    .map(|pi| pi.leader_epoch)
            })
            .unwrap_or(0)
    }

    /// Sends the markers to each partition's leader, all at once.
    async fn write_markers(
        self: &Rc<Self>,
        m: &TxnMeta,
        marker: Marker,
        tps: Vec<TopicPartition>,
    ) -> MarkerResults {
        let mut by_node: BTreeMap<NodeId, Vec<TopicPartition>> = BTreeMap::new();
        let mut out = Vec::new();
        match (self.cluster_image(), self.node_id()) {
            (Some(img), Some(me)) => {
                for tp in tps {
                    match img.partition(&tp.topic, tp.partition).map(|pi| pi.leader) {
                        None => out.push((tp, Err(EngineError::UnknownTopicOrPartition))),
                        Some(NO_LEADER) => out.push((tp, Err(EngineError::NotLeaderOrFollower))),
                        Some(l) if l == me => by_node.entry(-1).or_default().push(tp),
                        Some(l) => by_node.entry(l).or_default().push(tp),
                    }
                }
            }
            _ => {
                by_node.insert(-1, tps);
            }
        }
        let sender = self.marker_sender.borrow().clone();
        let sends = by_node.into_iter().map(|(node, tps)| {
            let req = MarkerRequest {
                producer_id: m.producer_id,
                epoch: m.epoch,
                marker,
                partitions: tps.clone(),
            };
            let me = self.clone();
            let sender = sender.clone();
            async move {
                if node == -1 {
                    return me.write_markers_here(req).await;
                }
                match sender {
                    Some(send) => send(node, req).await,
                    None => tps
                        .into_iter()
                        .map(|tp| (tp, Err(EngineError::NotLeaderOrFollower)))
                        .collect(),
                }
            }
        });
        for r in futures::future::join_all(sends).await {
            out.extend(r);
        }
        out
    }

    /// Appends the markers of `req` to the partitions this broker leads
    /// (WriteTxnMarkers), each on its own shard, acks=all.
    pub async fn write_markers_here(self: &Rc<Self>, req: MarkerRequest) -> MarkerResults {
        let writes = req.partitions.into_iter().map(|tp| {
            let owner = shard_of(&tp, self.shards());
            let (pid, epoch, marker) = (req.producer_id, req.epoch, req.marker);
            let tp2 = tp.clone();
            let fut = self.invoke_on(owner, move |s| async move {
                s.write_marker_local(&tp2, pid, epoch, marker).await
            });
            async move { (tp, fut.await.and_then(|r| r)) }
        });
        futures::future::join_all(writes).await
    }

    /// One marker on this shard's partition, durable before it returns; on
    /// `__consumer_offsets` it also decides the producer's pending offsets.
    async fn write_marker_local(
        self: &Rc<Self>,
        tp: &TopicPartition,
        producer_id: u64,
        epoch: u16,
        marker: Marker,
    ) -> Result<(), EngineError> {
        let cell = self.led_partition(tp)?;
        cell.state.borrow().check_min_isr()?;
        let end = cell.state.borrow_mut().append_marker(
            producer_id,
            epoch,
            marker,
            TimestampMs::now(),
        )?;
        cell.flush_event.notify();
        let rx = cell.state.borrow_mut().wait_durable(end);
        rx.await.map_err(|_| EngineError::ShuttingDown)??;
        if tp.topic == OFFSETS_TOPIC {
            let mut groups = self.groups.borrow_mut();
            for g in groups
                .values_mut()
                .filter(|g| crate::coord::group::offsets_partition_of(&g.id) == tp.partition)
            {
                g.complete_txn(producer_id, marker.commit);
            }
        }
        Ok(())
    }

    /// Installs how partition checks reach other brokers' coordinators.
    pub fn set_txn_partition_sender(&self, f: TxnPartitionSender) {
        *self.txn_partition_sender.borrow_mut() = Some(f);
    }

    /// Produce on the partition's owner. A transactional batch whose
    /// producer has no transaction open here yet is first checked with the
    /// coordinator (`txn`): added to the transaction under version 2,
    /// verified to be part of it under version 1, so that a stray or late
    /// batch cannot open a transaction nobody will end (KIP-890). Later
    /// batches of the same producer wait for the check, keeping their order.
    pub(crate) fn produce_in_txn(
        self: &Rc<Self>,
        tp: TopicPartition,
        records: Bytes,
        acks: Acks,
        txn: Option<TxnCheck>,
    ) -> LocalFuture<Result<Produced, ProduceRefused>> {
        // Non-transactional requests (no id) skip the header walk: this is
        // the produce path.
        let Some((check, p)) =
            txn.and_then(|c| Some((c, batch::transactional_producer(&records)?)))
        else {
            return self.produce_answered(&tp, &records, acks);
        };
        if self.led_partition(&tp).is_err() {
            // Refused anyway (not the leader, unknown): no check needed.
            return self.produce_answered(&tp, &records, acks);
        }
        let key = (tp.clone(), p.producer_id);
        let before = self.txn_checks.borrow().get(&key).map(|(_, rx)| rx.clone());
        let open = move |s: &Shard, tp: &TopicPartition| {
            s.partition(tp)
                .is_ok_and(|c| c.state.borrow().in_transaction(p.producer_id, p.epoch))
        };
        if before.is_none() && open(self, &tp) {
            return self.produce_answered(&tp, &records, acks);
        }
        let seq = self.txn_check_seq.get() + 1;
        self.txn_check_seq.set(seq);
        let (issued, rx) = oneshot::channel();
        self.txn_checks
            .borrow_mut()
            .insert(key.clone(), (seq, rx.shared()));
        let me = self.clone();
        Box::pin(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            let checked = if open(&me, &tp) {
                Ok(())
            } else {
                me.check_txn_partition(&check, p.producer_id as i64, p.epoch as i16, &tp)
                    .await
            };
            let answer = checked.map(|()| me.produce_answered(&tp, &records, acks));
            let _ = issued.send(());
            {
                let mut checks = me.txn_checks.borrow_mut();
                if checks.get(&key).is_some_and(|(s, _)| *s == seq) {
                    checks.remove(&key);
                }
            }
            match answer {
                Ok(fut) => fut.await,
                Err(e) => Err(ProduceRefused::without_log_start(e)),
            }
        })
    }

    /// Asks the coordinator of `check`'s id about one partition (a batch's,
    /// or a group's for a version 2 TxnOffsetCommit); the error is one a
    /// Produce answer can carry.
    pub async fn check_txn_partition(
        self: &Rc<Self>,
        check: &TxnCheck,
        producer_id: i64,
        epoch: i16,
        tp: &TopicPartition,
    ) -> Result<(), EngineError> {
        let id = check.transactional_id.clone();
        let coordinator = match (self.cluster_image(), self.node_id()) {
            (Some(img), Some(me)) => {
                match img
                    .partition(TXN_TOPIC, txn::txn_partition_of(&id))
                    .map(|pi| pi.leader)
                {
                    Some(l) if l == me => None,
                    Some(NO_LEADER) | None => {
                        return Err(EngineError::TxnCoordinatorUnavailable(
                            "no leader for the transaction's coordinator partition".into(),
                        ));
                    }
                    Some(l) => Some(l),
                }
            }
            _ => None,
        };
        let r = match coordinator {
            None if check.add => {
                let version = txn::TRANSACTION_VERSION;
                (self.add_to_txn(id, producer_id, epoch, vec![tp.clone()], version)).await
            }
            None => self.verify_in_txn(id, producer_id, epoch, tp.clone()).await,
            Some(node) => {
                let sender = self.txn_partition_sender.borrow().clone();
                let Some(send) = sender else {
                    return Err(EngineError::TxnCoordinatorUnavailable(
                        "no route to other brokers".into(),
                    ));
                };
                let req = TxnPartitionRequest {
                    transactional_id: id,
                    producer_id,
                    epoch,
                    partition: tp.clone(),
                    verify_only: !check.add,
                };
                send(node, req).await
            }
        };
        r.map_err(|e| match e {
            EngineError::ProducerFenced { .. } | EngineError::InvalidProducerEpoch => {
                EngineError::InvalidProducerEpoch
            }
            e
            @ (EngineError::InvalidProducerIdMapping { .. } | EngineError::InvalidTxnState(_)) => {
                EngineError::InvalidTxnState(e.to_string())
            }
            e => EngineError::TxnCoordinatorUnavailable(e.to_string()),
        })
    }

    /// DescribeTransactions: the state of each id (None where unknown).
    pub fn describe_txn(
        self: &Rc<Self>,
        id: String,
    ) -> LocalFuture<Result<Option<TxnDescription>, EngineError>> {
        self.on_txn(&id.clone(), move |s| {
            let d = s.txn(&id).map(|m| describe(&m));
            async move { Ok(d) }
        })
    }

    /// ListTransactions: every id this broker coordinates.
    pub async fn list_txns(self: &Rc<Self>) -> Vec<TxnDescription> {
        let all = self
            .invoke_on_all(
                |s| async move { s.txns.borrow().values().map(describe).collect::<Vec<_>>() },
            )
            .await;
        let mut out: Vec<TxnDescription> = all.into_iter().flatten().flatten().collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }

    /// Aborts open transactions past their timeout (fencing their producer,
    /// as Kafka does), and resumes prepared ones nobody is completing.
    pub(crate) fn tick_txns(self: &Rc<Self>) {
        let now = now_ms();
        let due: Vec<String> = (self.txns.borrow().values())
            .filter(|m| m.timed_out(now))
            .map(|m| m.transactional_id.clone())
            .filter(|id| !self.txn_busy.borrow().contains(id))
            .collect();
        for id in due {
            let me = self.clone();
            compio::runtime::spawn(async move {
                let Ok(_busy) = me.begin_txn_op(&id) else {
                    return;
                };
                let Some(m) = me.txn(&id).filter(|m| m.timed_out(now_ms())) else {
                    return;
                };
                tracing::info!(transactional_id = %id, producer_id = m.producer_id, epoch = m.epoch, "aborting a transaction past its timeout");
                let fenced = async {
                    let fresh = match m.fence_needs_id() {
                        true => Some(me.init_producer_id().await?.0),
                        false => None,
                    };
                    me.prepare_end(m.fence(fresh)?).await
                };
                if let Err(e) = fenced.await {
                    tracing::warn!(transactional_id = %id, error = %e, "cannot abort a timed-out transaction; will retry");
                }
            })
            .detach();
        }
        // A prepared transaction nobody is completing (its task stopped
        // while this broker briefly did not coordinate the id) is resumed.
        let stalled: Vec<String> = (self.txns.borrow().values())
            .filter(|m| m.state.is_prepared())
            .map(|m| m.transactional_id.clone())
            .filter(|id| !self.txn_completing.borrow().contains(id))
            .collect();
        for id in stalled {
            let me = self.clone();
            compio::runtime::spawn(async move { me.complete_txn(id).await }).detach();
        }
    }

    /// Takes over the transactions of `__transaction_state` partitions this
    /// broker now leads (rebuilt from their logs, prepared ones completed)
    /// and drops those of partitions it no longer leads.
    pub(super) fn move_txns(
        self: &Rc<Self>,
        coordinating: &[(u32, std::path::PathBuf)],
        resigning: &[u32],
    ) {
        let mut resume = Vec::new();
        {
            let mut txns = self.txns.borrow_mut();
            if !resigning.is_empty() {
                txns.retain(|id, _| !resigning.contains(&txn::txn_partition_of(id)));
            }
            for (p, dir) in coordinating {
                txns.retain(|id, _| txn::txn_partition_of(id) != *p);
                let mut loaded = HashMap::new();
                match txn::replay_partition(dir, &mut loaded) {
                    Ok(n) if n > 0 => {
                        tracing::info!(
                            partition = p,
                            records = n,
                            ids = loaded.len(),
                            "coordinating the transactions of __transaction_state partition"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "cannot rebuild transactions from __transaction_state")
                    }
                }
                resume.extend(
                    (loaded.values())
                        .filter(|m| m.state.is_prepared())
                        .map(|m| m.transactional_id.clone()),
                );
                txns.extend(loaded);
            }
        }
        for id in resume {
            let me = self.clone();
            compio::runtime::spawn(async move { me.complete_txn(id).await }).detach();
        }
    }

    /// Single broker: rebuilds the transactions of this shard's
    /// `__transaction_state` partitions at start-up.
    pub(super) fn replay_txns(self: &Rc<Self>) -> Result<(), EngineError> {
        let mut coordinating = Vec::new();
        for p in (0..TXN_PARTITIONS).filter(|&p| self.owns(TXN_TOPIC, p)) {
            let tp = TopicPartition {
                topic: TXN_TOPIC.to_string(),
                partition: p,
            };
            if !self.partitions.borrow().contains_key(&tp) {
                continue;
            }
            let root = self.shared.log_dirs.locate(&tp, false)?;
            coordinating.push((p, crate::log::partition::Partition::dir_for(&root, &tp)));
        }
        self.move_txns(&coordinating, &[]);
        Ok(())
    }

    /// TxnOffsetCommit: the offsets are appended to the group's partition as
    /// part of the producer's transaction and apply only with its commit
    /// marker. `member` is (member id, generation, instance id), checked as an
    /// OffsetCommit's when given (generation ≥ 0).
    pub fn txn_commit_offsets(
        self: &Rc<Self>,
        req: crate::shard::groups::CommitRequest,
        producer_id: u64,
        epoch: u16,
    ) -> LocalFuture<Result<(), EngineError>> {
        let group = req.group.clone();
        self.on_group(&group, move |s| async move {
            if req.generation >= 0 {
                let groups = s.groups.borrow();
                let g = groups
                    .get(&req.group)
                    .ok_or(EngineError::IllegalGeneration)?;
                g.check_commit(&req.member_id, req.generation, req.instance_id.as_deref())?;
            }
            if req.offsets.is_empty() {
                return Ok(());
            }
            let batch = Bytes::from(crate::coord::group_log::txn_commit_batch(
                &req.group,
                &req.offsets,
                producer_id,
                epoch,
                now_ms(),
            ));
            let tp = crate::shard::groups::offsets_tp(&req.group);
            s.produce_as_coordinator(&tp, &batch)
                .await
                .map_err(as_coordinator_error)?;
            let mut groups = s.groups.borrow_mut();
            let g = groups
                .entry(req.group.clone())
                .or_insert_with(|| crate::coord::group::Group::new(req.group.clone()));
            g.txn_offsets
                .entry(producer_id)
                .or_default()
                .extend(req.offsets);
            Ok(())
        })
    }

    /// Partitions among `tps` whose offsets await a transaction's end.
    pub fn unstable_offsets(
        self: &Rc<Self>,
        group: String,
        tps: Vec<TopicPartition>,
    ) -> LocalFuture<Result<HashSet<TopicPartition>, EngineError>> {
        self.on_group(&group.clone(), move |s| {
            let groups = s.groups.borrow();
            let r = match groups.get(&group) {
                Some(g) => tps
                    .into_iter()
                    .filter(|tp| g.has_pending_txn_offset(tp))
                    .collect(),
                None => HashSet::new(),
            };
            async move { Ok(r) }
        })
    }
}

fn describe(m: &TxnMeta) -> TxnDescription {
    TxnDescription {
        transactional_id: m.transactional_id.clone(),
        producer_id: m.producer_id,
        epoch: m.epoch,
        state: m.state.kafka_name(),
        timeout_ms: m.timeout_ms,
        start_ms: m.start_ms,
        partitions: m.partitions.iter().cloned().collect(),
    }
}
