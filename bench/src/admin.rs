//! Setup: find the brokers and partition leaders (Metadata), create missing topics
//! (CreateTopics), and look up offsets (ListOffsets).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::conn::{Conn, broker_error};
use crate::error::BenchError;
use crate::workload::{Mode, Workload};

/// ListOffsets timestamp meaning "the log end offset".
pub const LATEST: i64 = -1;
/// ListOffsets timestamp meaning "the log start offset".
pub const EARLIEST: i64 = -2;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;

#[derive(Clone, Debug)]
pub struct TopicLayout {
    pub name: String,
    /// Leader broker id per partition, indexed by partition id.
    pub leaders: Vec<i32>,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    /// Broker id to `host:port`.
    pub brokers: HashMap<i32, String>,
    pub topics: Vec<TopicLayout>,
    pub versions: crate::conn::Versions,
}

impl Cluster {
    pub fn addr(&self, broker: i32) -> Result<&str, BenchError> {
        self.brokers
            .get(&broker)
            .map(String::as_str)
            .ok_or_else(|| BenchError::Protocol(format!("no address for broker {broker}")))
    }

    /// Partition ids of `topic` grouped by leader.
    pub fn by_leader(topic: &TopicLayout, partitions: &[i32]) -> BTreeMap<i32, Vec<i32>> {
        let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            out.entry(topic.leaders[p as usize]).or_default().push(p);
        }
        out
    }
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Finds every topic's leaders, creating missing topics when the workload says so.
pub async fn prepare(bootstrap: &str, w: &Workload) -> Result<Cluster, BenchError> {
    let mut conn = Conn::connect(bootstrap, &w.client_id).await?;
    let names = w.topic_names();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut created = false;
    loop {
        let (brokers, found) = metadata(&mut conn, &names).await?;
        let missing: Vec<&String> = names.iter().filter(|n| !found.contains_key(*n)).collect();
        if !missing.is_empty() {
            if w.create_topics && w.mode != Mode::Consume && !created {
                create_topics(&mut conn, &missing, w).await?;
                created = true;
            } else if !created {
                return Err(BenchError::Config(format!(
                    "topic {} does not exist (consume mode and --no-create never create topics)",
                    missing[0]
                )));
            }
        } else if let Some(topics) = complete(&names, &found) {
            if found.values().any(|l| l.len() != w.partitions as usize) {
                eprintln!(
                    "note: topic has {} partitions, not the {} asked for; using the existing ones",
                    found[&names[0]].len(),
                    w.partitions
                );
            }
            return Ok(Cluster {
                brokers,
                topics,
                versions: conn.versions,
            });
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(
                "topics did not get leaders for all partitions within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The layouts, if every partition of every topic has a leader.
fn complete(names: &[String], found: &HashMap<String, Vec<i32>>) -> Option<Vec<TopicLayout>> {
    names
        .iter()
        .map(|n| {
            let leaders = found.get(n)?;
            (!leaders.is_empty() && leaders.iter().all(|&l| l >= 0)).then(|| TopicLayout {
                name: n.clone(),
                leaders: leaders.clone(),
            })
        })
        .collect()
}

type Brokers = HashMap<i32, String>;

async fn metadata(
    conn: &mut Conn,
    names: &[String],
) -> Result<(Brokers, HashMap<String, Vec<i32>>), BenchError> {
    let topics = names
        .iter()
        .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
        .collect();
    let req = MetadataRequest::default()
        .with_topics(Some(topics))
        .with_allow_auto_topic_creation(false);
    let resp = conn.call(&req, conn.versions.metadata).await?;
    let brokers = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let mut found = HashMap::new();
    for t in resp.topics {
        let Some(name) = t.name else { continue };
        match t.error_code {
            0 => {}
            UNKNOWN_TOPIC_OR_PARTITION => continue,
            // LEADER_NOT_AVAILABLE and similar: ask again.
            c if crate::error::is_retriable(c) => continue,
            c => return Err(broker_error("Metadata", c)),
        }
        let n = t.partitions.len();
        let mut leaders = vec![-1; n];
        for p in &t.partitions {
            let i = p.partition_index as usize;
            if i < n && p.error_code == 0 {
                leaders[i] = p.leader_id.0;
            }
        }
        found.insert(name.0.as_str().to_string(), leaders);
    }
    Ok((brokers, found))
}

async fn create_topics(conn: &mut Conn, names: &[&String], w: &Workload) -> Result<(), BenchError> {
    if conn.versions.create_topics < 0 {
        return Err(BenchError::Protocol(
            "broker does not support CreateTopics".into(),
        ));
    }
    let topics = names
        .iter()
        .map(|n| {
            CreatableTopic::default()
                .with_name(topic_name(n))
                .with_num_partitions(w.partitions as i32)
                .with_replication_factor(w.replication_factor)
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(30_000);
    let resp = conn.call(&req, conn.versions.create_topics).await?;
    for t in resp.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            return Err(broker_error("CreateTopics", t.error_code));
        }
    }
    eprintln!(
        "created {} topic(s) with {} partitions, replication factor {}",
        names.len(),
        w.partitions,
        w.replication_factor
    );
    Ok(())
}

/// Offsets of `partitions` of `topic` at `timestamp` ([`EARLIEST`] or [`LATEST`]),
/// asked of each partition's leader. Returns `(partition, offset)` pairs.
pub async fn list_offsets(
    cluster: &Cluster,
    topic: &TopicLayout,
    partitions: &[i32],
    timestamp: i64,
    client_id: &str,
) -> Result<Vec<(i32, i64)>, BenchError> {
    let mut out = Vec::new();
    for (leader, parts) in Cluster::by_leader(topic, partitions) {
        let mut conn = Conn::connect(cluster.addr(leader)?, client_id).await?;
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic_name(&topic.name))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_current_leader_epoch(-1)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    ),
            ]);
        let resp = conn.call(&req, conn.versions.list_offsets).await?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(broker_error("ListOffsets", p.error_code));
                }
                out.push((p.partition_index, p.offset));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}
