//! Consumer groups: Kafka's classic group membership protocol and committed offsets.
//!
//! **Lives on:** each group lives on the shard that owns its `__consumer_offsets`
//! partition (`offsets_partition_of`, Kafka's `abs(groupId.hashCode) % 50`), so
//! group state is never shared between cores.
//!
//! The state machine is Kafka's (`GroupCoordinator` / `GroupMetadata`):
//!
//! ```text
//!  Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!    ▲                   ▲      ▲                                  │ leader's SyncGroup
//!    └── last member ────┘      └──── join, leave, expiry ◀──── Stable ◀┘
//! ```
//!
//! Everything here is synchronous and takes `now` as an argument, so the rules can
//! be tested without a clock; answers that must wait (JoinGroup until the
//! rebalance completes, SyncGroup until the leader's assignment arrives) are
//! oneshot channels resolved by a later call or by [`Group::tick`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;

use crate::error::EngineError;
use crate::types::{Offset, TopicPartition};

/// Partitions of `__consumer_offsets` (Kafka's `offsets.topic.num.partitions`).
pub const OFFSETS_PARTITIONS: u32 = 50;
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's mapping of a group to its offsets partition: Java's `String.hashCode`,
/// made non-negative as `Utils.abs` does, modulo the partition count.
pub fn offsets_partition_of(group: &str) -> u32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs as u32 % OFFSETS_PARTITIONS
}

pub use crate::config::GroupConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The names Kafka's DescribeGroups/ListGroups use.
    pub fn kafka_name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup request, engine-side.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub group: String,
    /// `None` for a first join.
    pub member_id: Option<String>,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// Clients from JoinGroup v4 on expect MEMBER_ID_REQUIRED on a first join.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in the JoinGroup response.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JoinResponse {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Non-empty only for the leader.
    pub members: Vec<JoinedMember>,
}

pub type JoinResult = Result<JoinResponse, EngineError>;
pub type SyncResult = Result<Bytes, EngineError>;

/// An answer now, or a channel that will carry it.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A committed offset as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedOffset {
    /// `None` when the client committed -1, which Kafka accepts and stores; an
    /// OffsetFetch then answers -1, "no committed offset", as for none at all.
    pub offset: Option<Offset>,
    pub leader_epoch: Option<i32>,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A member of a group.
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    /// Join order, so the first member to join leads by default.
    seq: u64,
}

/// One consumer group.
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// The current rebalance started from Empty: wait out the initial delay even
    /// if everyone known has joined, so a starting fleet lands in one generation.
    initial_delay: bool,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
    /// TxnOffsetCommit offsets per producer id, applied to `offsets` by the
    /// transaction's commit marker and dropped by its abort marker.
    pub txn_offsets: HashMap<u64, BTreeMap<TopicPartition, CommittedOffset>>,
    next_seq: u64,
    /// What `__consumer_offsets` holds of this group's membership:
    /// (generation, with members), or `None` when nothing is stored.
    pub persisted: Option<(i32, bool)>,
}

impl Member {
    /// The metadata this member sent for `protocol` (empty if it sent none).
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, md)| md.clone())
            .unwrap_or_default()
    }

    /// Answers any parked JoinGroup/SyncGroup of this member with `e`.
    fn fail_waiters(&mut self, e: EngineError) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(Err(e.clone()));
        }
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(Err(e));
        }
    }
}

/// The topic names of a `ConsumerProtocolSubscription` (version i16, then
/// an array of i16-length strings), or `None` if it does not read.
pub fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = metadata.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    take(2)?; // the version
    let count = i32::from_be_bytes(take(4).and_then(|b| b.try_into().ok())?);
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(take(2).and_then(|b| b.try_into().ok())?);
        let name = take(usize::try_from(len).ok()?)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
    }
    Some(topics)
}

fn fail<T>(e: EngineError) -> Reply<Result<T, EngineError>> {
    Reply::Now(Err(e))
}

impl Group {
    pub fn new(id: String) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: false,
            offsets: BTreeMap::new(),
            txn_offsets: HashMap::new(),
            next_seq: 0,
            persisted: None,
        }
    }

    /// The membership to store now, if it changed since it was last stored:
    /// a Stable group's members and assignments, or an Empty group that had
    /// stored members (Kafka stores both; a rebalance in progress waits).
    pub fn membership_to_store(&self) -> Option<crate::coord::group_log::Membership> {
        use crate::coord::group_log::{Membership, StoredMember};
        let want = match self.state {
            GroupState::Stable => (self.generation, true),
            GroupState::Empty if self.persisted.is_some() => (self.generation, false),
            _ => return None,
        };
        if self.persisted == Some(want) {
            return None;
        }
        let protocol = self.protocol.clone().filter(|_| want.1);
        let members = (self.members.values())
            .filter(|_| want.1)
            .map(|m| StoredMember {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
                session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                subscription: m
                    .metadata_for(protocol.as_deref().unwrap_or_default())
                    .to_vec(),
                assignment: m.assignment.to_vec(),
            })
            .collect();
        Some(Membership {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol,
            leader: self.leader.clone().filter(|_| want.1),
            members,
        })
    }

    /// Takes the membership a replayed metadata record stored (`None`: a
    /// tombstone). Members start a fresh session at `now`, as Kafka's
    /// coordinator does when it loads a group.
    pub fn restore_membership(
        &mut self,
        m: Option<crate::coord::group_log::Membership>,
        now: Instant,
    ) {
        for (_, mut old) in std::mem::take(&mut self.members) {
            old.fail_waiters(EngineError::NotCoordinator);
        }
        self.pending.clear();
        self.rebalance_deadline = None;
        self.initial_delay = false;
        let Some(m) = m else {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.persisted = None;
            return;
        };
        let stable = !m.members.is_empty();
        self.generation = m.generation;
        self.protocol_type = Some(m.protocol_type).filter(|t| !t.is_empty());
        self.protocol = m.protocol.filter(|_| stable);
        self.leader = m.leader.filter(|_| stable);
        self.state = if stable {
            GroupState::Stable
        } else {
            GroupState::Empty
        };
        let protocol = self.protocol.clone().unwrap_or_default();
        for x in m.members {
            let ms = |v: i32| Duration::from_millis(u64::try_from(v).unwrap_or(0));
            let seq = self.next_seq;
            self.next_seq += 1;
            self.members.insert(
                x.id.clone(),
                Member {
                    id: x.id,
                    instance_id: x.instance_id,
                    client_id: x.client_id,
                    client_host: x.client_host,
                    session_timeout: ms(x.session_timeout_ms),
                    rebalance_timeout: ms(x.rebalance_timeout_ms),
                    protocols: vec![(protocol.clone(), Bytes::from(x.subscription))],
                    assignment: Bytes::from(x.assignment),
                    last_heartbeat: now,
                    join_waiter: None,
                    sync_waiter: None,
                    seq,
                },
            );
        }
        self.persisted = Some((self.generation, stable));
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let id = crate::ids::random_uuid();
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{client_id}-{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    fn member_by_instance(&self, instance: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.clone())
    }

    fn supports_protocols(&self, req: &JoinRequest) -> bool {
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(req.protocol_type.as_str())
            && self.candidate_protocols(Some(req)).next().is_some()
    }

    /// Protocols every member (and `extra`, a joiner) supports, in the order of
    /// the first member's preference.
    fn candidate_protocols<'a>(
        &'a self,
        extra: Option<&'a JoinRequest>,
    ) -> impl Iterator<Item = &'a str> + 'a {
        let first: Vec<&str> = match self.members.values().next() {
            Some(m) => m.protocols.iter().map(|(n, _)| n.as_str()).collect(),
            None => extra
                .map(|r| r.protocols.iter().map(|(n, _)| n.as_str()).collect())
                .unwrap_or_default(),
        };
        first.into_iter().filter(move |name| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                && extra.is_none_or(|r| r.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Kafka's choice: each member votes for its most preferred common protocol.
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&str> = self.candidate_protocols(None).collect();
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
                && let Some(v) = votes.iter_mut().find(|(_, c)| c == n)
            {
                v.0 += 1;
            }
        }
        // Highest vote wins; ties go to the earlier candidate.
        let best = votes.iter().map(|(v, _)| *v).max()?;
        votes
            .iter()
            .find(|(v, _)| *v == best)
            .map(|(_, c)| c.to_string())
    }

    /// Handles a JoinGroup.
    pub fn join(&mut self, req: JoinRequest, cfg: &GroupConfig, now: Instant) -> Reply<JoinResult> {
        if req.session_timeout < cfg.min_session_timeout
            || req.session_timeout > cfg.max_session_timeout
        {
            return fail(EngineError::InvalidSessionTimeout);
        }
        if !self.supports_protocols(&req) {
            return fail(EngineError::InconsistentGroupProtocol);
        }
        match req.member_id.clone() {
            None => self.join_new(req, cfg, now),
            Some(id) if self.pending.remove(&id).is_some() => {
                self.add_and_rebalance(id, req, cfg, now)
            }
            Some(id) if self.members.contains_key(&id) => self.join_known(id, req, cfg, now),
            Some(_) => fail(EngineError::UnknownMemberId),
        }
    }

    fn join_new(&mut self, req: JoinRequest, cfg: &GroupConfig, now: Instant) -> Reply<JoinResult> {
        let id = self.new_member_id(&req.client_id);
        if let Some(instance) = req.instance_id.clone() {
            if let Some(old) = self.member_by_instance(&instance) {
                return self.replace_static_member(old, id, req, cfg, now);
            }
            return self.add_and_rebalance(id, req, cfg, now);
        }
        if req.require_known_member_id {
            self.pending.insert(id.clone(), now + req.session_timeout);
            return fail(EngineError::MemberIdRequired(id));
        }
        self.add_and_rebalance(id, req, cfg, now)
    }

    /// A static member came back with a new process: it takes over its old
    /// member's place (fencing the old id) without a rebalance when the group is
    /// stable and its protocols did not change.
    fn replace_static_member(
        &mut self,
        old: String,
        id: String,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Reply<JoinResult> {
        let mut m = self
            .members
            .remove(&old)
            .expect("instance maps to a member");
        m.fail_waiters(EngineError::FencedInstanceId);
        let unchanged = m.protocols == req.protocols;
        m.id = id.clone();
        m.last_heartbeat = now;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(id.clone());
        }
        self.members.insert(id.clone(), m);
        if self.state == GroupState::Stable && unchanged {
            return Reply::Now(Ok(self.join_response(&id)));
        }
        self.add_and_rebalance(id, req, cfg, now)
    }

    fn join_known(
        &mut self,
        id: String,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Reply<JoinResult> {
        let m = self.members.get_mut(&id).expect("known member");
        if m.instance_id != req.instance_id && req.instance_id.is_some() {
            return fail(EngineError::FencedInstanceId);
        }
        let unchanged = m.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) && unchanged
            && !is_leader
        {
            m.last_heartbeat = now;
            return Reply::Now(Ok(self.join_response(&id)));
        }
        self.add_and_rebalance(id, req, cfg, now)
    }

    /// Adds (or updates) the member, parks its join, and starts or advances a rebalance.
    fn add_and_rebalance(
        &mut self,
        id: String,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let seq = self.next_seq;
        let m = self.members.entry(id.clone()).or_insert_with(|| Member {
            id: id.clone(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout: req.session_timeout,
            rebalance_timeout: req.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_heartbeat: now,
            join_waiter: None,
            sync_waiter: None,
            seq,
        });
        if m.seq == seq {
            self.next_seq += 1;
        }
        m.protocols = req.protocols;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.last_heartbeat = now;
        if let Some(old) = m.join_waiter.replace(tx) {
            let _ = old.send(Err(EngineError::UnknownMemberId));
        }
        // The first member sets the group's protocol type (Kafka's `add`); an
        // Empty group may keep an old one, which a new first member replaces.
        if self.members.len() == 1 || self.protocol_type.is_none() {
            self.protocol_type = Some(req.protocol_type);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(cfg, now);
        }
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    fn prepare_rebalance(&mut self, cfg: &GroupConfig, now: Instant) {
        let was_empty = self.state == GroupState::Empty;
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(EngineError::RebalanceInProgress));
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let wait = if was_empty {
            cfg.initial_rebalance_delay.min(timeout)
        } else {
            timeout
        };
        self.rebalance_deadline = Some(now + wait);
        self.state = GroupState::PreparingRebalance;
        self.initial_delay = was_empty;
    }

    /// Completes the join phase once every member has rejoined (or the deadline
    /// passed, dropping those that did not).
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some());
        let due = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !(due || (all_joined && !self.initial_delay)) {
            return;
        }
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.members.remove(&id);
        }
        self.generation += 1;
        self.rebalance_deadline = None;
        self.initial_delay = false;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            // The protocol type stays, as in Kafka: an Empty group that had
            // consumers still describes itself as a "consumer" group.
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.seq)
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let resp = self.join_response(&id);
            let m = self.members.get_mut(&id).expect("member");
            m.last_heartbeat = now;
            m.assignment = Bytes::new();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Ok(resp));
            }
        }
    }

    fn join_response(&self, id: &str) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(id);
        let members = if is_leader {
            let mut ms: Vec<&Member> = self.members.values().collect();
            ms.sort_by_key(|m| m.seq);
            ms.into_iter()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol,
            leader: self.leader.clone().unwrap_or_default(),
            member_id: id.to_string(),
            members,
        }
    }

    fn check_member(
        &self,
        id: &str,
        generation: i32,
        instance: Option<&str>,
    ) -> Result<(), EngineError> {
        let Some(m) = self.members.get(id) else {
            if let Some(i) = instance
                && self.member_by_instance(i).is_some()
            {
                return Err(EngineError::FencedInstanceId);
            }
            return Err(EngineError::UnknownMemberId);
        };
        if instance.is_some() && m.instance_id.as_deref() != instance {
            return Err(EngineError::FencedInstanceId);
        }
        if generation != self.generation {
            return Err(EngineError::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles a SyncGroup; the leader's call carries everyone's assignment.
    pub fn sync(
        &mut self,
        id: &str,
        generation: i32,
        instance: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Reply<SyncResult> {
        if let Err(e) = self.check_member(id, generation, instance) {
            return fail(e);
        }
        match self.state {
            GroupState::Empty => fail(EngineError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(EngineError::RebalanceInProgress),
            GroupState::Stable => Reply::Now(Ok(self.members[id].assignment.clone())),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let m = self.members.get_mut(id).expect("checked member");
                m.last_heartbeat = now;
                m.sync_waiter = Some(tx);
                if self.leader.as_deref() == Some(id) {
                    for (member, assignment) in assignments {
                        if let Some(m) = self.members.get_mut(&member) {
                            m.assignment = assignment;
                        }
                    }
                    self.state = GroupState::Stable;
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(Ok(m.assignment.clone()));
                        }
                    }
                }
                Reply::Later(rx)
            }
        }
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &mut self,
        id: &str,
        generation: i32,
        instance: Option<&str>,
        now: Instant,
    ) -> Result<(), EngineError> {
        if self.state == GroupState::Empty {
            return Err(EngineError::UnknownMemberId);
        }
        self.check_member(id, generation, instance)?;
        self.members
            .get_mut(id)
            .expect("checked member")
            .last_heartbeat = now;
        match self.state {
            GroupState::PreparingRebalance => Err(EngineError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Handles one member of a LeaveGroup (by member id, or by instance id for
    /// static members).
    pub fn leave(
        &mut self,
        id: &str,
        instance: Option<&str>,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Result<(), EngineError> {
        let id = match instance {
            Some(i) => {
                let found = self
                    .member_by_instance(i)
                    .ok_or(EngineError::UnknownMemberId)?;
                if !id.is_empty() && id != found {
                    return Err(EngineError::FencedInstanceId);
                }
                found
            }
            None => id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return Ok(());
        }
        self.remove_member(&id, cfg, now)
            .then_some(())
            .ok_or(EngineError::UnknownMemberId)
    }

    fn remove_member(&mut self, id: &str, cfg: &GroupConfig, now: Instant) -> bool {
        let Some(mut m) = self.members.remove(id) else {
            return false;
        };
        m.fail_waiters(EngineError::UnknownMemberId);
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(cfg, now)
            }
            GroupState::PreparingRebalance | GroupState::Empty => {}
        }
        self.maybe_complete_join(now);
        true
    }

    /// Expires silent members and pending ids, and completes due rebalances.
    /// Called a few times a second by the owning shard.
    pub fn tick(&mut self, cfg: &GroupConfig, now: Instant) {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                let waiting_to_join =
                    self.state == GroupState::PreparingRebalance && m.join_waiter.is_some();
                !waiting_to_join && now.duration_since(m.last_heartbeat) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, cfg, now);
        }
        self.maybe_complete_join(now);
    }

    /// Whether an OffsetCommit from this member/generation may be applied.
    /// Generation -1 with no member id is a "simple" commit, allowed only while
    /// the group has no members (Kafka's rule).
    pub fn check_commit(
        &self,
        id: &str,
        generation: i32,
        instance: Option<&str>,
    ) -> Result<(), EngineError> {
        if generation < 0 && id.is_empty() {
            // Kafka: "" is not a member of a group that has members.
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(EngineError::UnknownMemberId)
            };
        }
        if self.state == GroupState::Empty {
            return Err(EngineError::UnknownMemberId);
        }
        self.check_member(id, generation, instance)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(EngineError::RebalanceInProgress);
        }
        Ok(())
    }

    /// The topics the members of a non-empty consumer group subscribe to,
    /// read from their metadata for the chosen protocol (Kafka's
    /// `ConsumerProtocolSubscription`: a version, then the topic names, in
    /// every version). `None` when the group is not a consumer group; a
    /// member whose metadata does not read counts as subscribed to nothing.
    pub fn subscribed_topics(&self) -> Option<std::collections::BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref().unwrap_or_default();
        let mut topics = std::collections::BTreeSet::new();
        for m in self.members.values() {
            topics.extend(subscription_topics(&m.metadata_for(protocol)).unwrap_or_default());
        }
        Some(topics)
    }

    /// Nothing has happened to the group yet: what `Group::new` makes.
    pub fn is_new(&self) -> bool {
        self.state == GroupState::Empty
            && self.is_empty_of_everything()
            && self.protocol_type.is_none()
    }

    /// Nothing to keep: no members, offsets or pending transactional offsets
    /// (a stored membership alone is not worth keeping once Empty).
    pub fn is_empty_of_everything(&self) -> bool {
        self.members.is_empty()
            && self.offsets.is_empty()
            && self.pending.is_empty()
            && self.txn_offsets.is_empty()
    }

    /// Whether a transaction not yet decided holds an offset of `tp`
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT).
    pub fn has_pending_txn_offset(&self, tp: &TopicPartition) -> bool {
        self.txn_offsets.values().any(|o| o.contains_key(tp))
    }

    /// A transaction marker for `producer_id` reached this group's offsets
    /// partition: its pending offsets become committed, or are dropped.
    pub fn complete_txn(&mut self, producer_id: u64, commit: bool) {
        if let Some(offsets) = self.txn_offsets.remove(&producer_id)
            && commit
        {
            self.offsets.extend(offsets);
        }
    }
}

#[cfg(test)]
mod tests;
