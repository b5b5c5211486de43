//! Deterministic simulation of partition replication and the controller.
//!
//! The decisions are Brook's own code: `ClusterImage::apply` (fencing, new
//! leaders and epochs, ISR changes, registration, preferred elections),
//! `LeaderState` (follower progress, the high watermark, the ISR a leader asks
//! for), `EpochCache`, `divergence` and `truncation_point`. What is modelled
//! is what they are driven by: the metadata quorum as one linearizable log
//! (raft-rs, which TiKV tests, is not re-simulated here), logs as vectors of
//! one-record batches with an fsynced prefix, and a network that drops,
//! delays, duplicates and reorders fetches and their answers. A seeded
//! scheduler picks every step: produce, fsync, fetch, deliver, crash (losing
//! all that was not fsynced), a failed disk (a write or fsync error: the copy
//! loses what was not fsynced and goes offline while its broker stays up and
//! reports it, `MarkReplicasOffline`, until it restarts), restart, a
//! controller that fences silent or suspected brokers, delayed delivery of
//! images to brokers, ISR changes, preferred elections and clock jumps.
//!
//! Checked after every step:
//! - at most one broker leads a given leader epoch;
//! - a broker's high watermark never goes back while it runs;
//! - every acknowledged record is in the fsynced log of every ISR member;
//! - every record a consumer could have read (below a leader's high
//!   watermark) stays at its offset in every later leader;
//!
//! and at the end, once faults stop and replication settles, the leader holds
//! every acknowledged record and every follower's log equals the leader's.
//!
//! `SIM_SEEDS` (default 2000; a soak: `SIM_SEEDS=1000000`) seeds run;
//! `SIM_SEED=n` replays one with its trace; `SIM_STEPS`
//! steps per seed (default 1500). A failure names its seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use brook_engine::cluster::image::{
    ClusterImage, MetaRecord, NO_LEADER, NodeId, Proposal, place_replicas,
};
use brook_engine::log::replica::{EpochCache, LeaderState, divergence, truncation_point};
use brook_engine::{EngineError, Offset};

mod sim;
use sim::{Rng, env};

const TOPIC: &str = "t";
const NODES: NodeId = 3;
const MIN_ISR: usize = 2;
const LAG: Duration = Duration::from_millis(3000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rec {
    epoch: i32,
    value: u64,
}

enum Role {
    Down,
    Leader(LeaderState),
    Follower { leader_hw: u64 },
}

struct Node {
    id: NodeId,
    role: Role,
    log: Vec<Rec>,
    durable: usize,
    epochs: EpochCache,
    hw: u64,
    leader_epoch: i32,
    /// Index of the image this broker has (into the controller's history).
    seen: usize,
    /// The correlation id of the fetch in flight (0: none). As the real
    /// fetcher, a broker has one fetch in flight per leader and takes only
    /// the answer that carries its id.
    fetching: u64,
    next_correlation: u64,
    /// Bumped at every restart; fetches and registrations carry it.
    incarnation: u64,
    /// Its disk failed: the copy is offline, the broker itself still up.
    disk_failed: bool,
}

impl Node {
    fn up(&self) -> bool {
        !matches!(self.role, Role::Down)
    }
    fn last_epoch(&self) -> i32 {
        self.epochs.latest().unwrap_or(-1)
    }
}

#[derive(Clone, Debug)]
enum Msg {
    Fetch {
        from: NodeId,
        correlation: u64,
        incarnation: u64,
        to: NodeId,
        offset: u64,
        last_epoch: i32,
        leader_epoch: i32,
    },
    Answer {
        to: NodeId,
        correlation: u64,
        leader_epoch: i32,
        diverging: Option<(i32, Offset)>,
        start: u64,
        records: Vec<Rec>,
        hw: u64,
    },
    Refused {
        to: NodeId,
        correlation: u64,
    },
}

struct World {
    rng: Rng,
    seed: u64,
    step: usize,
    base: Instant,
    now_ms: u64,
    nodes: Vec<Node>,
    net: Vec<Msg>,
    images: Vec<ClusterImage>,
    seq: u64,
    next_value: u64,
    /// Produced on a leader, waiting for its high watermark: (node, epoch, offset, value).
    pending: Vec<(NodeId, i32, u64, u64)>,
    acked: BTreeMap<u64, u64>,
    visible: BTreeMap<u64, u64>,
    /// Brokers cut off from everyone (the controller suspects them).
    isolated: BTreeSet<NodeId>,
    faults: bool,
    producing: bool,
    trace: VecDeque<String>,
    /// Disk failures whose report the controller took.
    offline_reports: usize,
}

impl World {
    fn new(seed: u64) -> World {
        let mut w = World {
            rng: Rng(seed),
            seed,
            step: 0,
            base: Instant::now(),
            now_ms: 0,
            nodes: (1..=NODES)
                .map(|id| Node {
                    id,
                    role: Role::Down,
                    log: Vec::new(),
                    durable: 0,
                    epochs: EpochCache::default(),
                    hw: 0,
                    leader_epoch: -1,
                    seen: 0,
                    fetching: 0,
                    next_correlation: 1,
                    incarnation: 1,
                    disk_failed: false,
                })
                .collect(),
            net: Vec::new(),
            images: vec![ClusterImage::default()],
            seq: 0,
            next_value: 1,
            pending: Vec::new(),
            acked: BTreeMap::new(),
            visible: BTreeMap::new(),
            isolated: BTreeSet::new(),
            faults: true,
            producing: true,
            trace: VecDeque::new(),
            offline_reports: 0,
        };
        let regs = (1..=NODES).map(|n| register(n, 1)).collect();
        w.propose(regs).expect("registration");
        let live = w.image().live_brokers();
        let replicas = place_replicas(&live, TOPIC, 0, 1, 3).unwrap();
        w.propose(vec![MetaRecord::CreateTopic {
            name: TOPIC.into(),
            id: [1; 16],
            configs: BTreeMap::new(),
            replicas,
        }])
        .expect("topic");
        for i in 0..NODES as usize {
            w.nodes[i].role = Role::Follower { leader_hw: 0 };
            w.deliver_image(i, true);
        }
        w
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn image(&self) -> &ClusterImage {
        self.images.last().unwrap()
    }

    fn log(&mut self, what: String) {
        if self.trace.len() >= 40 {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("#{} t={} {what}", self.step, self.now_ms));
    }

    /// The quorum: a proposal is applied at once, in order, everywhere
    /// (brokers see it when `deliver_image` hands them the new image).
    fn propose(&mut self, records: Vec<MetaRecord>) -> Result<(), EngineError> {
        self.seq += 1;
        let mut img = self.image().clone();
        let index = img.applied + 1;
        let p = Proposal {
            origin: 0,
            incarnation: 0,
            seq: self.seq,
            records: records.clone(),
        };
        let r = img.apply(index, &p);
        self.log(format!("propose {records:?} -> {r:?}"));
        self.images.push(img);
        r.map(|_| ())
    }

    fn partition_in(&self, i: usize) -> brook_engine::cluster::image::PartitionInfo {
        let img = &self.images[self.nodes[i].seen];
        img.partition(TOPIC, 0).cloned().unwrap()
    }

    /// A broker takes the next image (or the latest) and the role it gives,
    /// as `Shard::apply_roles` does.
    fn deliver_image(&mut self, i: usize, latest: bool) {
        let n = &mut self.nodes[i];
        if !n.up() || n.seen + 1 >= self.images.len() && !latest {
            return;
        }
        n.seen = if latest {
            self.images.len() - 1
        } else {
            n.seen + 1
        };
        let pi = self.partition_in(i);
        let now = self.now();
        let n = &mut self.nodes[i];
        let id = n.id;
        if pi.leader == id {
            let same = matches!(&n.role, Role::Leader(l) if l.epoch == pi.leader_epoch);
            if same {
                if let Role::Leader(l) = &mut n.role {
                    l.set_isr(pi.isr.clone(), pi.partition_epoch);
                }
            } else {
                n.leader_epoch = pi.leader_epoch;
                n.epochs.assign(pi.leader_epoch, Offset(n.log.len() as u64));
                let mut l = LeaderState::new(
                    id,
                    pi.leader_epoch,
                    pi.replicas.clone(),
                    pi.isr.clone(),
                    Offset(n.log.len() as u64),
                    now,
                );
                l.set_isr(pi.isr.clone(), pi.partition_epoch);
                n.role = Role::Leader(l);
                self.log(format!("n{id} leads epoch {}", pi.leader_epoch));
            }
        } else {
            let following = matches!(n.role, Role::Follower { .. });
            if !following || n.leader_epoch != pi.leader_epoch {
                n.leader_epoch = pi.leader_epoch;
                n.role = Role::Follower { leader_hw: n.hw };
                self.pending.retain(|p| p.0 != id);
                self.log(format!(
                    "n{id} follows n{} epoch {}",
                    pi.leader, pi.leader_epoch
                ));
            }
        }
        self.update_hw(i);
        // A running broker the image shows fenced, or registered from an
        // earlier start, registers (again).
        let img = &self.images[self.nodes[i].seen];
        let incarnation = self.nodes[i].incarnation;
        let registered =
            (img.brokers.get(&id)).is_some_and(|b| !b.fenced && b.incarnation == incarnation);
        if !registered
            && !self.isolated.contains(&id)
            && self.images.len() - 1 == self.nodes[i].seen
        {
            let _ = self.propose(vec![register(id, incarnation)]);
        }
    }

    fn update_hw(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let allowed = match &n.role {
            Role::Down => return,
            Role::Leader(l) => l.high_watermark(Offset(n.durable as u64)).0,
            Role::Follower { leader_hw } => (*leader_hw).min(n.durable as u64),
        };
        if allowed > n.hw {
            n.hw = allowed;
        }
        if let Role::Leader(l) = &n.role {
            let (id, epoch, hw) = (n.id, l.epoch, n.hw);
            // Consumers may now read below the high watermark.
            for o in 0..hw {
                let v = n.log[o as usize].value;
                if let Some(old) = self.visible.insert(o, v) {
                    assert_eq!(old, v, "offset {o}: a consumer saw {old}, now {v}");
                }
            }
            let mut acked = Vec::new();
            self.pending.retain(|&(node, e, o, v)| {
                if node == id && e == epoch && o < hw {
                    acked.push((o, v));
                    false
                } else {
                    true
                }
            });
            for (o, v) in acked {
                assert_eq!(self.nodes[i].log[o as usize].value, v);
                self.acked.insert(o, v);
            }
        }
    }

    fn live(&self, i: usize) -> impl Fn(NodeId) -> bool + '_ {
        let img = &self.images[self.nodes[i].seen];
        move |n| img.brokers.get(&n).is_some_and(|b| !b.fenced)
    }

    fn tick(&mut self) {
        self.step += 1;
        let i = self.rng.below(NODES as u64) as usize;
        let id = self.nodes[i].id;
        match self.rng.below(100) {
            0..=19 if self.producing => {
                // A client produces to a broker that thinks it leads.
                let n = &mut self.nodes[i];
                if let Role::Leader(l) = &n.role
                    && l.isr.len() >= MIN_ISR
                {
                    let (epoch, value) = (l.epoch, self.next_value);
                    self.next_value += 1;
                    let o = n.log.len() as u64;
                    n.log.push(Rec { epoch, value });
                    self.pending.push((id, epoch, o, value));
                }
            }
            20..=34 => {
                // A flush: everything appended is fsynced.
                let n = &mut self.nodes[i];
                if n.up() {
                    n.durable = n.log.len();
                    self.update_hw(i);
                }
            }
            35..=49 => {
                // A follower with nothing unsynced fetches from its leader.
                let n = &self.nodes[i];
                if matches!(n.role, Role::Follower { .. })
                    && n.fetching == 0
                    && n.durable == n.log.len()
                    && !self.isolated.contains(&id)
                {
                    let leader = self.partition_in(i).leader;
                    if leader != NO_LEADER {
                        let correlation = n.next_correlation;
                        let m = Msg::Fetch {
                            from: id,
                            correlation,
                            incarnation: n.incarnation,
                            to: leader,
                            offset: n.log.len() as u64,
                            last_epoch: n.last_epoch(),
                            leader_epoch: n.leader_epoch,
                        };
                        self.nodes[i].fetching = correlation;
                        self.nodes[i].next_correlation += 1;
                        self.net.push(m);
                    }
                }
            }
            50..=69 => self.deliver_one(),
            70..=79 => {
                let latest = self.rng.chance(30);
                self.deliver_image(i, latest);
            }
            80..=84 => {
                // The leader asks for the ISR it wants.
                let live = self.live(i);
                let now = self.now();
                let n = &self.nodes[i];
                if let Role::Leader(l) = &n.role
                    && let Some(isr) = l.wanted_isr(now, LAG, Offset(n.hw), live)
                {
                    let r = MetaRecord::AlterPartition {
                        topic: TOPIC.into(),
                        partition: 0,
                        leader: id,
                        leader_epoch: l.epoch,
                        partition_epoch: l.partition_epoch,
                        isr: isr.clone(),
                    };
                    if let Role::Leader(l) = &mut self.nodes[i].role {
                        l.propose_isr(isr);
                    }
                    // As `Shard::maintain_isr`: only an outright refusal
                    // drops the proposed members from the count.
                    let refused = (self.propose(vec![r]))
                        .is_err_and(|e| matches!(e, EngineError::InvalidRequest(_)));
                    if refused && let Role::Leader(l) = &mut self.nodes[i].role {
                        l.abandon_isr();
                    }
                }
            }
            85..=87 => self.now_ms += 1 + self.rng.below(2000), // the clock jumps
            88..=89 if self.faults => {
                if !self.nodes[i].up() {
                    self.restart(i);
                } else if self.rng.chance(25) {
                    self.fail_disk(i);
                } else {
                    self.crash(i);
                }
            }
            90..=91 if self.faults => {
                // The controller fences a broker it has not heard from.
                let down = !self.nodes[i].up() && !self.nodes[i].disk_failed;
                let silent = down || self.isolated.contains(&id);
                let fenced = self.image().brokers.get(&id).is_none_or(|b| b.fenced);
                if (silent || self.rng.chance(10)) && !fenced {
                    let _ = self.propose(vec![MetaRecord::FenceBroker { node: id }]);
                }
            }
            92 if self.faults => {
                if !self.isolated.remove(&id) && self.isolated.is_empty() {
                    self.isolated.insert(id);
                    self.log(format!("n{id} cut off"));
                }
            }
            93 => {
                let e = self.image().preferred_elections();
                if !e.is_empty() {
                    let _ = self.propose(e);
                }
            }
            94..=95 if !self.nodes[i].up() => self.restart(i),
            _ => self.now_ms += 1 + self.rng.below(50),
        }
        self.check();
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        // Everything not fsynced is lost.
        n.log.truncate(n.durable);
        n.epochs.truncate_to(Offset(n.durable as u64));
        n.role = Role::Down;
        n.fetching = 0;
        let id = n.id;
        self.pending.retain(|p| p.0 != id);
        self.log(format!("n{id} crashed, log {}", self.nodes[i].log.len()));
    }

    /// A write or fsync fails: the copy loses what was not fsynced and goes
    /// offline; the broker stays up and tells the controller (as
    /// `Shard::report_offline`), unless it is cut off.
    fn fail_disk(&mut self, i: usize) {
        self.crash(i);
        let n = &mut self.nodes[i];
        n.disk_failed = true;
        let (id, incarnation) = (n.id, n.incarnation);
        self.log(format!("n{id}'s disk failed"));
        if !self.isolated.contains(&id) {
            let report = self.propose(vec![MetaRecord::MarkReplicasOffline {
                node: id,
                incarnation,
                partitions: vec![(TOPIC.to_string(), 0)],
            }]);
            self.offline_reports += report.is_ok() as usize;
        }
    }

    fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.up() {
            return;
        }
        n.disk_failed = false;
        // Reopened: the high watermark is relearned.
        n.hw = 0;
        n.incarnation += 1;
        n.role = Role::Follower { leader_hw: 0 };
        n.leader_epoch = -1;
        let id = n.id;
        self.log(format!("n{id} restarted"));
        self.deliver_image(i, true);
    }

    fn deliver_one(&mut self) {
        if self.net.is_empty() {
            return;
        }
        let k = self.rng.below(self.net.len() as u64) as usize;
        let m = if self.faults && self.rng.chance(10) {
            self.net[k].clone() // duplicated: delivered and kept
        } else {
            self.net.swap_remove(k)
        };
        if self.faults && self.rng.chance(10) {
            // Dropped: the fetcher times out and asks again.
            let (who, c) = match m {
                Msg::Answer {
                    to, correlation, ..
                }
                | Msg::Refused { to, correlation } => (to, correlation),
                Msg::Fetch {
                    from, correlation, ..
                } => (from, correlation),
            };
            let n = self.node_mut(who);
            if n.fetching == c {
                n.fetching = 0;
            }
            return;
        }
        match m {
            Msg::Fetch {
                from,
                correlation,
                incarnation,
                to,
                offset,
                last_epoch,
                leader_epoch,
            } => self.on_fetch(
                (from, correlation, incarnation),
                to,
                offset,
                last_epoch,
                leader_epoch,
            ),
            Msg::Answer {
                to,
                correlation,
                leader_epoch,
                diverging,
                start,
                records,
                hw,
            } => {
                if self.node_mut(to).fetching == correlation {
                    self.node_mut(to).fetching = 0;
                    self.on_answer(to, leader_epoch, diverging, start, records, hw)
                }
            }
            Msg::Refused { to, correlation } => {
                let n = self.node_mut(to);
                if n.fetching == correlation {
                    n.fetching = 0;
                }
            }
        }
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// The leader's side, as `Shard::replica_fetch` does it.
    fn on_fetch(
        &mut self,
        (from, correlation, incarnation): (NodeId, u64, u64),
        to: NodeId,
        offset: u64,
        last_epoch: i32,
        epoch: i32,
    ) {
        let li = (to - 1) as usize;
        let now = self.now();
        let blocked = self.isolated.contains(&to) || self.isolated.contains(&from);
        let n = &mut self.nodes[li];
        let leads = matches!(&n.role, Role::Leader(l) if l.epoch == epoch);
        if !leads || blocked {
            self.net.push(Msg::Refused {
                to: from,
                correlation,
            });
            return;
        }
        let log_end = Offset(n.log.len() as u64);
        if let Some(d) = divergence(&n.epochs, Offset(0), log_end, Offset(offset), last_epoch) {
            self.net.push(Msg::Answer {
                to: from,
                correlation,
                leader_epoch: epoch,
                diverging: Some(d),
                start: offset,
                records: Vec::new(),
                hw: n.hw,
            });
            return;
        }
        if let Role::Leader(l) = &mut n.role
            && !l.on_fetch(from, incarnation, Offset(offset), log_end, now)
        {
            self.net.push(Msg::Refused {
                to: from,
                correlation,
            });
            return;
        }
        self.update_hw(li);
        self.log(format!(
            "n{to} took fetch n{from}@{offset} e{last_epoch} (c{correlation} i{incarnation})"
        ));
        let n = &self.nodes[li];
        // A follower reads up to the leader's durable end.
        let end = n.durable.max(offset as usize).min(n.log.len());
        let records = n.log[(offset as usize).min(end)..end].to_vec();
        self.net.push(Msg::Answer {
            to: from,
            correlation,
            leader_epoch: epoch,
            diverging: None,
            start: offset,
            records,
            hw: n.hw,
        });
    }

    /// The follower's side, as `replica_fetcher::apply` does it.
    fn on_answer(
        &mut self,
        to: NodeId,
        epoch: i32,
        diverging: Option<(i32, Offset)>,
        start: u64,
        records: Vec<Rec>,
        hw: u64,
    ) {
        let fi = (to - 1) as usize;
        let n = &mut self.nodes[fi];
        if !matches!(n.role, Role::Follower { .. }) || n.leader_epoch != epoch {
            return;
        }
        if let Some(d) = diverging {
            let at = truncation_point(&n.epochs, Offset(n.log.len() as u64), d).0 as usize;
            // Epochs that start at the cut go even when no batch does (an
            // epoch this broker led without writing in it).
            n.epochs.truncate_to(Offset(at as u64));
            if at < n.log.len() {
                n.log.truncate(at);
                n.durable = n.durable.min(at);
                let id = n.id;
                self.log(format!("n{id} truncated to {at} ({d:?})"));
            }
            return;
        }
        if start != n.log.len() as u64 {
            return; // a stale or duplicated answer: refused, as append_replica does
        }
        for (k, r) in records.iter().enumerate() {
            n.epochs.assign(r.epoch, Offset(start + k as u64));
            n.log.push(*r);
        }
        let (id, len) = (n.id, n.log.len());
        if !records.is_empty() {
            self.log(format!("n{id} appended {}..{len}", start));
        }
        let n = &mut self.nodes[fi];
        if let Role::Follower { leader_hw } = &mut n.role {
            *leader_hw = (*leader_hw).max(hw);
        }
        self.update_hw(fi);
    }

    fn check(&self) {
        let mut leaders: BTreeMap<i32, NodeId> = BTreeMap::new();
        for n in &self.nodes {
            if let Role::Leader(l) = &n.role
                && let Some(other) = leaders.insert(l.epoch, n.id)
            {
                panic!("epoch {} led by n{other} and n{}", l.epoch, n.id);
            }
        }
        let pi = self.image().partition(TOPIC, 0).unwrap();
        for &member in &pi.isr {
            let n = &self.nodes[(member - 1) as usize];
            for (&o, &v) in &self.acked {
                let got = n.log[..n.durable].get(o as usize).map(|r| r.value);
                assert_eq!(
                    got,
                    Some(v),
                    "acknowledged offset {o} missing from ISR member n{member}'s durable log"
                );
            }
        }
        for n in &self.nodes {
            if let Role::Leader(l) = &n.role
                && l.epoch == pi.leader_epoch
            {
                for (&o, &v) in &self.visible {
                    let got = n.log.get(o as usize).map(|r| r.value);
                    assert_eq!(
                        got,
                        Some(v),
                        "visible offset {o} gone from leader n{}",
                        n.id
                    );
                }
            }
        }
    }

    /// Faults stop, everyone comes back, replication settles.
    fn settle(&mut self) {
        self.faults = false;
        self.isolated.clear();
        for i in 0..NODES as usize {
            self.restart(i);
        }
        for round in 0..6000 {
            // Writes stop halfway, so the followers can catch up.
            self.producing = round < 3000;
            self.tick();
            for i in 0..NODES as usize {
                self.deliver_image(i, true);
            }
        }
        let pi = self.image().partition(TOPIC, 0).unwrap().clone();
        assert_ne!(pi.leader, NO_LEADER, "no leader after settling");
        let leader = &self.nodes[(pi.leader - 1) as usize];
        for (&o, &v) in &self.acked {
            assert_eq!(
                leader.log.get(o as usize).map(|r| r.value),
                Some(v),
                "acked {o} lost"
            );
        }
        let img = self.image();
        let state: Vec<String> = (self.nodes.iter())
            .map(|n| {
                let role = match &n.role {
                    Role::Down => "down".to_string(),
                    Role::Leader(l) => format!("leader e{} isr {:?}", l.epoch, l.isr),
                    Role::Follower { leader_hw } => format!("follower hw {leader_hw}"),
                };
                format!(
                    "n{}: {role}, epoch {}, log {}, durable {}, fetch in flight {}, fenced {:?}, epochs {:?}",
                    n.id,
                    n.leader_epoch,
                    n.log.len(),
                    n.durable,
                    n.fetching,
                    img.brokers.get(&n.id).map(|b| b.fenced),
                    n.epochs
                )
            })
            .collect();
        let state = format!("{pi:?}; {state:?}; {} messages in flight", self.net.len());
        for n in &self.nodes {
            let first_diff = (n.log.iter().zip(&leader.log)).position(|(a, b)| a != b);
            assert!(
                n.log.len() == leader.log.len() && first_diff.is_none(),
                "n{}'s log ({} records, first difference at {first_diff:?}) differs from leader n{}'s ({}): {state}",
                n.id,
                n.log.len(),
                leader.id,
                leader.log.len()
            );
        }
    }
}

fn register(node: NodeId, incarnation: u64) -> MetaRecord {
    MetaRecord::RegisterBroker {
        node,
        host: "127.0.0.1".into(),
        port: 9000 + node,
        rack: None,
        incarnation,
        endpoints: Vec::new(),
    }
}

fn run(seed: u64, steps: usize) -> (usize, usize, usize) {
    let mut w = World::new(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..steps {
            w.tick();
        }
        w.settle();
        (w.acked.len(), w.images.len(), w.offline_reports)
    }));
    match outcome {
        Ok(r) => r,
        Err(e) => {
            let trace: Vec<String> = w.trace.iter().cloned().collect();
            eprintln!(
                "seed {} failed at step {}; last events:\n{}",
                w.seed,
                w.step,
                trace.join("\n")
            );
            std::panic::resume_unwind(e)
        }
    }
}

#[test]
fn replication_survives_seeded_faults() {
    let steps = env("SIM_STEPS", 1500) as usize;
    if let Ok(one) = std::env::var("SIM_SEED") {
        let seed = one.parse().expect("SIM_SEED is a number");
        run(seed, steps);
        return;
    }
    let seeds = env("SIM_SEEDS", 2000);
    let (mut acked, mut changes, mut offline) = (0, 0, 0);
    for seed in 0..seeds {
        let (a, c, o) = run(seed, steps);
        acked += a;
        changes += c;
        offline += o;
    }
    // The runs must have done something: acknowledged writes and metadata
    // changes (fencing, elections, ISR changes) in every seed on average.
    assert!(
        acked as u64 > seeds * 10,
        "only {acked} records acknowledged over {seeds} seeds"
    );
    assert!(
        changes as u64 > seeds * 5,
        "only {changes} metadata changes over {seeds} seeds"
    );
    assert!(
        offline as u64 >= seeds / 2,
        "only {offline} disk failures reported over {seeds} seeds"
    );
    eprintln!(
        "{seeds} seeds: {acked} records acknowledged, {changes} metadata changes, {offline} copies reported offline"
    );
}
