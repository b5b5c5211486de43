//! A replicated partition's bookkeeping, as pure state: the leader-epoch cache
//! and the leader's view of its followers (their log ends, the high watermark
//! they allow, who belongs in the ISR). No clock or socket is read here: the
//! caller passes `now`, so the same code runs under the engine and a simulator.
//!
//! Durability: a follower asks for offset `o` only once everything below `o`
//! is fsynced on its disk (it fetches again after its flush), so a follower's
//! fetch offset is its durable log end, and the high watermark — the minimum
//! over the ISR — counts only batches every ISR member has fsynced. That is
//! Brook's acks=all promise (stronger than Kafka's page-cache default).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::types::Offset;

/// A broker's node id.
pub type NodeId = i32;

/// Kafka's leader-epoch cache: the first offset written in each leader epoch,
/// ascending. It answers "where does epoch e end?" for a follower that must
/// find where its log diverges from the leader's (OffsetsForLeaderEpoch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(i32, Offset)>,
}

impl EpochCache {
    /// Records that epoch `epoch` starts at `start` (a no-op for a known or
    /// older epoch). Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start: Offset) -> bool {
        if epoch < 0 || self.latest().is_some_and(|e| e >= epoch) {
            return false;
        }
        self.entries.push((epoch, start));
        true
    }

    pub fn latest(&self) -> Option<i32> {
        self.entries.last().map(|(e, _)| *e)
    }

    /// The largest known epoch ≤ `epoch` and the offset where it ends (the
    /// next epoch's start, or `log_end` for the latest): Kafka's
    /// `endOffsetFor`. `None` when `epoch` precedes every known epoch.
    pub fn end_offset_for(&self, epoch: i32, log_end: Offset) -> Option<(i32, Offset)> {
        let i = self.entries.partition_point(|(e, _)| *e <= epoch);
        if i == 0 {
            return None;
        }
        let found = self.entries[i - 1].0;
        let end = self.entries.get(i).map_or(log_end, |(_, start)| *start);
        Some((found, end))
    }

    /// The epoch the record at `offset` was written in (-1: before any
    /// known epoch), as ListOffsets reports it.
    pub fn epoch_at(&self, offset: Offset) -> i32 {
        let i = self.entries.partition_point(|(_, start)| *start <= offset);
        i.checked_sub(1).map_or(-1, |i| self.entries[i].0)
    }

    /// OffsetsForLeaderEpoch's answer for `requested` (Kafka's
    /// `LeaderEpochFileCache.endOffsetFor`, exactly): the latest epoch ends at
    /// `log_end`; an older one at the start of the next epoch, reported with
    /// the largest known epoch ≤ it, or with itself when it precedes them
    /// all; an undefined or unknown newer epoch is (-1, -1).
    pub fn offsets_for_leader_epoch(&self, requested: i32, log_end: Offset) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (-1, -1);
        if requested < 0 {
            return UNDEFINED;
        }
        if self.latest() == Some(requested) {
            return (requested, log_end.0 as i64);
        }
        let i = self.entries.partition_point(|(e, _)| *e <= requested);
        match (self.entries.get(i), i.checked_sub(1)) {
            (None, _) => UNDEFINED,
            (Some((_, next_start)), None) => (requested, next_start.0 as i64),
            (Some((_, next_start)), Some(floor)) => (self.entries[floor].0, next_start.0 as i64),
        }
    }

    /// The log was truncated to `end`: epochs that start at or after it go.
    pub fn truncate_to(&mut self, end: Offset) {
        self.entries.retain(|(_, start)| *start < end);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for (e, o) in &self.entries {
            out.push_str(&format!("{e} {}\n", o.0));
        }
        out.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<EpochCache> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut c = EpochCache::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (e, o) = line.split_once(' ')?;
            if !c.assign(e.parse().ok()?, Offset(o.parse().ok()?)) {
                return None;
            }
        }
        Some(c)
    }

    pub fn path(dir: &Path) -> std::path::PathBuf {
        dir.join("leader-epoch-checkpoint")
    }

    /// The cache stored in `dir`, or an empty one (a missing or damaged file
    /// only makes a later divergence check truncate further back than needed).
    pub fn load(dir: &Path) -> EpochCache {
        std::fs::read(Self::path(dir))
            .ok()
            .and_then(|b| Self::decode(&b))
            .unwrap_or_default()
    }
}

/// Where a follower's log departs from the leader's: the follower's log ends
/// at `offset` and its last batch is in epoch `last_epoch`; the leader's log
/// is `[log_start, log_end)` with epochs `epochs`. `None` when it does not
/// (the follower may fetch from `offset`); otherwise the largest epoch both
/// know and where it ends here (capped at `offset`), Kafka's
/// `diverging_epoch`: the follower truncates to that offset.
pub fn divergence(
    epochs: &EpochCache,
    log_start: Offset,
    log_end: Offset,
    offset: Offset,
    last_epoch: i32,
) -> Option<(i32, Offset)> {
    if last_epoch < 0 {
        return None;
    }
    match epochs.end_offset_for(last_epoch, log_end) {
        Some((epoch, end)) if epoch == last_epoch && end >= offset => None,
        Some((epoch, end)) => Some((epoch, end.min(offset))),
        None => Some((-1, log_start)),
    }
}

/// Where a follower truncates when its leader answered `diverging` =
/// (epoch E, end offset O): O, or earlier if the follower's own epoch E (or
/// the largest it has below E) ended before O — Kafka's rule, without which a
/// follower whose batches carry an epoch the leader never had would keep
/// them. `epochs` and `log_end` are the follower's.
pub fn truncation_point(epochs: &EpochCache, log_end: Offset, diverging: (i32, Offset)) -> Offset {
    let (epoch, end) = diverging;
    if epoch < 0 {
        return end.min(log_end);
    }
    match epochs.end_offset_for(epoch, log_end) {
        Some((_, own_end)) => end.min(own_end),
        None => Offset(0),
    }
}

#[derive(Clone, Debug)]
struct Follower {
    /// Its fetch offset: everything below is fsynced on its disk.
    end: Offset,
    /// When it last had everything the leader had at its previous fetch.
    caught_up_at: Instant,
    /// The leader's log end at its previous fetch.
    leader_end_at_fetch: Offset,
    /// It has fetched from this leader (in this epoch) at least once.
    fetched: bool,
    /// The follower's start (its broker incarnation) its fetches came from:
    /// a fetch from an earlier one is stale — sent before a restart that may
    /// have cut its log — and is ignored (Kafka's replica broker epoch,
    /// KIP-903).
    incarnation: u64,
    /// The log start it last reported in a fetch (Fetch's
    /// `log_start_offset`): DeleteRecords waits for it.
    log_start: Offset,
}

/// The leader's side of one partition's replication.
#[derive(Clone, Debug)]
pub struct LeaderState {
    pub me: NodeId,
    pub epoch: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// The partition epoch of the ISR above (what an ISR change is made against).
    pub partition_epoch: i32,
    /// This log's end when the epoch began: a follower must reach it to join
    /// the ISR (Kafka's rule), whatever the high watermark says — after a
    /// restart the high watermark is relearned from zero.
    epoch_start: Offset,
    /// An ISR this leader asked the quorum for and has not seen committed.
    /// Until it is, the high watermark counts its members too (Kafka's
    /// "maximal ISR"): a follower being added must hold what is acknowledged,
    /// since the quorum may already list it when the answer goes out.
    pending_isr: Option<Vec<NodeId>>,
    followers: BTreeMap<NodeId, Follower>,
}

impl LeaderState {
    pub fn new(
        me: NodeId,
        epoch: i32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        epoch_start: Offset,
        now: Instant,
    ) -> Self {
        let followers = (replicas.iter())
            .filter(|&&n| n != me)
            .map(|&n| {
                let f = Follower {
                    end: Offset(0),
                    caught_up_at: now,
                    leader_end_at_fetch: Offset(0),
                    fetched: false,
                    incarnation: 0,
                    log_start: Offset(0),
                };
                (n, f)
            })
            .collect();
        LeaderState {
            me,
            epoch,
            replicas,
            isr,
            partition_epoch: 0,
            epoch_start,
            pending_isr: None,
            followers,
        }
    }

    /// The quorum changed the ISR (a shrink or expansion this leader asked
    /// for, or a fencing).
    /// The quorum's ISR at `partition_epoch`. A newer partition epoch
    /// settles any ISR this leader asked for: committed, or refused as made
    /// against an older epoch.
    pub fn set_isr(&mut self, isr: Vec<NodeId>, partition_epoch: i32) {
        if partition_epoch != self.partition_epoch {
            self.pending_isr = None;
        }
        self.isr = isr;
        self.partition_epoch = partition_epoch;
    }

    /// This leader asks the quorum for `isr`: until an image with a newer
    /// partition epoch settles it, the high watermark waits for the members
    /// of every ISR asked for since, as well as the committed one (a request
    /// refused as stale may still be one that committed).
    pub fn propose_isr(&mut self, isr: Vec<NodeId>) {
        let pending = self.pending_isr.get_or_insert_with(Vec::new);
        for n in isr {
            if !pending.contains(&n) {
                pending.push(n);
            }
        }
    }

    /// The request for a new ISR failed: only the committed one counts.
    pub fn abandon_isr(&mut self) {
        self.pending_isr = None;
    }

    /// A follower (started as `incarnation`) fetched from `fetch_offset`
    /// while the leader's log ended at `log_end`. Returns false, changing
    /// nothing, for a stale fetch from an earlier incarnation.
    pub fn on_fetch(
        &mut self,
        node: NodeId,
        incarnation: u64,
        fetch_offset: Offset,
        log_end: Offset,
        now: Instant,
    ) -> bool {
        let Some(f) = self.followers.get_mut(&node) else {
            return true;
        };
        if incarnation < f.incarnation {
            return false;
        }
        f.incarnation = incarnation;
        if fetch_offset >= log_end || fetch_offset >= f.leader_end_at_fetch {
            f.caught_up_at = now;
        }
        f.end = fetch_offset;
        f.leader_end_at_fetch = log_end;
        f.fetched = true;
        true
    }

    /// A follower of the current incarnation reported its log start.
    pub fn on_log_start(&mut self, node: NodeId, incarnation: u64, log_start: Offset) {
        if let Some(f) = self.followers.get_mut(&node)
            && incarnation >= f.incarnation
        {
            f.log_start = log_start;
        }
    }

    /// The least log start among the leader (`own`) and the other ISR
    /// members (Kafka's low watermark): DeleteRecords is done once it
    /// reaches the requested offset.
    pub fn low_watermark(&self, own: Offset) -> Offset {
        (self.isr.iter())
            .filter(|&&n| n != self.me)
            .filter_map(|n| self.followers.get(n).map(|f| f.log_start))
            .fold(own, Offset::min)
    }

    /// The high watermark the ISR allows: the least durable end among the
    /// leader (`durable_end`) and every other ISR member.
    pub fn high_watermark(&self, durable_end: Offset) -> Offset {
        (self.isr.iter())
            .chain(self.pending_isr.iter().flatten())
            .filter(|&&n| n != self.me)
            .filter_map(|n| self.followers.get(n).map(|f| f.end))
            .fold(durable_end, Offset::min)
    }

    /// The ISR this leader should ask the controller for, if it differs from
    /// the current one: members that have not caught up for `max_lag` leave
    /// (the leader always stays), replicas that have reached the high
    /// watermark `hw` join.
    pub fn wanted_isr(
        &self,
        now: Instant,
        max_lag: Duration,
        hw: Offset,
        live: impl Fn(NodeId) -> bool,
    ) -> Option<Vec<NodeId>> {
        let mut isr: Vec<NodeId> = Vec::new();
        for &n in &self.replicas {
            let keep = if n == self.me {
                true
            } else {
                let Some(f) = self.followers.get(&n) else {
                    continue;
                };
                if self.isr.contains(&n) {
                    now.duration_since(f.caught_up_at) <= max_lag
                } else {
                    live(n)
                        && f.fetched
                        && f.end >= hw
                        && f.end >= self.epoch_start
                        && now.duration_since(f.caught_up_at) <= max_lag
                }
            };
            if keep {
                isr.push(n);
            }
        }
        let mut current = self.isr.clone();
        current.sort_unstable();
        let mut wanted = isr.clone();
        wanted.sort_unstable();
        (wanted != current).then_some(isr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_cache_answers_end_offsets_and_round_trips() {
        let mut c = EpochCache::default();
        assert!(c.assign(0, Offset(0)));
        assert!(!c.assign(0, Offset(5)), "a known epoch keeps its start");
        assert!(c.assign(2, Offset(10)));
        assert!(c.assign(5, Offset(30)));
        assert_eq!(c.end_offset_for(0, Offset(40)), Some((0, Offset(10))));
        assert_eq!(c.end_offset_for(1, Offset(40)), Some((0, Offset(10))));
        assert_eq!(c.end_offset_for(2, Offset(40)), Some((2, Offset(30))));
        assert_eq!(c.end_offset_for(7, Offset(40)), Some((5, Offset(40))));
        assert_eq!(c.end_offset_for(-1, Offset(40)), None);
        // OffsetsForLeaderEpoch, as Kafka answers it.
        let api = |e| c.offsets_for_leader_epoch(e, Offset(40));
        assert_eq!(api(5), (5, 40), "the latest epoch ends at the log end");
        assert_eq!(api(2), (2, 30));
        assert_eq!(api(1), (0, 10), "an unknown epoch between: the floor");
        assert_eq!(api(7), (-1, -1), "newer than any known");
        assert_eq!(api(-1), (-1, -1));
        let mut late = EpochCache::default();
        late.assign(3, Offset(100));
        late.assign(4, Offset(120));
        assert_eq!(late.offsets_for_leader_epoch(1, Offset(130)), (1, 100));
        assert_eq!(late.epoch_at(Offset(99)), -1);
        assert_eq!(late.epoch_at(Offset(100)), 3);
        assert_eq!(late.epoch_at(Offset(125)), 4);
        assert_eq!(EpochCache::decode(&c.encode()), Some(c.clone()));
        c.truncate_to(Offset(30));
        assert_eq!(c.latest(), Some(2));
        assert_eq!(EpochCache::decode(b"3 9\n1 2\n"), None, "out of order");
    }

    #[test]
    fn a_follower_with_an_epoch_the_leader_never_had_truncates_before_it() {
        // Leader: epoch 0 from 0, epoch 3 from 50, epoch 5 from 80; log end 120.
        let mut leader = EpochCache::default();
        leader.assign(0, Offset(0));
        leader.assign(3, Offset(50));
        leader.assign(5, Offset(80));
        // Follower: epoch 3 from 50, then epoch 4 (a leader that lost) from
        // 70; log end 100.
        let mut follower = EpochCache::default();
        follower.assign(0, Offset(0));
        follower.assign(3, Offset(50));
        follower.assign(4, Offset(70));
        let d = divergence(&leader, Offset(0), Offset(120), Offset(100), 4);
        assert_eq!(d, Some((3, Offset(80))));
        let to = truncation_point(&follower, Offset(100), d.unwrap());
        assert_eq!(to, Offset(70), "epoch 4's batches must go");
        follower.truncate_to(to);
        // Its next fetch (epoch 3, from 70) agrees with the leader.
        assert_eq!(
            divergence(&leader, Offset(0), Offset(120), Offset(70), 3),
            None
        );
    }

    #[test]
    fn the_low_watermark_waits_for_every_isr_member() {
        let t0 = Instant::now();
        let mut l = LeaderState::new(1, 2, vec![1, 2, 3], vec![1, 2], Offset(0), t0);
        // Follower 2 has not reported yet; 3 is outside the ISR.
        assert_eq!(l.low_watermark(Offset(40)), Offset(0));
        l.on_fetch(2, 5, Offset(50), Offset(50), t0);
        l.on_log_start(2, 5, Offset(30));
        l.on_log_start(3, 1, Offset(0));
        assert_eq!(l.low_watermark(Offset(40)), Offset(30));
        l.on_log_start(2, 5, Offset(40));
        assert_eq!(l.low_watermark(Offset(40)), Offset(40));
        // A report from an earlier start of the follower is ignored.
        l.on_log_start(2, 4, Offset(0));
        assert_eq!(l.low_watermark(Offset(40)), Offset(40));
    }

    #[test]
    fn a_follower_joins_only_after_reaching_the_epoch_start() {
        let t0 = Instant::now();
        // A leader restarted: its high watermark is relearned from 0, its log
        // ends at 50. A follower that has not fetched, or holds less than 50,
        // must not join.
        let mut l = LeaderState::new(1, 2, vec![1, 2], vec![1], Offset(50), t0);
        let lag = Duration::from_secs(30);
        assert_eq!(l.wanted_isr(t0, lag, Offset(0), |_| true), None);
        l.on_fetch(2, 1, Offset(10), Offset(50), t0);
        assert_eq!(l.wanted_isr(t0, lag, Offset(0), |_| true), None);
        l.on_fetch(2, 1, Offset(50), Offset(50), t0);
        assert_eq!(l.wanted_isr(t0, lag, Offset(0), |_| true), Some(vec![1, 2]));
        // A fetch from before the follower restarted is ignored.
        l.on_fetch(2, 2, Offset(20), Offset(50), t0);
        assert!(!l.on_fetch(2, 1, Offset(50), Offset(50), t0));
        assert_eq!(l.high_watermark(Offset(50)), Offset(50).min(Offset(50)));
    }

    #[test]
    fn high_watermark_is_the_isr_minimum_and_laggards_leave() {
        let t0 = Instant::now();
        let mut l = LeaderState::new(1, 4, vec![1, 2, 3], vec![1, 2, 3], Offset(0), t0);
        assert_eq!(l.high_watermark(Offset(100)), Offset(0));
        l.on_fetch(2, 1, Offset(100), Offset(100), t0);
        l.on_fetch(3, 1, Offset(60), Offset(100), t0);
        assert_eq!(l.high_watermark(Offset(100)), Offset(60));
        assert_eq!(
            l.high_watermark(Offset(50)),
            Offset(50),
            "the leader's own fsync counts"
        );
        // Node 3 stops fetching: after the lag limit it leaves the ISR, and the
        // high watermark no longer waits for it.
        let later = t0 + Duration::from_secs(31);
        l.on_fetch(2, 1, Offset(100), Offset(100), later);
        let wanted = l.wanted_isr(later, Duration::from_secs(30), Offset(60), |_| true);
        assert_eq!(wanted, Some(vec![1, 2]));
        l.set_isr(vec![1, 2], 1);
        assert_eq!(l.high_watermark(Offset(100)), Offset(100));
        // While an expansion is with the quorum, the high watermark waits for
        // the member being added too.
        l.propose_isr(vec![1, 2, 3]);
        assert_eq!(l.high_watermark(Offset(100)), Offset(60));
        l.abandon_isr();
        assert_eq!(l.high_watermark(Offset(100)), Offset(100));
        // It comes back and catches up to the high watermark: it rejoins.
        l.on_fetch(3, 1, Offset(100), Offset(100), later);
        assert_eq!(
            l.wanted_isr(later, Duration::from_secs(30), Offset(100), |_| true),
            Some(vec![1, 2, 3])
        );
        l.set_isr(vec![1, 2, 3], 1);
        assert_eq!(
            l.wanted_isr(later, Duration::from_secs(30), Offset(100), |_| true),
            None
        );
        // A broker the controller fenced is not asked back in.
        l.set_isr(vec![1, 2], 1);
        assert_eq!(
            l.wanted_isr(later, Duration::from_secs(30), Offset(100), |n| n != 3),
            None
        );
    }
}
