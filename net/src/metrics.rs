//! Prometheus metrics on their own HTTP listener (`--metrics-listen`, off
//! unless set), served by shard 0.
//!
//! Each shard counts its requests (per API: count, bytes in and out, latency
//! from the frame read to the response encoded), connections and throttled
//! responses in a thread-local, and the engine counts its own
//! (`brook_engine::metrics`). A scrape gathers every shard's counters and
//! partitions over the rings, then renders Prometheus' text format (0.0.4):
//! names prefixed `brook_`, counters ending in `_total`, times in seconds,
//! sizes in bytes. Consumer-group lag is reported for the groups this broker
//! coordinates and the partitions it leads (the high watermark is known only
//! where the partition is led); every committed offset is exported too, so
//! that Prometheus joins it with the leaders' high watermarks for the lag of
//! the whole cluster (the dashboard's lag panel does).
//!
//! The HTTP side is minimal on purpose: `GET /metrics` (or `/`), one
//! response, `Connection: close`; a request head larger than 8 KiB or slower
//! than 5 s is dropped.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use brook_engine::metrics::{EngineMetrics, Histogram, ShardCounters};
use brook_engine::shard::Shard;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use kafka_protocol::messages::ApiKey;

/// One API's request counters on one shard.
#[derive(Clone, Debug, Default)]
pub struct ApiCounters {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency: Histogram,
}

/// One shard's network counters since it started.
#[derive(Clone, Debug, Default)]
pub struct NetCounters {
    pub apis: BTreeMap<i16, ApiCounters>,
    /// Connections closed because a request could not be answered
    /// (malformed, unknown or unsupported API or version).
    pub bad_requests: u64,
    pub failed_authentications: u64,
    pub connections_accepted: u64,
    pub connections_open: u64,
    /// Responses that carried a quota throttle time, by direction.
    pub throttled: BTreeMap<&'static str, u64>,
}

thread_local! {
    static NET: RefCell<NetCounters> = RefCell::default();
}

pub(crate) fn record_request(key: ApiKey, bytes_in: usize, bytes_out: usize, took: Duration) {
    NET.with_borrow_mut(|n| {
        let a = n.apis.entry(key as i16).or_default();
        a.requests += 1;
        a.bytes_in += bytes_in as u64;
        a.bytes_out += bytes_out as u64;
        a.latency.observe(took);
    });
}

pub(crate) fn record_bad_request() {
    NET.with_borrow_mut(|n| n.bad_requests += 1);
}

pub(crate) fn record_failed_authentication() {
    NET.with_borrow_mut(|n| n.failed_authentications += 1);
}

pub(crate) fn record_connection(opened: bool) {
    NET.with_borrow_mut(|n| match opened {
        true => {
            n.connections_accepted += 1;
            n.connections_open += 1;
        }
        false => n.connections_open = n.connections_open.saturating_sub(1),
    });
}

pub(crate) fn record_throttle(direction: &'static str) {
    NET.with_borrow_mut(|n| *n.throttled.entry(direction).or_default() += 1);
}

/// Starts the metrics listener on this (shard 0's) runtime.
pub fn start(shard: Rc<Shard>, listen: SocketAddr) -> std::io::Result<()> {
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    let listener = compio::net::TcpListener::from_std(std_listener)?;
    tracing::info!(%listen, "metrics listener");
    compio::runtime::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let shard = shard.clone();
                    compio::runtime::spawn(async move {
                        let _ =
                            compio::time::timeout(Duration::from_secs(30), serve(shard, stream))
                                .await;
                    })
                    .detach();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    compio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .detach();
    Ok(())
}

const MAX_HEAD: usize = 8 << 10;

async fn serve(shard: Rc<Shard>, mut stream: compio::net::TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let buf = Vec::with_capacity(1024);
            let compio::BufResult(res, buf) = stream.read(buf).await;
            match res {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return false,
            }
        }
        true
    };
    if !matches!(
        compio::time::timeout(Duration::from_secs(5), read).await,
        Ok(true)
    ) {
        return;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let wanted = line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ");
    let (status, body) = match wanted {
        true => ("200 OK", gather(&shard).await),
        false => ("404 Not Found", "only GET /metrics is served\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.into_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Every shard's counters and the engine's snapshot, rendered.
async fn gather(shard: &Rc<Shard>) -> String {
    let net: Vec<NetCounters> = shard
        .invoke_on_all(|_| async { NET.with_borrow(|n| n.clone()) })
        .await
        .into_iter()
        .flatten()
        .collect();
    let engine = shard.metrics().await;
    render(&net, &engine)
}

/// A label value escaped as the text format wants it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        match labels.is_empty() {
            true => {
                let _ = writeln!(self.0, "{name} {value}");
            }
            false => {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
    }

    fn histogram(&mut self, name: &str, labels: &str, h: &Histogram) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (le, n) in h.cumulative() {
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            let _ = writeln!(self.0, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
        }
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| key.to_string(), |k| format!("{k:?}"))
}

/// One partition gauge's value.
type PartitionValue = fn(&brook_engine::metrics::PartitionGauges) -> u64;

/// Prometheus' text format for one scrape.
pub fn render(net: &[NetCounters], engine: &EngineMetrics) -> String {
    let mut o = Out(String::with_capacity(16 << 10));
    let mut apis: BTreeMap<i16, ApiCounters> = BTreeMap::new();
    for n in net {
        for (k, a) in &n.apis {
            let t = apis.entry(*k).or_default();
            t.requests += a.requests;
            t.bytes_in += a.bytes_in;
            t.bytes_out += a.bytes_out;
            t.latency.merge(&a.latency);
        }
    }
    let per_api = |o: &mut Out, name: &str, help: &str, f: &dyn Fn(&ApiCounters) -> u64| {
        o.family(name, "counter", help);
        for (k, a) in &apis {
            o.sample(name, &format!("api=\"{}\"", api_name(*k)), f(a));
        }
    };
    per_api(
        &mut o,
        "brook_requests_total",
        "Requests answered (or run, for acks=0 Produce), by API.",
        &|a| a.requests,
    );
    per_api(
        &mut o,
        "brook_request_bytes_total",
        "Request frame bytes received, by API.",
        &|a| a.bytes_in,
    );
    per_api(
        &mut o,
        "brook_response_bytes_total",
        "Response frame bytes sent, by API.",
        &|a| a.bytes_out,
    );
    o.family(
        "brook_request_duration_seconds",
        "histogram",
        "Time from a request frame read to its response encoded, by API.",
    );
    for (k, a) in &apis {
        o.histogram(
            "brook_request_duration_seconds",
            &format!("api=\"{}\"", api_name(*k)),
            &a.latency,
        );
    }
    let sum = |f: &dyn Fn(&NetCounters) -> u64| net.iter().map(f).sum::<u64>();
    o.family("brook_bad_requests_total", "counter", "Connections closed for a request that could not be answered (malformed, unknown or unsupported API or version).");
    o.sample("brook_bad_requests_total", "", sum(&|n| n.bad_requests));
    o.family("brook_failed_authentications_total", "counter", "SASL authentications that failed (wrong password, unknown user, malformed exchange), each answered and closed.");
    o.sample(
        "brook_failed_authentications_total",
        "",
        sum(&|n| n.failed_authentications),
    );
    o.family(
        "brook_connections_accepted_total",
        "counter",
        "Client connections accepted.",
    );
    o.sample(
        "brook_connections_accepted_total",
        "",
        sum(&|n| n.connections_accepted),
    );
    o.family("brook_connections", "gauge", "Client connections open.");
    o.sample("brook_connections", "", sum(&|n| n.connections_open));
    o.family(
        "brook_quota_throttled_responses_total",
        "counter",
        "Responses that carried a quota throttle time, by direction.",
    );
    for dir in ["produce", "fetch"] {
        let n = sum(&|n| n.throttled.get(dir).copied().unwrap_or(0));
        o.sample(
            "brook_quota_throttled_responses_total",
            &format!("direction=\"{dir}\""),
            n,
        );
    }

    let mut flush = Histogram::default();
    let mut delay = Histogram::default();
    for s in &engine.shards {
        flush.merge(&s.flush_seconds);
        delay.merge(&s.loop_delay_seconds);
    }
    o.family(
        "brook_log_flush_duration_seconds",
        "histogram",
        "Each partition flush that synced: the O_DIRECT writes and the fdatasync.",
    );
    o.histogram("brook_log_flush_duration_seconds", "", &flush);
    o.family(
        "brook_shard_loop_delay_seconds",
        "histogram",
        "How late each shard's event loop returned to a 1 ms timer (stalls).",
    );
    o.histogram("brook_shard_loop_delay_seconds", "", &delay);
    o.family("brook_isr_shrinks_total", "counter", "ISR shrinks of partitions led by this broker (by the leader or by the controller fencing a broker).");
    o.sample(
        "brook_isr_shrinks_total",
        "",
        engine.shards.iter().map(|s| s.isr_shrinks).sum::<u64>(),
    );
    o.family(
        "brook_isr_expands_total",
        "counter",
        "ISR expansions of partitions led by this broker.",
    );
    o.sample(
        "brook_isr_expands_total",
        "",
        engine.shards.iter().map(|s| s.isr_expands).sum::<u64>(),
    );

    type Counter = fn(&ShardCounters) -> u64;
    let cleaner: [(&str, &str, Counter); 4] = [
        (
            "brook_log_cleaner_passes_total",
            "Log cleaner passes that compacted a partition.",
            |s| s.cleaner_passes,
        ),
        (
            "brook_log_cleaner_read_bytes_total",
            "Segment bytes the log cleaner read.",
            |s| s.cleaner_bytes_read,
        ),
        (
            "brook_log_cleaner_written_bytes_total",
            "Segment bytes the log cleaner wrote.",
            |s| s.cleaner_bytes_written,
        ),
        (
            "brook_log_cleaner_removed_records_total",
            "Records the log cleaner removed (superseded, expired tombstones, aborted).",
            |s| s.cleaner_records_removed,
        ),
    ];
    for (name, help, get) in cleaner {
        o.family(name, "counter", help);
        o.sample(name, "", engine.shards.iter().map(get).sum::<u64>());
    }

    let parts = &engine.partitions;
    o.family(
        "brook_partitions",
        "gauge",
        "Partition replicas open on this broker.",
    );
    o.sample("brook_partitions", "", parts.len());
    o.family(
        "brook_leader_partitions",
        "gauge",
        "Partitions this broker leads (or holds alone).",
    );
    o.sample(
        "brook_leader_partitions",
        "",
        parts.iter().filter(|p| p.leader).count(),
    );
    o.family(
        "brook_under_replicated_partitions",
        "gauge",
        "Partitions led here whose ISR is smaller than their replica set.",
    );
    o.sample(
        "brook_under_replicated_partitions",
        "",
        parts.iter().filter(|p| p.under_replicated).count(),
    );
    o.family(
        "brook_under_min_isr_partitions",
        "gauge",
        "Partitions led here whose ISR is smaller than min.insync.replicas.",
    );
    o.sample(
        "brook_under_min_isr_partitions",
        "",
        parts.iter().filter(|p| p.under_min_isr).count(),
    );
    o.family(
        "brook_offline_partitions",
        "gauge",
        "Partitions of this broker taken offline (a failed disk or write).",
    );
    o.sample("brook_offline_partitions", "", engine.offline_partitions);
    let gauges: [(&str, &str, PartitionValue); 4] = [
        (
            "brook_partition_log_start_offset",
            "The first offset a consumer can read.",
            |p| p.log_start,
        ),
        (
            "brook_partition_log_end_offset",
            "The next offset to be written.",
            |p| p.log_end,
        ),
        (
            "brook_partition_high_watermark",
            "The end of what consumers may read (committed).",
            |p| p.high_watermark,
        ),
        (
            "brook_partition_size_bytes",
            "Bytes of the partition's segments on disk.",
            |p| p.size_bytes,
        ),
    ];
    for (name, help, f) in gauges {
        o.family(name, "gauge", help);
        for p in parts {
            let labels = format!(
                "topic=\"{}\",partition=\"{}\"",
                label(&p.tp.topic),
                p.tp.partition
            );
            o.sample(name, &labels, f(p));
        }
    }
    let hw: HashMap<_, _> = (parts.iter())
        .filter(|p| p.leader)
        .map(|p| (&p.tp, p.high_watermark))
        .collect();
    o.family(
        "brook_consumer_group_committed_offset",
        "gauge",
        "The offset a group committed, for the groups this broker coordinates (with brook_partition_high_watermark, the lag of partitions led anywhere in the cluster).",
    );
    for (group, tp, committed) in &engine.committed {
        let labels = format!(
            "group=\"{}\",topic=\"{}\",partition=\"{}\"",
            label(group),
            label(&tp.topic),
            tp.partition
        );
        o.sample("brook_consumer_group_committed_offset", &labels, *committed);
    }
    o.family("brook_consumer_group_lag", "gauge", "High watermark minus the committed offset, for groups coordinated and partitions led on this broker.");
    for (group, tp, committed) in &engine.committed {
        if let Some(hw) = hw.get(tp) {
            let labels = format!(
                "group=\"{}\",topic=\"{}\",partition=\"{}\"",
                label(group),
                label(&tp.topic),
                tp.partition
            );
            o.sample(
                "brook_consumer_group_lag",
                &labels,
                hw.saturating_sub(*committed),
            );
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_engine::TopicPartition;
    use brook_engine::metrics::PartitionGauges;

    #[test]
    fn renders_families_with_escaped_labels_and_cumulative_buckets() {
        let mut n = NetCounters::default();
        NET.with_borrow_mut(|t| *t = NetCounters::default());
        record_request(ApiKey::Produce, 100, 20, Duration::from_millis(2));
        record_request(ApiKey::Produce, 50, 20, Duration::from_millis(20));
        NET.with_borrow(|t| n = t.clone());
        let tp = TopicPartition {
            topic: "a\"b".into(),
            partition: 3,
        };
        let engine = EngineMetrics {
            partitions: vec![PartitionGauges {
                tp: tp.clone(),
                log_start: 0,
                log_end: 10,
                high_watermark: 8,
                size_bytes: 4096,
                leader: true,
                under_replicated: false,
                under_min_isr: false,
            }],
            committed: vec![("g".into(), tp, 5)],
            ..EngineMetrics::default()
        };
        let text = render(&[n.clone(), n], &engine);
        assert!(
            text.contains("brook_requests_total{api=\"Produce\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("brook_request_bytes_total{api=\"Produce\"} 300\n"));
        assert!(
            text.contains(
                "brook_request_duration_seconds_bucket{api=\"Produce\",le=\"0.0025\"} 2\n"
            )
        );
        assert!(
            text.contains("brook_request_duration_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 4\n")
        );
        assert!(
            text.contains("brook_partition_high_watermark{topic=\"a\\\"b\",partition=\"3\"} 8\n")
        );
        assert!(text.contains(
            "brook_consumer_group_lag{group=\"g\",topic=\"a\\\"b\",partition=\"3\"} 3\n"
        ));
        // Every sample belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| declared.contains(*b))
                    .unwrap_or(name);
                assert!(declared.contains(base), "{l}");
            }
        }
    }
}
