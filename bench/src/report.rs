//! The live once-a-second line and the final report (JSON, text summary, plot).
//!
//! MB means MiB (2^20 bytes), as kafka-producer-perf-test reports it.
//! `mb_per_sec` counts record payload (keys and values); `wire_mb_per_sec`
//! counts record batches as sent or fetched (headers, framing, compression).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stats::{Latency, Percentiles, Stats};
use crate::workload::{Mode, Workload};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub config: Config,
    /// Seconds measured: warm-up end to the configured end (or Ctrl-C); in
    /// `consume` mode, first fetch to the end of the backlog.
    pub window_sec: f64,
    pub produce: Produce,
    pub publish: LatencySection,
    pub publish_delay: LatencySection,
    pub consume: Consume,
    pub end_to_end: LatencySection,
    pub errors: Errors,
    /// Acknowledged records never consumed (mode `both`; 0 when all arrived).
    pub unconsumed_records: Option<i64>,
    pub interrupted: bool,
    pub timeline: Vec<Tick>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub bootstrap: String,
    #[serde(flatten)]
    pub workload: Workload,
    pub api_versions: crate::conn::Versions,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Produce {
    /// Acknowledged within the window.
    pub records: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub wire_mb_per_sec: f64,
    /// Acknowledged over the whole run (warm-up and drain included).
    pub records_total: u64,
    pub payload_bytes_total: u64,
    pub requests: u64,
    pub failed_records: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Consume {
    pub records: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub wire_mb_per_sec: f64,
    pub records_total: u64,
    pub payload_bytes_total: u64,
    pub fetch_requests: u64,
    /// Seconds the rates are over: the window, or for `consume` mode the time
    /// from the first fetch to the end of the backlog.
    pub elapsed_sec: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySection {
    pub latency_ms: Percentiles,
    pub note: &'static str,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Errors {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
}

/// One second of the live report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tick {
    pub t_sec: f64,
    pub phase: &'static str,
    pub produce_records_per_sec: f64,
    pub produce_mb_per_sec: f64,
    pub consume_records_per_sec: f64,
    pub consume_mb_per_sec: f64,
    pub publish_p99_ms: f64,
    pub end_to_end_p99_ms: f64,
}

/// Prints a line a second to stderr until `done` flips; returns the ticks.
pub async fn live(stats: Arc<Stats>, done: tokio::sync::watch::Receiver<bool>) -> Vec<Tick> {
    let mut ticks = Vec::new();
    let mut iv = tokio::time::interval(Duration::from_secs(1));
    iv.tick().await;
    let (mut last_p, mut last_pb, mut last_c, mut last_cb) = (0, 0, 0, 0);
    let mut last_at = Instant::now();
    while !*done.borrow() {
        iv.tick().await;
        let now = Instant::now();
        let dt = now.duration_since(last_at).as_secs_f64().max(1e-3);
        last_at = now;
        let (p, pb) = (
            stats.produced.records(),
            stats.produced.payload_bytes.load(Relaxed),
        );
        let (c, cb) = (
            stats.consumed.records(),
            stats.consumed.payload_bytes.load(Relaxed),
        );
        let clock = stats.clock;
        let tick = Tick {
            t_sec: round3(now.duration_since(clock.start).as_secs_f64()),
            phase: if now < clock.warmup_end {
                "warmup"
            } else if now < stats.window_end() {
                "test"
            } else {
                "drain"
            },
            produce_records_per_sec: ((p - last_p) as f64 / dt).round(),
            produce_mb_per_sec: round3((pb - last_pb) as f64 / MIB / dt),
            consume_records_per_sec: ((c - last_c) as f64 / dt).round(),
            consume_mb_per_sec: round3((cb - last_cb) as f64 / MIB / dt),
            publish_p99_ms: Percentiles::of(&stats.take_interval(Latency::Publish)).p99,
            end_to_end_p99_ms: Percentiles::of(&stats.take_interval(Latency::EndToEnd)).p99,
        };
        (last_p, last_pb, last_c, last_cb) = (p, pb, c, cb);
        let errors: u64 = stats.errors().values().sum();
        eprintln!(
            "[{:>5.0}s {:<6}] produce {:>10.0} msg/s {:>8.1} MB/s | consume {:>10.0} msg/s {:>8.1} MB/s | publish p99 {:>8.3} ms | e2e p99 {:>8.3} ms | errors {errors}",
            tick.t_sec,
            tick.phase,
            tick.produce_records_per_sec,
            tick.produce_mb_per_sec,
            tick.consume_records_per_sec,
            tick.consume_mb_per_sec,
            tick.publish_p99_ms,
            tick.end_to_end_p99_ms,
        );
        ticks.push(tick);
    }
    ticks
}

/// Facts about the run the stats do not hold.
pub struct RunFacts {
    pub bootstrap: String,
    pub versions: crate::conn::Versions,
    pub interrupted: bool,
    /// Consume-only: seconds from first fetch to the end of the backlog.
    pub consume_elapsed_sec: Option<f64>,
    pub timeline: Vec<Tick>,
}

pub fn build(w: &Workload, stats: &Stats, facts: RunFacts) -> Report {
    let clock = stats.clock;
    let window_sec = stats
        .window_end()
        .duration_since(clock.warmup_end)
        .as_secs_f64()
        .max(1e-3);
    let per_sec = |n: u64, secs: f64| (n as f64 / secs).round();
    let mb = |n: u64, secs: f64| round3(n as f64 / MIB / secs);
    let pw = &stats.produced_window;
    let produce = Produce {
        records: pw.records(),
        records_per_sec: per_sec(pw.records(), window_sec),
        mb_per_sec: mb(pw.payload_bytes.load(Relaxed), window_sec),
        wire_mb_per_sec: mb(pw.wire_bytes.load(Relaxed), window_sec),
        records_total: stats.produced.records(),
        payload_bytes_total: stats.produced.payload_bytes.load(Relaxed),
        requests: stats.produce_requests.load(Relaxed),
        failed_records: stats.failed_records.load(Relaxed),
    };
    let (cw, csecs) = match facts.consume_elapsed_sec {
        Some(s) => (&stats.consumed, s.max(1e-3)),
        None => (&stats.consumed_window, window_sec),
    };
    let consume = Consume {
        records: cw.records(),
        records_per_sec: per_sec(cw.records(), csecs),
        mb_per_sec: mb(cw.payload_bytes.load(Relaxed), csecs),
        wire_mb_per_sec: mb(cw.wire_bytes.load(Relaxed), csecs),
        records_total: stats.consumed.records(),
        payload_bytes_total: stats.consumed.payload_bytes.load(Relaxed),
        fetch_requests: stats.fetch_requests.load(Relaxed),
        elapsed_sec: round3(csecs),
    };
    let corrected = w.rate > 0;
    let by_kind = stats.errors();
    Report {
        tool: "brook-bench",
        version: env!("CARGO_PKG_VERSION"),
        config: Config {
            bootstrap: facts.bootstrap,
            workload: w.clone(),
            api_versions: facts.versions,
        },
        window_sec: round3(facts.consume_elapsed_sec.unwrap_or(window_sec)),
        publish: LatencySection {
            latency_ms: Percentiles::of(&stats.total(Latency::Publish)),
            note: if w.acks == crate::workload::Acks::None {
                "acks=0: no acknowledgements, publish latency not measured"
            } else if corrected {
                "intended send (at the target rate) to ack: coordinated omission corrected"
            } else {
                "send (append to batch) to ack, closed loop"
            },
        },
        publish_delay: LatencySection {
            latency_ms: Percentiles::of(&stats.total(Latency::PublishDelay)),
            note: if corrected {
                "actual send minus intended send"
            } else {
                "only measured at a target rate"
            },
        },
        end_to_end: LatencySection {
            latency_ms: Percentiles::of(&stats.total(Latency::EndToEnd)),
            note: if w.mode == Mode::Both {
                "send stamp in the first 8 value bytes to consumer receive"
            } else {
                "only measured in mode both"
            },
        },
        unconsumed_records: (w.mode == Mode::Both)
            .then(|| stats.produced.records() as i64 - stats.consumed.records() as i64),
        produce,
        consume,
        errors: Errors {
            total: by_kind.values().sum(),
            by_kind,
        },
        interrupted: facts.interrupted,
        timeline: facts.timeline,
    }
}

impl Report {
    /// The human summary printed at the end.
    pub fn summary(&self) -> String {
        let lat = |name: &str, p: &Percentiles| {
            format!(
                "{name:<12} p50 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3} ms  ({} samples)\n",
                p.p50, p.p99, p.p999, p.p9999, p.max, p.count
            )
        };
        let mut s = format!(
            "\n== brook-bench: {:?}, {} s measured ==\n",
            self.config.workload.mode, self.window_sec
        );
        s += &format!(
            "produce      {:.0} msg/s  {:.1} MB/s  ({} acked in total, {} failed)\n",
            self.produce.records_per_sec,
            self.produce.mb_per_sec,
            self.produce.records_total,
            self.produce.failed_records
        );
        s += &format!(
            "consume      {:.0} msg/s  {:.1} MB/s  ({} in total)\n",
            self.consume.records_per_sec, self.consume.mb_per_sec, self.consume.records_total
        );
        s += &lat("publish", &self.publish.latency_ms);
        if self.config.workload.rate > 0 {
            s += &lat("pub. delay", &self.publish_delay.latency_ms);
        }
        s += &lat("end-to-end", &self.end_to_end.latency_ms);
        s += &format!(
            "errors       {} {:?}\n",
            self.errors.total, self.errors.by_kind
        );
        if let Some(n) = self.unconsumed_records {
            s += &format!("unconsumed   {n}\n");
        }
        s
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Clock, LocalLatency};

    fn sample() -> serde_json::Value {
        let stats = Stats::new(Clock::new(Duration::ZERO, Duration::from_secs(1)));
        let mut e2e = LocalLatency::new(Latency::EndToEnd);
        e2e.record_n(2_500, 10);
        e2e.flush(&stats);
        stats.produced.add(10, 1000, 1200);
        stats.consumed.add(10, 1000, 1200);
        stats.error("produce:NotLeaderOrFollower", 2);
        let facts = RunFacts {
            bootstrap: "127.0.0.1:9092".into(),
            versions: Default::default(),
            interrupted: false,
            consume_elapsed_sec: None,
            timeline: vec![Tick::default()],
        };
        serde_json::to_value(build(&Workload::default(), &stats, facts)).unwrap()
    }

    #[test]
    fn json_has_the_documented_paths() {
        let v = sample();
        for path in [
            "/produce/records_per_sec",
            "/produce/mb_per_sec",
            "/produce/records_total",
            "/publish/latency_ms/p50",
            "/publish/latency_ms/p99",
            "/publish/latency_ms/p999",
            "/publish/latency_ms/p9999",
            "/publish/latency_ms/max",
            "/publish_delay/latency_ms/p99",
            "/consume/records_per_sec",
            "/consume/mb_per_sec",
            "/end_to_end/latency_ms/p50",
            "/end_to_end/latency_ms/p99",
            "/end_to_end/latency_ms/p9999",
            "/errors/total",
            "/config/bootstrap",
            "/config/partitions",
            "/config/acks",
            "/timeline/0/produce_records_per_sec",
        ] {
            assert!(v.pointer(path).is_some(), "missing {path} in {v:#}");
        }
        assert!(v.pointer("/produce/records_per_sec").unwrap().is_number());
        let p99 = v
            .pointer("/end_to_end/latency_ms/p99")
            .unwrap()
            .as_f64()
            .unwrap();
        assert!((p99 - 2.5).abs() < 0.01, "{p99}");
        assert_eq!(v.pointer("/errors/total").unwrap().as_u64(), Some(2));
        assert_eq!(v.pointer("/unconsumed_records").unwrap().as_i64(), Some(0));
        assert_eq!(v.pointer("/config/duration").unwrap().as_str(), Some("60s"));
    }

    #[test]
    fn summary_mentions_the_figures() {
        let stats = Stats::new(Clock::new(Duration::ZERO, Duration::from_secs(1)));
        let facts = RunFacts {
            bootstrap: "x".into(),
            versions: Default::default(),
            interrupted: false,
            consume_elapsed_sec: None,
            timeline: vec![],
        };
        let s = build(&Workload::default(), &stats, facts).summary();
        assert!(s.contains("end-to-end") && s.contains("msg/s"), "{s}");
    }
}
