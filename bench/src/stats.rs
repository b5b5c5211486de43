//! Counters and latency histograms shared by the producer and consumer tasks.
//!
//! Hot paths record into a task-local [`Histogram`] and merge it into [`Stats`]
//! about every 200 ms ([`LocalLatency::maybe_flush`]), so the shared mutexes are
//! taken a few times a second per task, never per record. Counters are atomics
//! updated once per batch.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency tracked: one hour in µs; larger values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds")
}

/// The run's time line. Wall-clock µs are derived from one monotonic origin, so
/// stamps written by producers and read by consumers in this process agree.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub start: Instant,
    wall_start_us: u64,
    pub warmup_end: Instant,
    pub end: Instant,
}

impl Clock {
    pub fn new(warmup: Duration, duration: Duration) -> Clock {
        let start = Instant::now();
        let wall_start_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Clock {
            start,
            wall_start_us,
            warmup_end: start + warmup,
            end: start + warmup + duration,
        }
    }

    /// Wall-clock µs since the Unix epoch at `t`.
    pub fn wall_us(&self, t: Instant) -> u64 {
        self.wall_start_us + t.saturating_duration_since(self.start).as_micros() as u64
    }

    pub fn warmup_end_us(&self) -> u64 {
        self.wall_us(self.warmup_end)
    }

    pub fn in_window(&self, t: Instant) -> bool {
        t >= self.warmup_end && t < self.end
    }
}

/// Which latency a histogram measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Send (intended send at a target rate) to acknowledgement.
    Publish,
    /// Actual send minus intended send (only at a target rate).
    PublishDelay,
    /// Send to consumer receive.
    EndToEnd,
}

struct TotalAndInterval {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

impl TotalAndInterval {
    fn new() -> Self {
        TotalAndInterval {
            total: new_histogram(),
            interval: new_histogram(),
        }
    }
}

#[derive(Default)]
pub struct Counter {
    pub records: AtomicU64,
    pub payload_bytes: AtomicU64,
    pub wire_bytes: AtomicU64,
}

impl Counter {
    pub fn add(&self, records: u64, payload_bytes: u64, wire_bytes: u64) {
        self.records.fetch_add(records, Relaxed);
        self.payload_bytes.fetch_add(payload_bytes, Relaxed);
        self.wire_bytes.fetch_add(wire_bytes, Relaxed);
    }
    pub fn records(&self) -> u64 {
        self.records.load(Relaxed)
    }
}

pub struct Stats {
    pub clock: Clock,
    /// Acknowledged (acks=0: written) records, whole run.
    pub produced: Counter,
    /// Acknowledged within the measurement window.
    pub produced_window: Counter,
    pub produce_requests: AtomicU64,
    /// Records given up on (non-retriable error, retries exhausted, lost connection).
    pub failed_records: AtomicU64,
    pub consumed: Counter,
    pub consumed_window: Counter,
    pub fetch_requests: AtomicU64,
    publish: Mutex<TotalAndInterval>,
    publish_delay: Mutex<TotalAndInterval>,
    end_to_end: Mutex<TotalAndInterval>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Set by Ctrl-C: producers stop sending, everyone winds down.
    pub stop: AtomicBool,
    stopped_at: Mutex<Option<Instant>>,
}

impl Stats {
    pub fn new(clock: Clock) -> Stats {
        Stats {
            clock,
            produced: Counter::default(),
            produced_window: Counter::default(),
            produce_requests: AtomicU64::new(0),
            failed_records: AtomicU64::new(0),
            consumed: Counter::default(),
            consumed_window: Counter::default(),
            fetch_requests: AtomicU64::new(0),
            publish: Mutex::new(TotalAndInterval::new()),
            publish_delay: Mutex::new(TotalAndInterval::new()),
            end_to_end: Mutex::new(TotalAndInterval::new()),
            errors: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            stopped_at: Mutex::new(None),
        }
    }

    fn slot(&self, which: Latency) -> &Mutex<TotalAndInterval> {
        match which {
            Latency::Publish => &self.publish,
            Latency::PublishDelay => &self.publish_delay,
            Latency::EndToEnd => &self.end_to_end,
        }
    }

    /// Adds a task's histogram to the run's (total and current interval) and
    /// empties it.
    pub fn merge(&self, which: Latency, local: &mut Histogram<u64>) {
        if local.is_empty() {
            return;
        }
        let mut slot = self.slot(which).lock().unwrap();
        slot.total.add(&*local).expect("same bounds");
        slot.interval.add(&*local).expect("same bounds");
        local.reset();
    }

    /// Takes the interval histogram (for the once-a-second line).
    pub fn take_interval(&self, which: Latency) -> Histogram<u64> {
        let mut slot = self.slot(which).lock().unwrap();
        let out = slot.interval.clone();
        slot.interval.reset();
        out
    }

    pub fn total(&self, which: Latency) -> Histogram<u64> {
        self.slot(which).lock().unwrap().total.clone()
    }

    /// Counts an error under `kind`, e.g. `produce:NotLeaderOrFollower`.
    pub fn error(&self, kind: impl Into<String>, n: u64) {
        *self.errors.lock().unwrap().entry(kind.into()).or_insert(0) += n;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap().clone()
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Relaxed);
        self.stopped_at
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// End of the measurement window: the configured end, or Ctrl-C if earlier.
    pub fn window_end(&self) -> Instant {
        match *self.stopped_at.lock().unwrap() {
            Some(t) => t.min(self.clock.end).max(self.clock.warmup_end),
            None => self.clock.end,
        }
    }
}

/// A task-local histogram flushed into [`Stats`] now and then.
pub struct LocalLatency {
    which: Latency,
    pub hist: Histogram<u64>,
    last_flush: Instant,
}

impl LocalLatency {
    pub fn new(which: Latency) -> Self {
        LocalLatency {
            which,
            hist: new_histogram(),
            last_flush: Instant::now(),
        }
    }

    pub fn record_n(&mut self, us: u64, n: u64) {
        self.hist.saturating_record_n(us.max(1), n);
    }

    pub fn maybe_flush(&mut self, stats: &Stats, now: Instant) {
        if now.duration_since(self.last_flush) >= Duration::from_millis(200) {
            self.flush(stats);
            self.last_flush = now;
        }
    }

    pub fn flush(&mut self, stats: &Stats) {
        stats.merge(self.which, &mut self.hist);
    }
}

/// Percentiles of a latency histogram, in milliseconds (µs resolution).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean: h.mean().round() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p75: ms(h.value_at_quantile(0.75)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            p9999: ms(h.value_at_quantile(0.9999)),
            max: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_task_histograms_adds_counts_and_keeps_extremes() {
        let stats = Stats::new(Clock::new(Duration::ZERO, Duration::from_secs(1)));
        let mut a = LocalLatency::new(Latency::Publish);
        let mut b = LocalLatency::new(Latency::Publish);
        a.record_n(1_000, 99);
        b.record_n(50_000, 1);
        a.flush(&stats);
        b.flush(&stats);
        assert!(a.hist.is_empty(), "flushing empties the local histogram");
        let total = stats.total(Latency::Publish);
        assert_eq!(total.len(), 100);
        let p = Percentiles::of(&total);
        assert!((p.p50 - 1.0).abs() < 0.01, "{p:?}");
        assert!((p.max - 50.0).abs() < 0.1, "{p:?}");
        assert_eq!(stats.take_interval(Latency::Publish).len(), 100);
        assert_eq!(
            stats.take_interval(Latency::Publish).len(),
            0,
            "interval resets"
        );
        assert_eq!(stats.total(Latency::Publish).len(), 100, "total does not");
        assert!(stats.total(Latency::EndToEnd).is_empty());
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut l = LocalLatency::new(Latency::EndToEnd);
        l.record_n(u64::MAX / 2, 1);
        assert_eq!(l.hist.len(), 1);
    }

    #[test]
    fn empty_histogram_gives_zeroes() {
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }
}
