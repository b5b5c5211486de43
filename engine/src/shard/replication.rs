//! Partition replication on the shards, Kafka's way: followers fetch from
//! leaders. This file is the engine's half — the roles the image gives each
//! partition, what a leader answers a follower's fetch, what a follower does
//! with the answer (append, or truncate a diverged tail), and the leader's
//! ISR upkeep. The fetch requests themselves travel over `net`
//! (`net::replica_fetcher`), on the shard that owns the partition.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::{LocalFuture, Shard, shard_of};
use crate::cluster::image::{MetaRecord, NodeId};
use crate::cluster::{ClusterImage, NO_LEADER};
use crate::coord::group::{OFFSETS_TOPIC, offsets_partition_of};
use crate::coord::txn::TXN_TOPIC;
use crate::error::EngineError;
use crate::log::partition::{self, Partition, PartitionRef};
use crate::log::replica::{EpochCache, LeaderState, divergence, truncation_point};
use crate::types::{Offset, TopicPartition};

/// A partition this broker follows, as its fetcher needs it.
#[derive(Clone, Debug)]
pub struct Followed {
    pub tp: TopicPartition,
    pub leader: NodeId,
    /// This log's end: everything below is fsynced (the fetcher waits for
    /// that before it asks again).
    pub fetch_offset: Offset,
    /// The epoch of the last batch in this log (-1: none).
    pub last_fetched_epoch: i32,
    /// The leader epoch the image gives the partition.
    pub leader_epoch: i32,
    /// This log's start, reported to the leader (DeleteRecords waits for it).
    pub log_start: Offset,
    /// Its replication is throttled while this replica is out of sync
    /// (`follower.replication.throttled.*`): left out of fetches while the
    /// broker is over its follower rate.
    pub throttled: bool,
}

/// A leader's answer to one partition of a follower's fetch.
#[derive(Clone, Debug)]
pub struct ReplicaFetched {
    pub records: Bytes,
    pub high_watermark: Offset,
    pub log_start: Offset,
    /// The follower's log diverged: the largest epoch both know and where it
    /// ends here; the follower truncates there.
    pub diverging: Option<(i32, Offset)>,
    /// Records were held back: the partition's replication is throttled here
    /// (`leader.replication.throttled.*`), the follower is out of sync and
    /// the broker is over its rate. The fetch waits its full time.
    pub throttled: bool,
}

impl Shard {
    /// Gives every open partition of this shard its role from the image.
    pub(super) fn apply_roles(self: &Rc<Self>, img: &ClusterImage) {
        let Some(me) = self.node_id() else {
            return;
        };
        let now = Instant::now();
        let cells: Vec<PartitionRef> = (self.partitions.borrow().values())
            .map(|lp| lp.cell.clone())
            .collect();
        let (mut coordinating, mut resigning) = (Vec::new(), Vec::new());
        let (mut txn_coordinating, mut txn_resigning) = (Vec::new(), Vec::new());
        for cell in cells {
            let mut p = cell.state.borrow_mut();
            let Some(pi) = img.partition(&p.tp.topic, p.tp.partition) else {
                continue;
            };
            if pi.offline.contains(&me) {
                continue; // this copy neither leads nor follows until a restart
            }
            if pi.leader == me {
                match p.leader_state() {
                    Some(l) if l.epoch == pi.leader_epoch => {
                        p.set_isr(pi.isr.clone(), pi.partition_epoch)
                    }
                    _ => {
                        tracing::debug!(partition = %p.tp, epoch = pi.leader_epoch, isr = ?pi.isr, "leading");
                        if p.tp.topic == OFFSETS_TOPIC {
                            coordinating.push((p.tp.partition, p.dir.clone()));
                        } else if p.tp.topic == TXN_TOPIC {
                            txn_coordinating.push((p.tp.partition, p.dir.clone()));
                        }
                        let start = p.log_end;
                        let mut l = LeaderState::new(
                            me,
                            pi.leader_epoch,
                            pi.replicas.clone(),
                            pi.isr.clone(),
                            start,
                            now,
                        );
                        l.set_isr(pi.isr.clone(), pi.partition_epoch);
                        p.become_leader(l);
                    }
                }
            } else if !p.is_follower() || p.leader_epoch != pi.leader_epoch {
                tracing::debug!(partition = %p.tp, leader = pi.leader, epoch = pi.leader_epoch, "following");
                if p.tp.topic == OFFSETS_TOPIC && p.leader_state().is_some() {
                    resigning.push(p.tp.partition);
                }
                if p.tp.topic == TXN_TOPIC && p.leader_state().is_some() {
                    txn_resigning.push(p.tp.partition);
                }
                p.become_follower(pi.leader_epoch);
            }
            store_epochs(&mut p);
        }
        self.isr_pending.borrow_mut().clear();
        self.replication_changed.notify();
        self.move_groups(&coordinating, &resigning);
        if !(txn_coordinating.is_empty() && txn_resigning.is_empty()) {
            self.move_txns(&txn_coordinating, &txn_resigning);
        }
    }

    /// The group coordinator follows `__consumer_offsets` leadership: groups of
    /// a partition this broker now leads are rebuilt from its replicated log;
    /// those of a partition it no longer leads are dropped (their members
    /// find the new coordinator through NOT_COORDINATOR).
    fn move_groups(&self, coordinating: &[(u32, std::path::PathBuf)], resigning: &[u32]) {
        let mut groups = self.groups.borrow_mut();
        if !resigning.is_empty() {
            groups.retain(|g, _| !resigning.contains(&offsets_partition_of(g)));
        }
        for (p, dir) in coordinating {
            groups.retain(|g, _| offsets_partition_of(g) != *p);
            match crate::coord::group_log::replay_partition(dir, &mut groups) {
                Ok(n) if n > 0 => {
                    tracing::info!(
                        partition = p,
                        records = n,
                        "coordinating the groups of __consumer_offsets partition"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "cannot rebuild groups from __consumer_offsets")
                }
            }
        }
    }

    /// Wakes when the partitions this shard follows (or their leaders) may
    /// have changed.
    pub async fn replication_changed(&self) {
        self.replication_changed.wait().await
    }

    /// This shard's partitions that another broker leads.
    pub fn followed(&self) -> Vec<Followed> {
        let (Some(img), Some(me)) = (self.cluster_image(), self.node_id()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (tp, lp) in self.partitions.borrow().iter() {
            let Some(pi) = img.partition(&tp.topic, tp.partition) else {
                continue;
            };
            if pi.leader == me || pi.leader == NO_LEADER || pi.offline.contains(&me) {
                continue;
            }
            let p = lp.cell.state.borrow();
            out.push(Followed {
                tp: tp.clone(),
                leader: pi.leader,
                fetch_offset: p.log_end,
                last_fetched_epoch: p.epochs.latest().unwrap_or(-1),
                leader_epoch: pi.leader_epoch,
                log_start: p.log_start,
                throttled: !pi.isr.contains(&me)
                    && p.config.follower_throttled.contains(tp.partition, me),
            });
        }
        out
    }

    /// Where clients (and followers) reach broker `node`.
    pub fn broker_address(&self, node: NodeId) -> Option<(String, i32)> {
        let img = self.cluster_image()?;
        let b = img.brokers.get(&node)?;
        Some((b.host.clone(), b.port))
    }

    /// A follower appends what its leader sent and waits until it is fsynced
    /// here (its next fetch offset then tells the leader so). It also takes
    /// the leader's log start `leader_start` (DeleteRecords), as far as its
    /// own high watermark reaches, and stores it.
    pub async fn replica_append(
        &self,
        tp: &TopicPartition,
        records: Bytes,
        leader_hw: Offset,
        leader_start: Offset,
    ) -> Result<(), EngineError> {
        let cell = self.partition(tp)?;
        let (end, start_moved) = {
            let mut p = cell.state.borrow_mut();
            if !p.is_follower() {
                return Err(EngineError::NotLeaderOrFollower);
            }
            let end = p.append_replica(&records, leader_hw)?;
            store_epochs(&mut p);
            (end, p.follow_log_start(leader_start))
        };
        if start_moved {
            cell.store_log_start().await?;
        }
        cell.flush_event.notify();
        let rx = cell.state.borrow_mut().wait_local(end);
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// A follower whose log diverged from its leader's (the leader answered
    /// `diverging` = its epoch and end offset) cuts it where
    /// [`truncation_point`] says: the partition is closed, its files cut, and
    /// opened again (recovering its producer state and indexes from what is
    /// left).
    pub async fn truncate_replica(
        self: &Rc<Self>,
        tp: &TopicPartition,
        diverging: (i32, Offset),
    ) -> Result<(), EngineError> {
        let Some(cell) = self.partition_open(tp) else {
            return Err(self.not_here(tp));
        };
        let offset = {
            let mut p = cell.state.borrow_mut();
            let at = truncation_point(&p.epochs, p.log_end, diverging);
            // Epochs starting at the cut go even when no batch does: an
            // epoch this broker led without writing in it would otherwise
            // be its "last fetched epoch" forever.
            p.truncate_epochs(at);
            store_epochs(&mut p);
            at
        };
        if offset >= cell.state.borrow().log_end {
            return Ok(());
        }
        tracing::warn!(partition = %tp, to = %offset, from = %cell.state.borrow().log_end, "truncating a diverged follower log");
        self.reopen_after(tp, &cell, move |dir| {
            crate::log::open::truncate_log(dir, offset)
        })
        .await
    }

    /// Closes a follower's partition, changes its files with `change` (off
    /// the reactor), and opens it again in its role, recovering its producer
    /// state and indexes from what is left.
    async fn reopen_after(
        self: &Rc<Self>,
        tp: &TopicPartition,
        cell: &PartitionRef,
        change: impl FnOnce(&std::path::Path) -> Result<(), EngineError> + Send + 'static,
    ) -> Result<(), EngineError> {
        let dir = cell.state.borrow().dir.clone();
        self.close_partition(tp).await;
        partition::blocking(move || change(&dir).map_err(std::io::Error::other)).await?;
        let meta = (self.catalog().topics.get(&tp.topic).cloned())
            .ok_or(EngineError::UnknownTopicOrPartition)?;
        self.open_partition(&meta, tp.partition, false)?;
        if let Some(img) = self.cluster_image() {
            self.apply_roles(&img);
        }
        Ok(())
    }

    /// A follower whose next offset its leader no longer has (the leader's
    /// log starts at `leader_start`, past this log's end: retention or
    /// DeleteRecords passed it while this replica was away or new) empties
    /// its log and starts again there (Kafka's `truncateFullyAndStartAt`).
    /// An empty log may also start again earlier: the leader's first batch
    /// from its log start may begin before it (DeleteRecords cut inside a
    /// batch), and a follower stores whole batches. Returns whether it did.
    pub async fn restart_replica_at(
        self: &Rc<Self>,
        tp: &TopicPartition,
        leader_start: Offset,
    ) -> Result<bool, EngineError> {
        let Some(cell) = self.partition_open(tp) else {
            return Err(self.not_here(tp));
        };
        let (end, follower, empty) = {
            let p = cell.state.borrow();
            (p.log_end, p.is_follower(), p.size_bytes() == 0)
        };
        let needed = leader_start > end || (empty && leader_start < end);
        if !follower || !needed {
            return Ok(false);
        }
        tracing::warn!(partition = %tp, from = %end, to = %leader_start, "the leader no longer has this follower's next offset; its log starts again at the leader's log start");
        self.reopen_after(tp, &cell, move |dir| {
            crate::log::open::restart_log_at(dir, leader_start)
        })
        .await?;
        Ok(true)
    }

    /// A follower's fetch of `tp` from `offset`, on the leader. The follower
    /// has fsynced everything below `offset`; that moves the high watermark.
    /// `follower_start` is the log start it reported, which DeleteRecords
    /// waits for.
    pub fn replica_fetch(
        self: &Rc<Self>,
        tp: TopicPartition,
        (node, incarnation): (NodeId, u64),
        offset: Offset,
        (last_fetched_epoch, follower_start): (i32, Option<Offset>),
        max_bytes: usize,
    ) -> LocalFuture<Result<ReplicaFetched, EngineError>> {
        let owner = shard_of(&tp, self.shards());
        if owner != self.id {
            let fut = self.invoke_on(owner, move |s| {
                s.replica_fetch(
                    tp,
                    (node, incarnation),
                    offset,
                    (last_fetched_epoch, follower_start),
                    max_bytes,
                )
            });
            return Box::pin(async move { fut.await? });
        }
        let cell = match self.led_partition(&tp) {
            Ok(c) => c,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let shard = self.clone();
        Box::pin(async move {
            let diverging = {
                let mut p = cell.state.borrow_mut();
                let diverging = divergence(
                    &p.epochs,
                    p.log_start,
                    p.log_end,
                    offset,
                    last_fetched_epoch,
                );
                // A follower never holds more than its leader without
                // diverging (checked above): an offset past the log end
                // claims data that does not exist here and must not count
                // towards the high watermark.
                if diverging.is_none() && offset > p.log_end {
                    return Err(EngineError::OffsetOutOfRange {
                        requested: offset,
                        log_start: p.log_start,
                        high_watermark: p.high_watermark,
                    });
                }
                if let Some(start) = follower_start {
                    p.follower_log_start(node, incarnation, start);
                }
                if diverging.is_none()
                    && !p.follower_fetched(node, incarnation, offset, Instant::now())
                {
                    return Err(EngineError::InvalidRequest(format!(
                        "a stale fetch from broker {node}'s earlier start"
                    )));
                }
                diverging
            };
            let throttled = {
                let p = cell.state.borrow();
                let me = p.leader_state().map(|l| l.me);
                let out_of_sync = p.leader_state().is_some_and(|l| !l.isr.contains(&node));
                out_of_sync
                    && me.is_some_and(|me| p.config.leader_throttled.contains(tp.partition, me))
            };
            let meter = &shard.shared.leader_replication;
            let held =
                throttled && meter.exceeded(shard.catalog().settings.leader_replication_rate);
            if diverging.is_some() || held {
                let p = cell.state.borrow();
                return Ok(ReplicaFetched {
                    records: Bytes::new(),
                    high_watermark: p.high_watermark,
                    log_start: p.log_start,
                    diverging,
                    throttled: held,
                });
            }
            let data = partition::fetch_for_replica(&cell, offset, max_bytes).await?;
            if throttled {
                meter.record(data.records.len());
            }
            Ok(ReplicaFetched {
                records: data.records,
                high_watermark: data.high_watermark,
                log_start: data.log_start,
                diverging: None,
                throttled: false,
            })
        })
    }

    /// As the leader of partitions of this shard: asks the quorum for the ISR
    /// each should have (followers that fell behind leave, caught-up ones
    /// join). One request per partition at a time.
    pub(super) fn maintain_isr(self: &Rc<Self>) {
        let Some(c) = self.cluster() else {
            return;
        };
        let lag = c.config.replica_lag;
        let now = Instant::now();
        let img = self.cluster_image().unwrap_or_default();
        let live = |n: NodeId| img.brokers.get(&n).is_some_and(|b| !b.fenced);
        let mut wanted = Vec::new();
        for (tp, lp) in self.partitions.borrow().iter() {
            let mut p = lp.cell.state.borrow_mut();
            let Some(l) = p.leader_state() else {
                continue;
            };
            if self.isr_pending.borrow().contains(tp) {
                continue;
            }
            if let Some(isr) = l.wanted_isr(now, lag, p.high_watermark, live) {
                let at = (l.me, l.epoch, l.partition_epoch);
                wanted.push((tp.clone(), at, l.isr.clone(), isr.clone(), lp.cell.clone()));
                p.propose_isr(Some(isr));
            }
        }
        for (tp, (leader, epoch, partition_epoch), old, isr, cell) in wanted {
            tracing::info!(partition = %tp, from = ?old, to = ?isr, "asking the controller to change the ISR");
            self.isr_pending.borrow_mut().insert(tp.clone());
            let me = self.clone();
            compio::runtime::spawn(async move {
                let r = me
                    .propose(vec![MetaRecord::AlterPartition {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        leader,
                        leader_epoch: epoch,
                        partition_epoch,
                        isr,
                    }])
                    .await;
                if let Err(e) = r {
                    tracing::debug!(partition = %tp, error = %e, "ISR change not made");
                    // Refused for what it asked (the apply checks leader,
                    // then partition epoch, then members: so this leader's
                    // view was current): only the committed ISR counts.
                    // Otherwise (no quorum in time, made against an epoch
                    // that has moved on — perhaps by this change — or no
                    // longer the leader) the proposed members keep counting
                    // until an image with a newer partition epoch says.
                    if matches!(e, EngineError::InvalidRequest(_)) {
                        cell.state.borrow_mut().propose_isr(None);
                    }
                    me.isr_pending.borrow_mut().remove(&tp);
                }
            })
            .detach();
        }
    }
}

/// Stores the partition's epoch cache when it changed (off the reactor).
fn store_epochs(p: &mut Partition) {
    if let Some(bytes) = p.take_epochs_to_store() {
        let path = EpochCache::path(&p.dir);
        compio::runtime::spawn(async move {
            let r = partition::blocking(move || {
                crate::log::index::write_file_atomically(&path, &bytes)
            })
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot store the leader epoch cache");
            }
        })
        .detach();
    }
}
