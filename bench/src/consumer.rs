//! A consumer: one task per (consumer, leader broker) that long-polls Fetch for
//! its assigned partitions from given offsets. No consumer groups: partitions
//! are assigned by brook-bench, `partition % consumers == consumer`.
//!
//! Records are walked in place ([`crate::batch::walk_batches`]); only the first
//! 8 bytes of each value are read, for end-to-end latency.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;

use crate::batch::{for_each_record, walk_batches};
use crate::conn::Conn;
use crate::error::{BenchError, error_name, is_retriable};
use crate::stats::{Latency, LocalLatency, Stats};
use crate::workload::Workload;

/// Offsets to read up to, per topic then partition; `None` until known.
pub type Targets = watch::Receiver<Option<Arc<Vec<Vec<i64>>>>>;

pub struct ConsumerSpec {
    pub topic_index: usize,
    pub topic: String,
    pub addr: String,
    /// `(partition, next offset to read)`.
    pub positions: Vec<(i32, i64)>,
    /// Measure end-to-end latency from the stamps in the values.
    pub end_to_end: bool,
    /// How long to keep reading after the measurement window ends.
    pub drain: Duration,
}

pub async fn run(
    spec: ConsumerSpec,
    w: Arc<Workload>,
    stats: Arc<Stats>,
    mut targets: Targets,
) -> Result<(), BenchError> {
    let mut conn = Conn::connect(&spec.addr, &w.client_id).await?;
    let version = conn.versions.fetch;
    let mut positions = spec.positions;
    let mut e2e = LocalLatency::new(Latency::EndToEnd);
    let topic = TopicName(StrBytes::from_string(spec.topic.clone()));
    let clock = stats.clock;
    let (lo, hi) = (clock.warmup_end_us(), clock.wall_us(clock.end));
    let mut backoff = false;
    let res = loop {
        let now = Instant::now();
        let done = targets.borrow_and_update().as_ref().is_some_and(|t| {
            let t = &t[spec.topic_index];
            positions.iter().all(|&(p, off)| off >= t[p as usize])
        });
        if done {
            break Ok(());
        }
        let deadline = stats.window_end() + spec.drain;
        if now >= deadline {
            stats.error("consume:drain-timeout", 1);
            break Ok(());
        }
        if backoff {
            tokio::time::sleep(Duration::from_millis(100)).await;
            backoff = false;
        }
        let max_wait = (deadline - now).min(Duration::from_millis(w.fetch_max_wait_ms as u64));
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait.as_millis() as i32)
            .with_min_bytes(w.fetch_min_bytes)
            .with_max_bytes(w.fetch_max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic.clone())
                    .with_partitions(
                        positions
                            .iter()
                            .map(|&(p, off)| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_current_leader_epoch(-1)
                                    .with_fetch_offset(off)
                                    .with_last_fetched_epoch(-1)
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(w.fetch_partition_max_bytes)
                            })
                            .collect(),
                    ),
            ]);
        let timeout = Duration::from_millis(w.request_timeout_ms as u64) + max_wait;
        let resp = match tokio::time::timeout(timeout, conn.call(&req, version)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                stats.error("consume:connection", 1);
                break Err(e);
            }
            Err(_) => {
                stats.error("consume:timeout", 1);
                break Err(BenchError::Timeout(format!("Fetch from {}", spec.addr)));
            }
        };
        stats.fetch_requests.fetch_add(1, Relaxed);
        if resp.error_code != 0 {
            stats.error(format!("fetch:{}", error_name(resp.error_code)), 1);
            backoff = true;
            continue;
        }
        let at = Instant::now();
        let at_us = clock.wall_us(at);
        let in_window = clock.in_window(at);
        for t in &resp.responses {
            for p in &t.partitions {
                let Some(pos) = positions
                    .iter_mut()
                    .find(|(id, _)| *id == p.partition_index)
                else {
                    continue;
                };
                if p.error_code != 0 {
                    stats.error(format!("fetch:{}", error_name(p.error_code)), 1);
                    if !is_retriable(p.error_code) {
                        return Err(crate::conn::broker_error("Fetch", p.error_code));
                    }
                    backoff = true;
                    continue;
                }
                let Some(records) = &p.records else { continue };
                let (mut n, mut payload, mut wire) = (0u64, 0u64, 0u64);
                let from = pos.1;
                walk_batches(records, |info, body| {
                    wire += info.wire_bytes as u64;
                    if !info.control {
                        for_each_record(&info, body, |r| {
                            if r.offset < from {
                                return;
                            }
                            n += 1;
                            payload += (r.key_bytes + r.value_bytes) as u64;
                            if spec.end_to_end
                                && let Some(s) = r.stamp_us
                                && s >= lo
                                && s < hi
                            {
                                e2e.record_n(at_us.saturating_sub(s), 1);
                            }
                        })?;
                    }
                    pos.1 = pos.1.max(info.next_offset());
                    Ok(())
                })?;
                stats.consumed.add(n, payload, wire);
                if in_window {
                    stats.consumed_window.add(n, payload, wire);
                }
            }
        }
        e2e.maybe_flush(&stats, at);
    };
    e2e.flush(&stats);
    res
}
