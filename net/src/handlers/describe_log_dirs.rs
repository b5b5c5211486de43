//! DescribeLogDirs: every log directory of this broker (`log.dirs`), its state,
//! the volume's total and usable bytes (v4), and the partitions in it with their
//! sizes, so that `kafka-log-dirs --describe` and the admin clients'
//! `describeLogDirs` work. A failed directory is reported with
//! KAFKA_STORAGE_ERROR and no partitions, as Kafka reports an offline one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use brook_engine::TopicPartition;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_name;
use crate::server::ShardServer;

/// (total, usable) bytes of the file system holding `path`, or -1s.
fn volume_bytes(path: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (-1, -1);
    };
    // SAFETY: `c` is a NUL-terminated path and `st` a plain struct for the result.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return (-1, -1);
    }
    let block = st.f_frsize as i64;
    (st.f_blocks as i64 * block, st.f_bavail as i64 * block)
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: DescribeLogDirsRequest,
    client: super::ClientInfo,
) -> DescribeLogDirsResponse {
    if !srv.allowed_on_cluster(&client, brook_engine::meta::acls::Operation::Describe) {
        return DescribeLogDirsResponse::default()
            .with_error_code(kafka_protocol::ResponseError::ClusterAuthorizationFailed.code());
    }
    // None: every topic; otherwise the named partitions.
    let wanted: Option<HashSet<TopicPartition>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.to_string();
                t.partitions.into_iter().map(move |p| TopicPartition {
                    topic: topic.clone(),
                    partition: p.max(0) as u32,
                })
            })
            .collect()
    });
    let sizes: HashMap<TopicPartition, (u64, u64)> = srv
        .shard
        .partitions_on_disk()
        .await
        .into_iter()
        .map(|p| (p.tp, (p.size, p.lag)))
        .collect();
    let results = srv
        .shard
        .shared
        .log_dirs
        .describe()
        .into_iter()
        .map(|dir| {
            let (total, usable) = volume_bytes(&dir.path);
            let path = std::fs::canonicalize(&dir.path).unwrap_or(dir.path.clone());
            let result = DescribeLogDirsResult::default()
                .with_log_dir(StrBytes::from_string(path.display().to_string()))
                .with_total_bytes(total)
                .with_usable_bytes(usable);
            if dir.failed.is_some() {
                return result.with_error_code(ResponseError::KafkaStorageError.code());
            }
            let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
            for tp in dir.partitions {
                if wanted.as_ref().is_some_and(|w| !w.contains(&tp)) {
                    continue;
                }
                let Some(&(size, lag)) = sizes.get(&tp) else {
                    continue; // offline, or closed since
                };
                by_topic.entry(tp.topic.clone()).or_default().push(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(tp.partition as i32)
                        .with_partition_size(size as i64)
                        .with_offset_lag(lag as i64),
                );
            }
            result.with_topics(
                by_topic
                    .into_iter()
                    .map(|(name, partitions)| {
                        DescribeLogDirsTopic::default()
                            .with_name(topic_name(&name))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}
