//! The metadata quorum member: raft-rs's `RawNode` driven on shard 0.
//!
//! **Lives on:** shard 0's thread, as one task ([`Quorum::run`]) that alone
//! touches the Raft state. Peers' messages arrive through [`Quorum::deliver`]
//! (called by `net`'s controller listener) and leave through per-peer outboxes
//! that `net`'s peer connections drain; proposals from any shard come over the
//! ring to [`Quorum::propose`]. Every committed entry is applied to the
//! [`ClusterImage`] and the new image is handed to the shard layer, which sends
//! each shard its copy.
//!
//! Order of a Ready, as raft-rs requires: messages of a leader go out at once;
//! entries, hard state and snapshot are staged and written with one fdatasync
//! off the reactor; only then do votes and follower acknowledgements
//! (`persisted_messages`) go out and is the Ready advanced, so nothing is
//! promised before it is on disk.
//!
//! The active controller (the Raft leader) also watches liveness: a broker it
//! has not heard from for `broker.session.timeout.ms` is fenced, which moves
//! its leaderships within the ISR (in [`ClusterImage::apply`]). A broker that
//! is serving and finds itself fenced or unknown registers again.
//!
//! A broker-only node (not among the voters) runs the same type as an
//! *observer*, as KRaft's brokers do: it holds no Raft state and keeps no
//! quorum log; it long-polls the active controller for committed entries
//! ([`Quorum::observed`], served by [`Quorum::serve_observer`]), applies them
//! to its image like any member, and hands its proposals to a voter
//! ([`Quorum::forwarded`], [`Quorum::propose_forwarded`]). Its fetches are
//! its heartbeats: the controller fences it when they stop.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use raft::eraftpb::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};

use super::codec::PeerFrame;
use super::image::{Applied, BrokerInfo, ClusterImage, MetaRecord, NO_LEADER, NodeId, Proposal};
use super::store::{QuorumStore, write_durably};
use crate::error::EngineError;
use crate::log::partition::{LocalEvent, blocking};

/// raft-rs reserves id 0; Kafka node ids start at 0.
pub fn raft_id(node: NodeId) -> u64 {
    node as u64 + 1
}

pub fn node_of(raft_id: u64) -> NodeId {
    raft_id as NodeId - 1
}

/// Timing of the quorum and of broker liveness.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    pub node: NodeId,
    pub voters: Vec<NodeId>,
    /// One Raft tick. Elections take 10–20 ticks of silence, heartbeats go
    /// every 2.
    pub tick: Duration,
    /// Kafka's `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub session_timeout: Duration,
    /// A proposal not committed within this is answered with an error.
    pub propose_timeout: Duration,
    /// Entries after which the log is compacted into a snapshot of the image.
    pub snapshot_every: u64,
    /// Kafka's `leader.imbalance.check.interval.seconds` with
    /// `auto.leader.rebalance.enable` (`None`: off): how often the active
    /// controller gives partitions back to their preferred leaders.
    pub rebalance_every: Option<Duration>,
    /// The broker default of `unclean.leader.election.enable`, for topics
    /// that do not set it.
    pub unclean_default: bool,
}

impl QuorumConfig {
    pub fn new(node: NodeId, voters: Vec<NodeId>) -> Self {
        QuorumConfig {
            node,
            voters,
            tick: Duration::from_millis(100),
            session_timeout: Duration::from_secs(9),
            propose_timeout: Duration::from_secs(10),
            snapshot_every: 1000,
            rebalance_every: Some(Duration::from_secs(300)),
            unclean_default: false,
        }
    }
}

/// Called with each new image, in order, on shard 0.
pub type ImageSink = Box<dyn Fn(Arc<ClusterImage>)>;

type Waiter = oneshot::Sender<Result<Applied, EngineError>>;

struct Outbox {
    queue: VecDeque<Message>,
    event: Rc<LocalEvent>,
}

/// A proposal not applied after this is handed to Raft again.
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// How long a stopping broker waits for its fencing to commit: with no
/// quorum left (the other members stopped first) it stops without it.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Wait before writing the quorum log again after a failed write.
const WRITE_RETRY: Duration = Duration::from_secs(1);

/// Messages kept for a peer that is not connected; older ones are dropped
/// (Raft resends what matters).
const OUTBOX_LIMIT: usize = 4096;

/// How long a voter holds an observer's fetch when it has nothing newer.
pub const OBSERVER_POLL: Duration = Duration::from_millis(250);

/// Most entry bytes in one reply to an observer.
const OBSERVER_BATCH: u64 = 1 << 20;

pub struct Quorum {
    cfg: QuorumConfig,
    incarnation: u64,
    raw: RefCell<Option<RawNode<QuorumStore>>>,
    image: RefCell<Arc<ClusterImage>>,
    sink: RefCell<Option<ImageSink>>,
    wake: LocalEvent,
    inbox: RefCell<Vec<Message>>,
    unreachable: RefCell<Vec<u64>>,
    pending: RefCell<Vec<(u64, Vec<u8>)>>,
    waiters: RefCell<HashMap<u64, Waiter>>,
    /// Proposals someone waits for, with when they were last handed to Raft:
    /// one forwarded to a leader that then died is lost silently, so it is
    /// proposed again until it applies or its waiter gives up (every record
    /// is validated at apply, so a second copy changes nothing).
    inflight: RefCell<HashMap<u64, (Vec<u8>, Instant)>>,
    next_seq: Cell<u64>,
    outboxes: RefCell<HashMap<NodeId, Outbox>>,
    last_heard: RefCell<HashMap<NodeId, Instant>>,
    leader: Cell<Option<NodeId>>,
    is_leader: Cell<bool>,
    /// What this broker registers as, once it serves; `None` before and
    /// while it shuts down.
    registration: RefCell<Option<BrokerInfo>>,
    last_register: Cell<Option<Instant>>,
    fencing: RefCell<HashSet<NodeId>>,
    last_rebalance: Cell<Option<Instant>>,
    last_unclean: Cell<Option<Instant>>,
    last_reassignment_check: Cell<Option<Instant>>,
    /// Observer: proposals waiting for the connection to a voter.
    forward: RefCell<VecDeque<bytes::Bytes>>,
    forward_event: LocalEvent,
    /// Voter: observers' fetches waiting for the image to move.
    applied_waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

impl Quorum {
    /// A member over `store`, whose image has been rebuilt up to `image`.
    pub fn new(
        cfg: QuorumConfig,
        store: QuorumStore,
        image: Arc<ClusterImage>,
        incarnation: u64,
    ) -> Result<Rc<Self>, EngineError> {
        let raft_cfg = raft::Config {
            id: raft_id(cfg.node),
            election_tick: 10,
            heartbeat_tick: 2,
            applied: image.applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_cfg, store, &logger)
            .map_err(|e| EngineError::Storage(format!("metadata quorum: {e}")))?;
        Ok(Self::build(cfg, Some(raw), image, incarnation))
    }

    /// A broker-only node: it starts from an empty image and learns the
    /// metadata from the voters.
    pub fn observer(cfg: QuorumConfig, incarnation: u64) -> Rc<Self> {
        Self::build(cfg, None, Arc::new(ClusterImage::default()), incarnation)
    }

    fn build(
        cfg: QuorumConfig,
        raw: Option<RawNode<QuorumStore>>,
        image: Arc<ClusterImage>,
        incarnation: u64,
    ) -> Rc<Self> {
        let voter = raw.is_some();
        let outboxes = (cfg.voters.iter())
            .filter(|&&v| voter && v != cfg.node)
            .map(|&v| {
                let o = Outbox {
                    queue: VecDeque::new(),
                    event: Rc::new(LocalEvent::default()),
                };
                (v, o)
            })
            .collect();
        Rc::new(Quorum {
            cfg,
            incarnation,
            raw: RefCell::new(raw),
            image: RefCell::new(image),
            sink: RefCell::new(None),
            wake: LocalEvent::default(),
            inbox: RefCell::default(),
            unreachable: RefCell::default(),
            pending: RefCell::default(),
            waiters: RefCell::default(),
            inflight: RefCell::default(),
            next_seq: Cell::new(1),
            outboxes: RefCell::new(outboxes),
            last_heard: RefCell::default(),
            leader: Cell::new(None),
            is_leader: Cell::new(false),
            registration: RefCell::new(None),
            last_register: Cell::new(None),
            fencing: RefCell::default(),
            last_rebalance: Cell::new(None),
            last_unclean: Cell::new(None),
            last_reassignment_check: Cell::new(None),
            forward: RefCell::default(),
            forward_event: LocalEvent::default(),
            applied_waiters: RefCell::default(),
        })
    }

    /// Whether this node only observes the quorum (a broker-only node).
    pub fn is_observer(&self) -> bool {
        self.raw.borrow().is_none()
    }

    /// The voters and their ids, for an observer to fetch from.
    pub fn voters(&self) -> &[NodeId] {
        &self.cfg.voters
    }

    pub fn node(&self) -> NodeId {
        self.cfg.node
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn image(&self) -> Arc<ClusterImage> {
        self.image.borrow().clone()
    }

    /// The active controller (the quorum's leader), if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader.get()
    }

    pub fn set_sink(&self, sink: ImageSink) {
        *self.sink.borrow_mut() = Some(sink);
    }

    /// A message from a peer.
    pub fn deliver(&self, m: Message) {
        if m.to != raft_id(self.cfg.node) {
            return;
        }
        self.last_heard
            .borrow_mut()
            .insert(node_of(m.from), Instant::now());
        self.inbox.borrow_mut().push(m);
        self.wake.notify();
    }

    /// The peer's connection failed: Raft slows down sending to it.
    pub fn report_unreachable(&self, peer: NodeId) {
        self.unreachable.borrow_mut().push(raft_id(peer));
        self.wake.notify();
    }

    /// The peers this member sends to.
    pub fn peers(&self) -> Vec<NodeId> {
        self.outboxes.borrow().keys().copied().collect()
    }

    /// Waits until there is something for `peer`, then takes it all.
    pub async fn outgoing(&self, peer: NodeId) -> Vec<Message> {
        let Some(event) = (self.outboxes.borrow().get(&peer)).map(|o| o.event.clone()) else {
            return Vec::new();
        };
        loop {
            let taken: Vec<Message> = match self.outboxes.borrow_mut().get_mut(&peer) {
                Some(o) => o.queue.drain(..).collect(),
                None => Vec::new(),
            };
            if !taken.is_empty() {
                return taken;
            }
            event.wait().await;
        }
    }

    fn send(&self, msgs: Vec<Message>) {
        let mut outboxes = self.outboxes.borrow_mut();
        for m in msgs {
            let Some(o) = outboxes.get_mut(&node_of(m.to)) else {
                continue;
            };
            if o.queue.len() >= OUTBOX_LIMIT {
                o.queue.pop_front();
            }
            o.queue.push_back(m);
            o.event.notify();
        }
    }

    /// Proposes `records` as one entry and waits until it is applied here,
    /// with its outcome. Fails with `NoQuorum` when there is no leader to take
    /// it or it is not committed in time (it may still commit later).
    pub async fn propose(&self, records: Vec<MetaRecord>) -> Result<Applied, EngineError> {
        let (seq, data) = self.encode(records)?;
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(seq, tx);
        (self.inflight.borrow_mut()).insert(seq, (data.clone(), Instant::now()));
        self.pending.borrow_mut().push((seq, data));
        self.wake.notify();
        let timeout = compio::time::timeout(self.cfg.propose_timeout, rx).await;
        self.waiters.borrow_mut().remove(&seq);
        self.inflight.borrow_mut().remove(&seq);
        match timeout {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(EngineError::ShuttingDown),
            Err(_) => Err(EngineError::NoQuorum(format!(
                "not committed within {:?}",
                self.cfg.propose_timeout
            ))),
        }
    }

    /// This broker serves clients now: keep it registered.
    pub fn serve_as(&self, info: BrokerInfo) {
        *self.registration.borrow_mut() = Some(info);
        self.wake.notify();
    }

    /// Controlled shutdown: stop registering and fence this broker, which moves
    /// its leaderships to other ISR members, before the broker stops serving.
    pub async fn leave(&self) -> Result<(), EngineError> {
        self.registration.borrow_mut().take();
        let fence = self.propose(vec![MetaRecord::FenceBroker {
            node: self.cfg.node,
        }]);
        match compio::time::timeout(LEAVE_TIMEOUT, fence).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(EngineError::NoQuorum(format!(
                "not committed within {LEAVE_TIMEOUT:?}"
            ))),
        }
    }

    /// The driver: ticks, steps, proposes, persists and applies until the
    /// runtime stops.
    pub async fn run(self: Rc<Self>) {
        if self.is_observer() {
            return self.run_observer().await;
        }
        let mut next_tick = Instant::now() + self.cfg.tick;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + self.cfg.tick;
                self.with_raw(|raw| {
                    raw.tick();
                });
                self.controller_duties(now);
            }
            self.step_inputs();
            if let Err(e) = self.handle_ready().await {
                // The Raft state could not be staged (a write failure is
                // retried in `handle_ready`, not reported here): this member
                // must not vote or acknowledge anything more. Stop driving it.
                tracing::error!(error = %e, "metadata quorum state broken; this member stops taking part in the quorum");
                self.fail_waiters(&e);
                return;
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            let woke = std::pin::pin!(self.wake.wait());
            let slept = std::pin::pin!(compio::time::sleep(wait));
            futures::future::select(woke, slept).await;
        }
    }

    fn with_raw<R>(&self, f: impl FnOnce(&mut RawNode<QuorumStore>) -> R) -> R {
        let mut raw = self.raw.borrow_mut();
        f(raw.as_mut().expect("the quorum driver holds the node"))
    }

    fn fail_waiters(&self, e: &EngineError) {
        for (_, w) in self.waiters.borrow_mut().drain() {
            let _ = w.send(Err(e.clone()));
        }
    }

    fn step_inputs(&self) {
        let msgs: Vec<Message> = self.inbox.borrow_mut().drain(..).collect();
        let unreachable: Vec<u64> = self.unreachable.borrow_mut().drain(..).collect();
        let pending: Vec<(u64, Vec<u8>)> = self.pending.borrow_mut().drain(..).collect();
        let mut dropped = Vec::new();
        self.with_raw(|raw| {
            for m in msgs {
                // Stale or unexpected messages are Raft's to ignore.
                let _ = raw.step(m);
            }
            for id in unreachable {
                raw.report_unreachable(id);
            }
            for (seq, data) in pending {
                if let Err(e) = raw.propose(Vec::new(), data.clone()) {
                    dropped.push((seq, data, e.to_string()));
                }
            }
            let leader = raw.raft.leader_id;
            self.leader
                .set((leader != raft::INVALID_ID).then(|| node_of(leader)));
            let now_leader = raw.raft.state == StateRole::Leader;
            if now_leader && !self.is_leader.get() {
                // A new controller gives every broker a full session to be heard.
                let now = Instant::now();
                let mut heard = self.last_heard.borrow_mut();
                let brokers = self
                    .image
                    .borrow()
                    .brokers
                    .keys()
                    .copied()
                    .collect::<Vec<_>>();
                for v in self.cfg.voters.iter().copied().chain(brokers) {
                    heard.insert(v, now);
                }
                self.fencing.borrow_mut().clear();
                tracing::info!(
                    node = self.cfg.node,
                    term = raw.raft.term,
                    "became the active controller"
                );
            }
            self.is_leader.set(now_leader);
        });
        // No leader to take them (an election is under way): proposals that
        // someone waits for are tried again (`inflight`), until their timeout.
        for (seq, _, why) in dropped {
            tracing::debug!(seq, %why, "no quorum leader yet; will propose again");
        }
    }

    async fn handle_ready(&self) -> Result<(), EngineError> {
        let staged = self.with_raw(|raw| -> Result<_, EngineError> {
            if !raw.has_ready() {
                return Ok(None);
            }
            let mut rd = raw.ready();
            self.send(rd.take_messages());
            let snap = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
            if let Some(s) = &snap {
                let img: ClusterImage = serde_json::from_slice(s.get_data())
                    .map_err(|e| EngineError::Storage(format!("metadata snapshot: {e}")))?;
                tracing::info!(
                    index = img.applied,
                    "installed a metadata snapshot from the leader"
                );
                self.publish(img);
            }
            let bytes = (raw.mut_store()).stage(snap, rd.entries(), rd.hs())?;
            let file = raw.store().writer()?;
            Ok(Some((rd, bytes, file)))
        })?;
        let Some((mut rd, bytes, file)) = staged else {
            return Ok(());
        };
        // Nothing of this Ready is promised before it is on disk: a write
        // that fails (a full disk) is tried again until it succeeds, and this
        // member is silent meanwhile, as if paused.
        let bytes = bytes.freeze();
        let mut failing = false;
        loop {
            let (f, b) = (file.try_clone()?, bytes.clone());
            match blocking(move || write_durably(f, &b)).await {
                Ok(()) => break,
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "metadata quorum log write failed; retrying every second, this member takes no part in the quorum meanwhile");
                        failing = true;
                    }
                    compio::time::sleep(WRITE_RETRY).await;
                }
            }
        }
        if failing {
            tracing::info!("metadata quorum log writable again; taking part in the quorum");
        }
        self.send(rd.take_persisted_messages());
        let committed = rd.take_committed_entries();
        self.apply(committed);
        let (msgs, committed) = self.with_raw(|raw| -> Result<_, EngineError> {
            let mut light = raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                let mut hs = raw.store().hard_state();
                hs.commit = commit;
                // Memory only: a stale commit on disk only means a restart
                // learns the rest from the leader.
                let _ = raw.mut_store().stage(None, &[], Some(&hs))?;
            }
            Ok((light.take_messages(), light.take_committed_entries()))
        })?;
        self.send(msgs);
        self.apply(committed);
        self.with_raw(|raw| raw.advance_apply());
        self.maybe_compact();
        Ok(())
    }

    fn apply(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let mut img = (**self.image.borrow()).clone();
        for e in entries {
            if e.entry_type != EntryType::EntryNormal || e.data.is_empty() {
                img.applied = img.applied.max(e.index);
                continue;
            }
            let p: Proposal = match serde_json::from_slice(&e.data) {
                Ok(p) => p,
                Err(err) => {
                    tracing::error!(index = e.index, error = %err, "undecodable metadata entry skipped");
                    img.applied = e.index;
                    continue;
                }
            };
            let outcome = img.apply(e.index, &p);
            if let Err(err) = &outcome {
                tracing::debug!(index = e.index, error = %err, "metadata change refused");
            }
            if p.origin == self.cfg.node
                && p.incarnation == self.incarnation
                && let Some(w) = self.waiters.borrow_mut().remove(&p.seq)
            {
                let _ = w.send(outcome);
            }
        }
        self.publish(img);
    }

    fn publish(&self, img: ClusterImage) {
        let img = Arc::new(img);
        *self.image.borrow_mut() = img.clone();
        for w in self.applied_waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
        if let Some(sink) = self.sink.borrow().as_ref() {
            sink(img);
        }
    }

    fn maybe_compact(&self) {
        let applied = self.image.borrow().applied;
        let first = self.with_raw(|raw| raw.store().first_index());
        if applied < first + self.cfg.snapshot_every {
            return;
        }
        let data = match serde_json::to_vec(&**self.image.borrow()) {
            Ok(d) => bytes::Bytes::from(d),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the metadata image");
                return;
            }
        };
        let result = self.with_raw(|raw| raw.mut_store().compact(applied, data));
        match result {
            Ok(()) => tracing::info!(
                index = applied,
                "compacted the metadata log into a snapshot"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot compact the metadata log"),
        }
    }

    /// Once per tick: propose again what has waited a second without
    /// applying; register this broker if it is serving and the image does
    /// not show it live; as the active controller, fence silent brokers.
    fn controller_duties(&self, now: Instant) {
        for (seq, (data, at)) in self.inflight.borrow_mut().iter_mut() {
            if now.duration_since(*at) >= RESEND_AFTER {
                *at = now;
                self.pending.borrow_mut().push((*seq, data.clone()));
            }
        }
        let image = self.image();
        if let Some(info) = self.registration.borrow().clone() {
            let current = image.brokers.get(&self.cfg.node);
            let registered = current
                .is_some_and(|b| !b.fenced && b.incarnation == info.incarnation && *b == info);
            let recently = (self.last_register.get())
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
            if !registered && !recently && self.leader.get().is_some() {
                self.last_register.set(Some(now));
                self.spawn_proposal(vec![MetaRecord::RegisterBroker {
                    node: info.node,
                    host: info.host.clone(),
                    port: info.port,
                    rack: info.rack.clone(),
                    incarnation: info.incarnation,
                    endpoints: info.endpoints.clone(),
                }]);
            }
        }
        if !self.is_leader.get() {
            return;
        }
        self.rebalance_leaders(&image, now);
        self.unclean_elections(&image, now);
        self.complete_reassignments(&image, now);
        let heard = self.last_heard.borrow().clone();
        let mut fencing = self.fencing.borrow_mut();
        fencing.retain(|n| image.brokers.get(n).is_some_and(|b| !b.fenced));
        for b in image.brokers.values().filter(|b| !b.fenced) {
            if b.node == self.cfg.node || fencing.contains(&b.node) {
                continue;
            }
            let silent = heard
                .get(&b.node)
                .is_none_or(|t| now.duration_since(*t) > self.cfg.session_timeout);
            if silent {
                tracing::warn!(node = b.node, timeout = ?self.cfg.session_timeout, "broker missed its session; fencing it");
                fencing.insert(b.node);
                self.spawn_proposal(vec![MetaRecord::FenceBroker { node: b.node }]);
            }
        }
    }

    /// As the active controller, every `rebalance_every`: preferred replicas
    /// that are live and in sync lead again (one entry for all of them).
    fn rebalance_leaders(&self, image: &ClusterImage, now: Instant) {
        let Some(every) = self.cfg.rebalance_every else {
            return;
        };
        match self.last_rebalance.get() {
            Some(t) if now.duration_since(t) < every => return,
            None => {
                // A new controller first waits a full interval.
                self.last_rebalance.set(Some(now));
                return;
            }
            _ => {}
        }
        self.last_rebalance.set(Some(now));
        let elections = image.preferred_elections();
        if !elections.is_empty() {
            tracing::info!(
                partitions = elections.len(),
                "moving leaderships back to preferred replicas"
            );
            self.spawn_proposal(elections);
        }
    }

    /// The observer's driver: registration and proposal retries on each
    /// tick; proposals go to the voter connection ([`Quorum::forwarded`]).
    async fn run_observer(self: Rc<Self>) {
        loop {
            self.controller_duties(Instant::now());
            let pending: Vec<(u64, Vec<u8>)> = self.pending.borrow_mut().drain(..).collect();
            if !pending.is_empty() {
                let mut forward = self.forward.borrow_mut();
                for (_, data) in pending {
                    if forward.len() >= OUTBOX_LIMIT {
                        forward.pop_front();
                    }
                    forward.push_back(data.into());
                }
                self.forward_event.notify();
            }
            let woke = std::pin::pin!(self.wake.wait());
            let slept = std::pin::pin!(compio::time::sleep(self.cfg.tick));
            futures::future::select(woke, slept).await;
        }
    }

    /// Observer: waits for proposals to hand to a voter, then takes them all.
    /// What is lost on the way is proposed again (`inflight`, registration).
    pub async fn forwarded(&self) -> Vec<bytes::Bytes> {
        loop {
            let taken: Vec<bytes::Bytes> = self.forward.borrow_mut().drain(..).collect();
            if !taken.is_empty() {
                return taken;
            }
            self.forward_event.wait().await;
        }
    }

    /// Observer: the last index its image has applied (what it fetches after).
    pub fn applied(&self) -> u64 {
        self.image.borrow().applied
    }

    /// Observer: a voter's reply to a fetch. Entries are applied in order
    /// from the next index; an image newer than ours replaces it. Returns
    /// the active controller the voter named.
    pub fn observed(&self, reply: PeerFrame) -> Option<NodeId> {
        let leader = match reply {
            PeerFrame::Entries { leader, entries } => {
                let first = self.applied() + 1;
                let mut next = first;
                let fresh: Vec<Entry> = entries
                    .into_iter()
                    .skip_while(|e| e.index < first)
                    .take_while(|e| {
                        let contiguous = e.index == next;
                        next += 1;
                        contiguous
                    })
                    .collect();
                self.apply(fresh);
                leader
            }
            PeerFrame::Image { leader, image } => {
                match serde_json::from_slice::<ClusterImage>(&image) {
                    Ok(img) if img.applied > self.applied() => {
                        tracing::info!(index = img.applied, "took the metadata image from a voter");
                        self.publish(img);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "undecodable metadata image from a voter"),
                }
                leader
            }
            PeerFrame::Raft(_) | PeerFrame::Fetch { .. } | PeerFrame::Propose { .. } => {
                return None;
            }
        };
        let leader = (leader != NO_LEADER).then_some(leader);
        self.leader.set(leader);
        self.wake.notify();
        leader
    }

    /// Voter: an observer's fetch from after `applied`. Counts as its
    /// heartbeat; held up to [`OBSERVER_POLL`] while there is nothing newer.
    pub async fn serve_observer(&self, node: NodeId, applied: u64) -> PeerFrame {
        if self.is_observer() {
            return PeerFrame::Entries {
                leader: NO_LEADER,
                entries: Vec::new(),
            };
        }
        self.last_heard.borrow_mut().insert(node, Instant::now());
        if self.applied() <= applied {
            let (tx, rx) = oneshot::channel();
            self.applied_waiters.borrow_mut().push(tx);
            let _ = compio::time::timeout(OBSERVER_POLL, rx).await;
        }
        let leader = self.leader.get().unwrap_or(NO_LEADER);
        let img = self.image();
        if img.applied <= applied {
            return PeerFrame::Entries {
                leader,
                entries: Vec::new(),
            };
        }
        let from = applied + 1;
        let stored = self.with_raw(|raw| {
            if from < raw.store().first_index() {
                return None; // compacted into the snapshot
            }
            let ctx = raft::GetEntriesContext::empty(false);
            raft::Storage::entries(raw.store(), from, img.applied + 1, OBSERVER_BATCH, ctx).ok()
        });
        match stored {
            Some(entries) => PeerFrame::Entries { leader, entries },
            None => match serde_json::to_vec(&*img) {
                Ok(image) => PeerFrame::Image {
                    leader,
                    image: image.into(),
                },
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode the metadata image");
                    PeerFrame::Entries {
                        leader,
                        entries: Vec::new(),
                    }
                }
            },
        }
    }

    /// Voter: a proposal an observer forwarded. Raft takes it (or forwards
    /// it to the leader); bytes that are not a proposal are refused.
    pub fn propose_forwarded(&self, data: bytes::Bytes) {
        if let Err(e) = serde_json::from_slice::<Proposal>(&data) {
            tracing::warn!(error = %e, "refused a malformed forwarded proposal");
            return;
        }
        self.pending.borrow_mut().push((0, data.to_vec()));
        self.wake.notify();
    }

    /// As the active controller, at most once a second: partitions whose
    /// in-sync replicas are all down, of topics with
    /// `unclean.leader.election.enable`, are given to a live replica.
    fn unclean_elections(&self, image: &ClusterImage, now: Instant) {
        if (self.last_unclean.get()).is_some_and(|t| now.duration_since(t) < RESEND_AFTER) {
            return;
        }
        self.last_unclean.set(Some(now));
        let default = self.cfg.unclean_default;
        let elections =
            image.unclean_elections(|t| match t.configs.get("unclean.leader.election.enable") {
                Some(v) => v == "true",
                None => default,
            });
        if !elections.is_empty() {
            tracing::warn!(
                partitions = elections.len(),
                "unclean leader election: out-of-sync replicas lead partitions whose in-sync replicas are all down"
            );
            self.spawn_proposal(elections);
        }
    }

    /// As the active controller: reassignments whose target replicas are
    /// all in sync are completed (one entry each, so one that no longer
    /// applies does not hold back the others).
    fn complete_reassignments(&self, image: &ClusterImage, now: Instant) {
        let last = self.last_reassignment_check.get();
        if last.is_some_and(|t| now.duration_since(t) < RESEND_AFTER) {
            return;
        }
        self.last_reassignment_check.set(Some(now));
        for record in image.reassignments_to_complete() {
            tracing::info!(
                ?record,
                "completing a reassignment: its target replicas are in sync"
            );
            self.spawn_proposal(vec![record]);
        }
    }

    fn spawn_proposal(&self, records: Vec<MetaRecord>) {
        // Queued now; the outcome is seen in the image, so nobody waits.
        if let Ok((seq, data)) = self.encode(records) {
            self.pending.borrow_mut().push((seq, data));
            self.wake.notify();
        }
    }

    /// `records` as this member's next proposal: its sequence number and bytes.
    fn encode(&self, records: Vec<MetaRecord>) -> Result<(u64, Vec<u8>), EngineError> {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let p = Proposal {
            origin: self.cfg.node,
            incarnation: self.incarnation,
            seq,
            records,
        };
        let data = serde_json::to_vec(&p).map_err(|e| EngineError::Storage(e.to_string()))?;
        Ok((seq, data))
    }
}
