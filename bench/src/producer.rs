//! A producer: one task that generates records into per-partition batches and
//! pipelines Produce requests, up to `max_in_flight` per broker connection.
//!
//! Closed loop (`rate = 0`): records are generated whenever a batch has room, so
//! the broker's acknowledgements pace the run. Open loop (`rate > 0`): record `i`
//! is due at `start + i / rate`; its latency is measured from that intended
//! time, so a stalled broker shows up in the figures rather than slowing the
//! clock (coordinated omission corrected, as OMB does). The gap between intended
//! and actual send is reported as publish delay.
//!
//! A reader task per connection decodes responses and hands them over a channel,
//! so the producer waits on one channel whatever the number of leaders.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::mpsc;

use crate::admin::{Cluster, TopicLayout};
use crate::batch::{BatchBuilder, partition_for_key};
use crate::conn::{Conn, ConnWriter, decode_response};
use crate::error::{BenchError, error_name, is_retriable};
use crate::stats::{Latency, LocalLatency, Stats};
use crate::workload::{Acks, KeyDistribution, Workload};

const MAX_RETRIES: u32 = 5;
/// Longest key a workload generates: 16 random hex digits, or `key-<u32>`.
const MAX_KEY_BYTES: usize = 16;
/// Random filler the values are cut from; larger than any record so offsets vary.
const PAYLOAD_POOL_BYTES: usize = 1 << 20;

/// Send times of a batch's records, run-length encoded: `(µs, count)`.
type SendTimes = Vec<(u64, u32)>;

struct SentBatch {
    partition: i32,
    data: Bytes,
    records: u64,
    payload_bytes: u64,
    times: SendTimes,
    attempts: u32,
}

struct Pending {
    correlation_id: i32,
    batches: Vec<SentBatch>,
}

struct Ack {
    conn: usize,
    at: Instant,
    resp: Result<(i32, ProduceResponse), BenchError>,
}

struct OpenBatch {
    builder: BatchBuilder,
    times: SendTimes,
    opened: Option<Instant>,
}

/// Small, fast, seedable PRNG (xorshift64*); good enough for sizes and keys.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Values like kafka-producer-perf-test's: random uppercase letters, which
/// compress about as well as text does.
fn payload_pool(rng: &mut Rng, extra: usize) -> Vec<u8> {
    (0..PAYLOAD_POOL_BYTES + extra)
        .map(|_| b'A' + rng.below(26) as u8)
        .collect()
}

pub struct Producer {
    w: Arc<Workload>,
    stats: Arc<Stats>,
    topic: TopicName,
    partitions: usize,
    /// Records per second for this producer; 0 = closed loop.
    rate: f64,
    conns: Vec<ConnWriter>,
    /// Connection index per partition.
    conn_of: Vec<usize>,
    in_flight: Vec<VecDeque<Pending>>,
    open: Vec<OpenBatch>,
    retries: Vec<(Instant, SentBatch)>,
    acks_rx: mpsc::UnboundedReceiver<Ack>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    arena: BytesMut,
    spare_times: Vec<SendTimes>,
    rng: Rng,
    pool: Vec<u8>,
    keys: Vec<(Vec<u8>, usize)>,
    next_key: usize,
    sticky: usize,
    generated: u64,
    /// The last append found its batch full; wait for a send before trying again.
    blocked: bool,
    publish: LocalLatency,
    delay: LocalLatency,
    produce_version: i16,
}

impl Producer {
    pub async fn connect(
        cluster: &Cluster,
        layout: &TopicLayout,
        w: Arc<Workload>,
        stats: Arc<Stats>,
        rate: f64,
        seed: u64,
    ) -> Result<Producer, BenchError> {
        let all: Vec<i32> = (0..layout.leaders.len() as i32).collect();
        let (tx, acks_rx) = mpsc::unbounded_channel();
        let mut conns = Vec::new();
        let mut readers = Vec::new();
        let mut conn_of = vec![0; all.len()];
        let mut produce_version = cluster.versions.produce;
        for (leader, parts) in Cluster::by_leader(layout, &all) {
            let conn = Conn::connect(cluster.addr(leader)?, &w.client_id).await?;
            produce_version = produce_version.min(conn.versions.produce);
            let idx = conns.len();
            for p in parts {
                conn_of[p as usize] = idx;
            }
            let Conn {
                w: writer,
                mut r,
                versions,
            } = conn;
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                loop {
                    let resp = match r.next_frame().await {
                        Ok(f) => decode_response::<ProduceRequest>(f, versions.produce),
                        Err(e) => Err(e),
                    };
                    let failed = resp.is_err();
                    let ack = Ack {
                        conn: idx,
                        at: Instant::now(),
                        resp,
                    };
                    if tx.send(ack).is_err() || failed {
                        return;
                    }
                }
            }));
            conns.push(writer);
        }
        let mut rng = Rng::new(seed);
        let pool = payload_pool(&mut rng, w.record_size.max_bytes);
        let keys = match w.key_distribution {
            KeyDistribution::RoundRobin => (0..w.key_count)
                .map(|i| {
                    let k = format!("key-{i}").into_bytes();
                    let p = partition_for_key(&k, all.len());
                    (k, p)
                })
                .collect(),
            _ => Vec::new(),
        };
        let open = (0..all.len())
            .map(|_| OpenBatch {
                builder: BatchBuilder::with_capacity(w.batch_size + w.record_size.max_bytes + 64),
                times: Vec::new(),
                opened: None,
            })
            .collect();
        Ok(Producer {
            topic: TopicName(StrBytes::from_string(layout.name.clone())),
            partitions: all.len(),
            rate,
            in_flight: conns.iter().map(|_| VecDeque::new()).collect(),
            conns,
            conn_of,
            open,
            retries: Vec::new(),
            acks_rx,
            readers,
            arena: BytesMut::with_capacity(4 << 20),
            spare_times: Vec::new(),
            sticky: rng.below(all.len() as u64) as usize,
            rng,
            pool,
            keys,
            next_key: 0,
            generated: 0,
            blocked: false,
            publish: LocalLatency::new(Latency::Publish),
            delay: LocalLatency::new(Latency::PublishDelay),
            produce_version,
            w,
            stats,
        })
    }

    /// Runs until the configured end (or Ctrl-C), then waits for outstanding acks.
    pub async fn run(mut self) -> Result<(), BenchError> {
        let res = self.run_inner().await;
        for r in &self.readers {
            r.abort();
        }
        self.publish.flush(&self.stats);
        self.delay.flush(&self.stats);
        if res.is_err() {
            let lost: u64 = self
                .in_flight
                .iter()
                .flatten()
                .flat_map(|p| &p.batches)
                .map(|b| b.records)
                .sum();
            self.stats.failed_records.fetch_add(lost, Relaxed);
        }
        res
    }

    async fn run_inner(&mut self) -> Result<(), BenchError> {
        let clock = self.stats.clock;
        let mut drain_deadline = None;
        loop {
            let now = Instant::now();
            let stopping = now >= clock.end || self.stats.stopping();
            if !stopping {
                self.generate(now);
            } else if drain_deadline.is_none() {
                drain_deadline = Some(now + self.w.drain_timeout);
            }
            self.send_ready(now, stopping).await?;
            if stopping && self.idle() {
                return Ok(());
            }
            if drain_deadline.is_some_and(|d| now >= d) {
                let n: u64 = self
                    .in_flight
                    .iter()
                    .flatten()
                    .flat_map(|p| &p.batches)
                    .map(|b| b.records)
                    .sum();
                self.stats.error("produce:ack-timeout", 1);
                self.stats.failed_records.fetch_add(n, Relaxed);
                return Ok(());
            }
            let wake = self.next_wake(now, stopping);
            tokio::select! {
                ack = self.acks_rx.recv() => {
                    let Some(ack) = ack else { return Err(BenchError::Protocol("ack channel closed".into())) };
                    self.handle_ack(ack)?;
                    while let Ok(ack) = self.acks_rx.try_recv() {
                        self.handle_ack(ack)?;
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            self.publish.maybe_flush(&self.stats, now);
            self.delay.maybe_flush(&self.stats, now);
        }
    }

    fn idle(&self) -> bool {
        self.open.iter().all(|b| b.builder.is_empty())
            && self.in_flight.iter().all(VecDeque::is_empty)
            && self.retries.is_empty()
    }

    fn has_room(&self, conn: usize) -> bool {
        self.w.acks == Acks::None || self.in_flight[conn].len() < self.w.max_in_flight
    }

    /// When to look again if no ack arrives first. Deadlines that only matter for
    /// a connection without room in flight are ignored: its next ack wakes us.
    fn next_wake(&self, now: Instant, stopping: bool) -> Instant {
        let mut wake = now + Duration::from_millis(100);
        if !stopping {
            wake = wake.min(self.stats.clock.end);
            if !self.blocked {
                if self.rate > 0.0 {
                    let due = self.stats.clock.start
                        + Duration::from_secs_f64((self.generated + 1) as f64 / self.rate);
                    wake = wake.min(due.max(now));
                } else {
                    return now;
                }
            }
        }
        let linger = Duration::from_millis(self.w.linger_ms);
        for (p, b) in self.open.iter().enumerate() {
            if let Some(t) = b.opened
                && self.has_room(self.conn_of[p])
            {
                wake = wake.min(t + linger);
            }
        }
        for (t, b) in &self.retries {
            if self.has_room(self.conn_of[b.partition as usize]) {
                wake = wake.min(*t);
            }
        }
        wake
    }

    /// Appends the records that are due (open loop) or that fit (closed loop).
    fn generate(&mut self, now: Instant) {
        let clock = self.stats.clock;
        let now_us = clock.wall_us(now);
        let (window_lo, window_hi) = (clock.warmup_end_us(), clock.wall_us(clock.end));
        let due = if self.rate > 0.0 {
            (now.duration_since(clock.start).as_secs_f64() * self.rate) as u64
        } else {
            u64::MAX
        };
        while self.generated < due {
            let (stamp_us, delay_us) = if self.rate > 0.0 {
                let intended = clock.wall_us(
                    clock.start + Duration::from_secs_f64(self.generated as f64 / self.rate),
                );
                (intended, now_us.saturating_sub(intended))
            } else {
                (now_us, 0)
            };
            if !self.append_one(now, stamp_us) {
                self.blocked = true;
                break;
            }
            if self.rate > 0.0 && stamp_us >= window_lo && stamp_us < window_hi {
                self.delay.record_n(delay_us, 1);
            }
            self.generated += 1;
        }
    }

    /// Appends one record; false if its partition's batch is full — for unkeyed
    /// records, if every partition's batch is full (back-pressure).
    fn append_one(&mut self, now: Instant, stamp_us: u64) -> bool {
        let size = &self.w.record_size;
        let value_len = if size.max_bytes > size.min_bytes {
            size.min_bytes + self.rng.below((size.max_bytes - size.min_bytes + 1) as u64) as usize
        } else {
            size.min_bytes
        };
        let mut random_key = [0u8; 16];
        let (key, partition): (Option<&[u8]>, usize) = match self.w.key_distribution {
            KeyDistribution::None => (None, self.sticky),
            KeyDistribution::Random => {
                let v = self.rng.next();
                for (i, b) in random_key.iter_mut().enumerate() {
                    *b = b"0123456789abcdef"[((v >> (4 * i)) & 15) as usize];
                }
                (
                    Some(&random_key[..]),
                    partition_for_key(&random_key, self.partitions),
                )
            }
            KeyDistribution::RoundRobin => {
                let (k, p) = &self.keys[self.next_key];
                (Some(&k[..]), *p)
            }
        };
        let key_len = key.map_or(0, <[u8]>::len);
        let batch_size = self.w.batch_size;
        let partition = if self.w.key_distribution == KeyDistribution::None {
            // Sticky partitioner: a full batch moves on to the next partition
            // with room, so the client keeps one batch per partition queued
            // (as librdkafka does) while requests are in flight.
            let Some(p) = (0..self.partitions)
                .map(|i| (partition + i) % self.partitions)
                .find(|&p| self.open[p].builder.has_room(0, value_len, batch_size))
            else {
                return false;
            };
            self.sticky = p;
            p
        } else if !self.open[partition]
            .builder
            .has_room(key_len, value_len, batch_size)
        {
            return false;
        } else {
            partition
        };
        let batch = &mut self.open[partition];
        let start = self.rng.below(PAYLOAD_POOL_BYTES as u64) as usize;
        let payload = &self.pool[start..];
        batch
            .builder
            .append((stamp_us / 1000) as i64, key, value_len, stamp_us, payload);
        match batch.times.last_mut() {
            Some((t, n)) if *t == stamp_us => *n += 1,
            _ => batch.times.push((stamp_us, 1)),
        }
        batch.opened.get_or_insert(now);
        if self.w.key_distribution == KeyDistribution::RoundRobin {
            self.next_key = (self.next_key + 1) % self.keys.len();
        }
        true
    }

    /// Sends one request per connection that has a ready batch and room in flight.
    async fn send_ready(&mut self, now: Instant, force: bool) -> Result<(), BenchError> {
        let linger = Duration::from_millis(self.w.linger_ms);
        for conn in 0..self.conns.len() {
            if !self.has_room(conn) {
                continue;
            }
            let ready = self.open.iter().enumerate().any(|(p, b)| {
                self.conn_of[p] == conn
                    && !b.builder.is_empty()
                    && (force
                        || !b.builder.has_room(
                            MAX_KEY_BYTES,
                            self.w.record_size.max_bytes,
                            self.w.batch_size,
                        )
                        || b.opened.is_some_and(|t| now >= t + linger))
            }) || self
                .retries
                .iter()
                .any(|(t, b)| self.conn_of[b.partition as usize] == conn && *t <= now);
            if ready {
                self.send(conn, now).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, conn: usize, now: Instant) -> Result<(), BenchError> {
        let mut batches = Vec::new();
        let mut i = 0;
        while i < self.retries.len() {
            let (t, b) = &self.retries[i];
            if *t <= now && self.conn_of[b.partition as usize] == conn {
                batches.push(self.retries.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        for p in 0..self.partitions {
            if self.conn_of[p] != conn || self.open[p].builder.is_empty() {
                continue;
            }
            let fresh = self.spare_times.pop().unwrap_or_default();
            let open = &mut self.open[p];
            let records = open.builder.count() as u64;
            let payload_bytes = open.builder.payload_bytes;
            let data = open.builder.finish(self.w.compression, &mut self.arena)?;
            open.opened = None;
            batches.push(SentBatch {
                partition: p as i32,
                data,
                records,
                payload_bytes,
                times: std::mem::replace(&mut open.times, fresh),
                attempts: 0,
            });
        }
        if self.w.key_distribution == KeyDistribution::None {
            self.sticky = (self.sticky + 1) % self.partitions;
        }
        self.blocked = false;
        if batches.is_empty() {
            return Ok(());
        }
        let req = ProduceRequest::default()
            .with_acks(self.w.acks.wire())
            .with_timeout_ms(self.w.request_timeout_ms)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(self.topic.clone())
                    .with_partition_data(
                        batches
                            .iter()
                            .map(|b| {
                                PartitionProduceData::default()
                                    .with_index(b.partition)
                                    .with_records(Some(b.data.clone()))
                            })
                            .collect(),
                    ),
            ]);
        let writer = &mut self.conns[conn];
        let correlation_id = writer.encode(&req, self.produce_version)?;
        drop(req);
        writer.flush().await?;
        self.stats.produce_requests.fetch_add(1, Relaxed);
        if self.w.acks == Acks::None {
            let at = Instant::now();
            for b in batches {
                self.count_acked(&b, at);
                self.recycle(b.times);
            }
        } else {
            self.in_flight[conn].push_back(Pending {
                correlation_id,
                batches,
            });
        }
        Ok(())
    }

    fn count_acked(&self, b: &SentBatch, at: Instant) {
        let wire = b.data.len() as u64;
        self.stats.produced.add(b.records, b.payload_bytes, wire);
        if self.stats.clock.in_window(at) {
            self.stats
                .produced_window
                .add(b.records, b.payload_bytes, wire);
        }
    }

    fn recycle(&mut self, mut times: SendTimes) {
        times.clear();
        self.spare_times.push(times);
    }

    fn handle_ack(&mut self, ack: Ack) -> Result<(), BenchError> {
        let (cid, resp) = match ack.resp {
            Ok(r) => r,
            Err(e) => {
                self.stats.error("produce:connection", 1);
                return Err(e);
            }
        };
        let Some(pending) = self.in_flight[ack.conn].pop_front() else {
            return Err(BenchError::Protocol(format!(
                "unsolicited Produce response {cid}"
            )));
        };
        if pending.correlation_id != cid {
            return Err(BenchError::Protocol(format!(
                "Produce response {cid} out of order (expected {})",
                pending.correlation_id
            )));
        }
        let clock = self.stats.clock;
        let ack_us = clock.wall_us(ack.at);
        let (lo, hi) = (clock.warmup_end_us(), clock.wall_us(clock.end));
        let mut codes = std::collections::HashMap::new();
        for t in &resp.responses {
            for p in &t.partition_responses {
                codes.insert(p.index, p.error_code);
            }
        }
        for mut b in pending.batches {
            let code = codes.get(&b.partition).copied().unwrap_or(-1);
            if code == 0 {
                for &(t, n) in &b.times {
                    if t >= lo && t < hi {
                        self.publish.record_n(ack_us.saturating_sub(t), n as u64);
                    }
                }
                self.count_acked(&b, ack.at);
                self.recycle(b.times);
                continue;
            }
            self.stats.error(format!("produce:{}", error_name(code)), 1);
            if is_retriable(code) && b.attempts < MAX_RETRIES {
                let backoff = Duration::from_millis(100 << b.attempts.min(3));
                b.attempts += 1;
                self.retries.push((ack.at + backoff, b));
            } else {
                self.stats.failed_records.fetch_add(b.records, Relaxed);
                self.recycle(b.times);
            }
        }
        Ok(())
    }
}
