//! OffsetFetch: committed offsets (-1 where none), for one group (v0–7) or a
//! batch of groups (v8). A null topic list means every committed partition.
//! With `require_stable` (v7+, read_committed consumers), a partition whose
//! offset awaits a transaction's end is UNSTABLE_OFFSET_COMMIT, which the
//! client retries.

use std::collections::BTreeMap;
use std::rc::Rc;

use brook_engine::TopicPartition;
use brook_engine::coord::group::CommittedOffset;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_name;
use crate::errors;
use crate::server::ShardServer;

/// A partition's committed offset, or its error code.
type Row = Result<Option<CommittedOffset>, i16>;
type Committed = Vec<(TopicPartition, Row)>;

/// Groups the answer by topic, keeping partition order.
fn by_topic(rows: Committed) -> BTreeMap<String, Vec<(i32, Row)>> {
    let mut out: BTreeMap<String, Vec<(i32, Row)>> = BTreeMap::new();
    for (tp, c) in rows {
        out.entry(tp.topic)
            .or_default()
            .push((tp.partition as i32, c));
    }
    out
}

/// (offset, leader epoch, metadata, error code)
fn fields(c: &Row) -> (i64, i32, Option<StrBytes>, i16) {
    match c {
        Ok(Some(c)) => (
            c.offset.map_or(-1, |o| o.0 as i64),
            c.leader_epoch.unwrap_or(-1),
            Some(StrBytes::from_string(c.metadata.clone())),
            errors::NONE,
        ),
        Ok(None) => (-1, -1, Some(StrBytes::default()), errors::NONE),
        Err(code) => (-1, -1, Some(StrBytes::default()), *code),
    }
}

async fn lookup(
    srv: &Rc<ShardServer>,
    client: &super::ClientInfo,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Committed, i16> {
    use brook_engine::meta::acls::Operation::Describe;
    use kafka_protocol::error::ResponseError;
    if !srv.allowed_group(client, Describe, &group) {
        return Err(ResponseError::GroupAuthorizationFailed.code());
    }
    // Named topics the principal may not describe are answered
    // TOPIC_AUTHORIZATION_FAILED; "all topics" leaves them out.
    let named = topics.is_some();
    let tps = topics.map(|ts| {
        ts.into_iter()
            .flat_map(|(t, ps)| {
                ps.into_iter().map(move |p| TopicPartition {
                    topic: t.clone(),
                    partition: p.max(0) as u32,
                })
            })
            .collect()
    });
    let rows = srv
        .shard
        .fetch_offsets(group.clone(), tps)
        .await
        .map_err(|e| errors::code(&e))?;
    let unstable = if require_stable {
        let tps = rows.iter().map(|(tp, _)| tp.clone()).collect();
        (srv.shard.unstable_offsets(group, tps).await).map_err(|e| errors::code(&e))?
    } else {
        Default::default()
    };
    Ok(rows
        .into_iter()
        .filter(|(tp, _)| named || srv.allowed_topic(client, Describe, &tp.topic))
        .map(|(tp, c)| {
            let row = if !srv.allowed_topic(client, Describe, &tp.topic) {
                Err(ResponseError::TopicAuthorizationFailed.code())
            } else if unstable.contains(&tp) {
                Err(ResponseError::UnstableOffsetCommit.code())
            } else {
                Ok(c)
            };
            (tp, row)
        })
        .collect())
}

pub async fn handle(
    srv: Rc<ShardServer>,
    req: OffsetFetchRequest,
    version: i16,
    client: super::ClientInfo,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::new();
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            let stable = req.require_stable;
            groups.push(
                match lookup(&srv, &client, g.group_id.to_string(), topics, stable).await {
                    Err(code) => group.with_error_code(code),
                    Ok(rows) => group.with_topics(
                        by_topic(rows)
                            .into_iter()
                            .map(|(t, ps)| {
                                let partitions = ps
                                    .iter()
                                    .map(|(p, c)| {
                                        let (offset, epoch, md, code) = fields(c);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(*p)
                                            .with_error_code(code)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(md)
                                    })
                                    .collect();
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(&t))
                                    .with_partitions(partitions)
                            })
                            .collect(),
                    ),
                },
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let stable = version >= 7 && req.require_stable;
    match lookup(&srv, &client, req.group_id.to_string(), topics, stable).await {
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
        Ok(rows) => {
            let topics = by_topic(rows)
                .into_iter()
                .map(|(t, ps)| {
                    let partitions = ps
                        .iter()
                        .map(|(p, c)| {
                            let (offset, epoch, md, code) = fields(c);
                            let r = OffsetFetchResponsePartition::default()
                                .with_partition_index(*p)
                                .with_error_code(code)
                                .with_committed_offset(offset)
                                .with_metadata(md);
                            if version >= 5 {
                                r.with_committed_leader_epoch(epoch)
                            } else {
                                r
                            }
                        })
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(&t))
                        .with_partitions(partitions)
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
    }
}
