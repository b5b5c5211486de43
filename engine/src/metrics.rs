//! What the engine counts for the metrics endpoint: per-shard counters and
//! latency histograms kept in a thread-local (each shard is one thread, so
//! nothing is shared or locked on the data path), and `Shard::metrics`, a
//! snapshot of every shard's counters and partitions gathered over the rings
//! when the endpoint is scraped. Rendering them (Prometheus' text format) is
//! the network layer's job.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::shard::Shard;
use crate::types::TopicPartition;

/// Upper bounds of the latency buckets, in seconds (100 µs to 10 s).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with `LATENCY_BUCKETS` (non-cumulative counts; the
/// last slot counts what is above the largest bound).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|&b| b < s);
        self.counts[i] += 1;
        self.sum_seconds += s;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
    }

    /// (upper bound, cumulative count) pairs, `+Inf` last, as Prometheus
    /// reads a histogram.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c;
            out.push((
                LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                total,
            ));
        }
        out
    }
}

/// One shard's engine counters since it started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardCounters {
    /// Each flush that synced: the write and fdatasync of a partition's batches.
    pub flush_seconds: Histogram,
    /// How late the shard's event loop came back to a timer (the stall detector).
    pub loop_delay_seconds: Histogram,
    /// ISR changes of partitions led here, as the leader learned them.
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    /// Log cleaner passes, the segment bytes they read and wrote, and the
    /// records they removed.
    pub cleaner_passes: u64,
    pub cleaner_bytes_read: u64,
    pub cleaner_bytes_written: u64,
    pub cleaner_records_removed: u64,
}

thread_local! {
    static COUNTERS: RefCell<ShardCounters> = RefCell::default();
}

/// Counts something on this shard's thread.
pub fn count(f: impl FnOnce(&mut ShardCounters)) {
    COUNTERS.with_borrow_mut(f);
}

/// One partition replica on this broker.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionGauges {
    pub tp: TopicPartition,
    pub log_start: u64,
    pub log_end: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub leader: bool,
    /// Led here with fewer in-sync replicas than replicas.
    pub under_replicated: bool,
    /// Led here with fewer in-sync replicas than `min.insync.replicas`.
    pub under_min_isr: bool,
}

/// Everything the engine reports at one scrape.
#[derive(Clone, Debug, Default)]
pub struct EngineMetrics {
    pub shards: Vec<ShardCounters>,
    pub partitions: Vec<PartitionGauges>,
    /// Partitions of this broker taken offline (a failed disk, a poisoned log).
    pub offline_partitions: usize,
    /// Committed offsets of the groups this broker coordinates: (group,
    /// partition, offset).
    pub committed: Vec<(String, TopicPartition, u64)>,
}

impl Shard {
    /// A snapshot of every shard's counters, partitions and coordinated
    /// groups' offsets, gathered over the rings (for a metrics scrape).
    pub async fn metrics(self: &Rc<Self>) -> EngineMetrics {
        let per_shard = self
            .invoke_on_all(|s| async move {
                let counters = COUNTERS.with_borrow(|c| c.clone());
                let partitions: Vec<PartitionGauges> = (s.partitions.borrow().iter())
                    .map(|(tp, lp)| {
                        let p = lp.cell.state.borrow();
                        let (leader, under, under_min) = match p.leader_state() {
                            Some(l) => (
                                true,
                                l.isr.len() < l.replicas.len(),
                                (l.isr.len() as u32) < p.config.min_insync_replicas,
                            ),
                            None => (!p.is_follower(), false, false),
                        };
                        PartitionGauges {
                            tp: tp.clone(),
                            log_start: p.log_start.0,
                            log_end: p.log_end.0,
                            high_watermark: p.high_watermark.0,
                            size_bytes: p.size_bytes(),
                            leader,
                            under_replicated: under,
                            under_min_isr: under_min,
                        }
                    })
                    .collect();
                let committed: Vec<(String, TopicPartition, u64)> = (s.groups.borrow().values())
                    .flat_map(|g| {
                        (g.offsets.iter())
                            .filter_map(|(tp, c)| Some((g.id.clone(), tp.clone(), c.offset?.0)))
                    })
                    .collect();
                (counters, partitions, committed)
            })
            .await;
        let mut out = EngineMetrics {
            offline_partitions: self.shared.offline_count(),
            ..EngineMetrics::default()
        };
        for (counters, partitions, committed) in per_shard.into_iter().flatten() {
            out.shards.push(counters);
            out.partitions.extend(partitions);
            out.committed.extend(committed);
        }
        out.partitions.sort_by(|a, b| a.tp.cmp(&b.tp));
        out.committed.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_last() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let c = h.cumulative();
        assert_eq!(c[0], (0.0001, 2), "≤ 100 µs holds 50 µs and 100 µs");
        assert_eq!(c[5], (0.005, 3));
        assert_eq!(*c.last().unwrap(), (f64::INFINITY, 4));
        assert_eq!(h.count(), 4);
        let mut m = h.clone();
        m.merge(&h);
        assert_eq!(m.count(), 8);
        assert!((m.sum_seconds - 2.0 * h.sum_seconds).abs() < 1e-9);
    }
}
