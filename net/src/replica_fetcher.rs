//! Follower fetchers: a broker copies the partitions it follows from their
//! leaders with Kafka's own Fetch (v12, with its replica id, each partition's
//! leader epoch and the epoch of its last batch), as Kafka brokers do.
//!
//! **Lives on:** every shard of a cluster member, for the partitions that
//! shard owns: one task per leader broker, one connection each. A fetch
//! answer is appended on the shard and the next fetch goes out only after it
//! is fsynced, so the fetch offset tells the leader what this broker holds
//! durably — the high watermark, and acks=all, count only that. A diverged
//! tail (`diverging_epoch`) is truncated before fetching on. Leadership
//! changes arrive with the image: the task of a leader no longer followed
//! ends, and one is started for each new leader.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use brook_engine::cluster::NodeId;
use brook_engine::shard::Followed;
use brook_engine::{Offset, Shard};
use compio::net::TcpStream;
use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

const FETCH_VERSION: i16 = 12;
/// How long a leader may hold a fetch with nothing new.
const MAX_WAIT_MS: i32 = 500;
const PARTITION_MAX_BYTES: i32 = 1 << 20;
const RESPONSE_MAX_BYTES: i32 = 16 << 20;
/// A response slower than this (beyond the long poll) means the leader is gone.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_millis(300);
/// How long a fetcher whose every partition is throttled waits to look again.
const THROTTLE_BACKOFF: Duration = Duration::from_millis(100);
/// Largest response frame accepted from a leader.
const MAX_FRAME: usize = 64 << 20;

/// Starts the fetcher manager of this shard (cluster members only).
pub fn start(shard: Rc<Shard>) {
    if shard.cluster().is_none() {
        return;
    }
    compio::runtime::spawn(manage(shard)).detach();
}

/// Keeps one fetch task per leader that this shard follows partitions of.
async fn manage(shard: Rc<Shard>) {
    let mut running: HashMap<NodeId, compio::runtime::JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, t| !t.is_finished());
        for f in shard.followed() {
            running
                .entry(f.leader)
                .or_insert_with(|| compio::runtime::spawn(fetch_from(shard.clone(), f.leader)));
        }
        let changed = std::pin::pin!(shard.replication_changed());
        let tick = std::pin::pin!(compio::time::sleep(Duration::from_secs(1)));
        futures::future::select(changed, tick).await;
    }
}

fn from_leader(shard: &Shard, leader: NodeId) -> Vec<Followed> {
    shard
        .followed()
        .into_iter()
        .filter(|f| f.leader == leader)
        .collect()
}

/// Fetches from `leader` until this shard follows nothing of it.
async fn fetch_from(shard: Rc<Shard>, leader: NodeId) {
    let me = shard.node_id().unwrap_or(-1);
    let incarnation = shard.cluster().map_or(0, |c| c.incarnation);
    let client_id = StrBytes::from_string(format!(
        "{}{incarnation}",
        crate::handlers::fetch::REPLICA_CLIENT_PREFIX
    ));
    loop {
        if from_leader(&shard, leader).is_empty() {
            return;
        }
        let Some((host, port)) = shard.broker_address(leader) else {
            compio::time::sleep(RETRY).await;
            continue;
        };
        let addr = format!("{host}:{port}");
        let Ok(mut conn) = crate::broker_call::connect(&addr).await else {
            compio::time::sleep(RETRY).await;
            continue;
        };
        let mut correlation = 0i32;
        loop {
            let mut parts = from_leader(&shard, leader);
            if parts.is_empty() {
                return;
            }
            // Over the follower rate, throttled partitions sit out (Kafka's
            // `follower.replication.throttled.rate`); the rest fetch on.
            if shard.follower_throttle_exceeded() {
                parts.retain(|f| !f.throttled);
                if parts.is_empty() {
                    compio::time::sleep(THROTTLE_BACKOFF).await;
                    continue;
                }
            }
            correlation = correlation.wrapping_add(1);
            let req = fetch_request(me, &parts);
            let resp = match call(&mut conn, &req, correlation, &client_id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(leader, %addr, error = %e, "replica fetch failed; reconnecting");
                    break;
                }
            };
            if !apply(&shard, &parts, resp).await {
                compio::time::sleep(RETRY).await;
            }
        }
        compio::time::sleep(RETRY).await;
    }
}

fn fetch_request(me: NodeId, parts: &[Followed]) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for f in parts {
        let p = FetchPartition::default()
            .with_partition(f.tp.partition as i32)
            .with_current_leader_epoch(f.leader_epoch)
            .with_fetch_offset(f.fetch_offset.0 as i64)
            .with_last_fetched_epoch(f.last_fetched_epoch)
            .with_log_start_offset(f.log_start.0 as i64)
            .with_partition_max_bytes(PARTITION_MAX_BYTES);
        match topics.last_mut() {
            Some(t) if t.topic.as_str() == f.tp.topic => t.partitions.push(p),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(f.tp.topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(RESPONSE_MAX_BYTES)
        .with_topics(topics)
}

async fn call(
    conn: &mut TcpStream,
    req: &FetchRequest,
    correlation: i32,
    client_id: &StrBytes,
) -> std::io::Result<FetchResponse> {
    let resp: FetchResponse = crate::broker_call::call(
        conn,
        ApiKey::Fetch,
        FETCH_VERSION,
        req,
        correlation,
        client_id,
        MAX_FRAME,
        RESPONSE_TIMEOUT,
    )
    .await?;
    if resp.error_code != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("fetch refused: error {}", resp.error_code),
        ));
    }
    Ok(resp)
}

/// Appends (or truncates) what the leader sent. Returns false when nothing
/// could move forward (every partition refused, or every append failed — a
/// full disk), so the caller backs off.
async fn apply(shard: &Rc<Shard>, parts: &[Followed], resp: FetchResponse) -> bool {
    let mut progress = false;
    let mut appends = Vec::new();
    for t in resp.responses {
        for p in t.partitions {
            let Some(f) = parts.iter().find(|f| {
                f.tp.topic == t.topic.as_str() && f.tp.partition as i32 == p.partition_index
            }) else {
                continue;
            };
            if p.error_code == ResponseError::OffsetOutOfRange.code()
                && p.log_start_offset > f.fetch_offset.0 as i64
            {
                let start = Offset(p.log_start_offset as u64);
                match shard.restart_replica_at(&f.tp, start).await {
                    Ok(restarted) => progress |= restarted,
                    Err(e) => {
                        tracing::warn!(partition = %f.tp, error = %e, "cannot start the follower log again")
                    }
                }
                continue;
            }
            if p.error_code != 0 {
                let e = ResponseError::try_from_code(p.error_code);
                tracing::debug!(partition = %f.tp, error = ?e, "leader refused a replica fetch");
                continue;
            }
            if p.diverging_epoch.end_offset >= 0 {
                progress = true;
                let d = (
                    p.diverging_epoch.epoch,
                    Offset(p.diverging_epoch.end_offset as u64),
                );
                if let Err(e) = shard.truncate_replica(&f.tp, d).await {
                    tracing::warn!(partition = %f.tp, error = %e, "cannot truncate the follower log");
                }
                continue;
            }
            let records = p.records.unwrap_or_default();
            // The leader's first batch begins before the offset asked for: this
            // (empty) log started at a log start inside that batch. It starts
            // again at the batch and appends it now (the leader would refuse
            // a fetch from before its log start), as Kafka's follower does.
            let first_base =
                (records.get(..8)).map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")));
            if let Some(base) = first_base.filter(|&b| b >= 0 && b < f.fetch_offset.0 as i64) {
                match shard.restart_replica_at(&f.tp, Offset(base as u64)).await {
                    Ok(true) => progress = true,
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(partition = %f.tp, error = %e, "cannot start the follower log again");
                        continue;
                    }
                }
            }
            if f.throttled {
                shard.record_follower_throttled(records.len());
            }
            let hw = Offset(p.high_watermark.max(0) as u64);
            let leader_start = Offset(p.log_start_offset.max(0) as u64);
            let tp = f.tp.clone();
            let shard = shard.clone();
            appends.push(async move {
                match shard.replica_append(&tp, records, hw, leader_start).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(partition = %tp, error = %e, "cannot append fetched batches");
                        false
                    }
                }
            });
        }
    }
    let appended = join_all(appends).await;
    progress || appended.into_iter().any(|ok| ok)
}
