//! Group coordinator operations on [`Shard`]: each runs on the shard that owns the
//! group's `__consumer_offsets` partition, wherever it is called from.
//!
//! Offset commits are appended to that partition (same log, same group commit and
//! fdatasync as user data) and applied to the in-memory group only once durable,
//! so an answered commit survives a crash and is rebuilt by `group_log::replay_partition`.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use crate::coord::group::{
    CommittedOffset, Group, GroupState, JoinRequest, JoinResult, OFFSETS_TOPIC, Reply, SyncResult,
    offsets_partition_of,
};
use crate::coord::group_log::{self, Membership};
use crate::error::EngineError;
use crate::shard::{Acks, Shard, shard_of};
use crate::types::TopicPartition;

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Committed offsets per partition; `None` where the group committed nothing.
pub type CommittedOffsets = Vec<(TopicPartition, Option<CommittedOffset>)>;

/// An OffsetCommit, engine-side. Generation -1 with an empty member id is a
/// "simple" commit from a consumer that does not use group membership.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub group: String,
    pub member_id: String,
    pub generation: i32,
    pub instance_id: Option<String>,
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
}

/// A ListGroups row.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupListing {
    pub group: String,
    pub protocol_type: String,
    pub state: &'static str,
}

/// A DescribeGroups member.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the group's chosen protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A DescribeGroups answer; unknown groups are reported as "Dead", as Kafka does.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupDescription {
    pub group: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

async fn settle<T>(reply: Reply<Result<T, EngineError>>) -> Result<T, EngineError> {
    match reply {
        Reply::Now(r) => r,
        Reply::Later(rx) => rx.await.unwrap_or(Err(EngineError::ShuttingDown)),
    }
}

fn now_ms() -> i64 {
    crate::types::TimestampMs::now().0
}

/// The `__consumer_offsets` partition of `group`.
/// OffsetDelete's outcome per partition.
pub type OffsetsDeleted = Vec<(TopicPartition, Result<(), EngineError>)>;

pub(crate) fn offsets_tp(group: &str) -> TopicPartition {
    TopicPartition {
        topic: OFFSETS_TOPIC.to_string(),
        partition: offsets_partition_of(group),
    }
}

impl Shard {
    fn offsets_tp(group: &str) -> TopicPartition {
        offsets_tp(group)
    }

    /// Runs `f` on the shard that coordinates `group`.
    pub(super) fn on_group<R, F, Fut>(
        self: &Rc<Self>,
        group: &str,
        f: F,
    ) -> LocalFuture<Result<R, EngineError>>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, EngineError>> + 'static,
    {
        let checked = self.check_coordinator(group);
        self.on_owner_if(checked, &Self::offsets_tp(group), f)
    }

    /// Runs `f` on the shard that owns `tp` once `checked` is fine (a
    /// coordinator's routing: the partition that holds its state).
    pub(super) fn on_owner_if<R, F, Fut>(
        self: &Rc<Self>,
        checked: Result<(), EngineError>,
        tp: &TopicPartition,
        f: F,
    ) -> LocalFuture<Result<R, EngineError>>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, EngineError>> + 'static,
    {
        if let Err(e) = checked {
            return Box::pin(async move { Err(e) });
        }
        let owner = shard_of(tp, self.shards());
        if owner == self.id {
            return Box::pin(f(self.clone()));
        }
        let fut = self.invoke_on(owner, f);
        Box::pin(async move { fut.await? })
    }

    /// Runs `f` on the group, creating it for the call. A group the call leaves as
    /// new as it found it is not kept: a heartbeat, SyncGroup or LeaveGroup naming
    /// an unknown group must not make it exist (Kafka then still describes it
    /// "Dead" and answers DeleteGroups GROUP_ID_NOT_FOUND).
    fn with_group<T>(&self, group: &str, f: impl FnOnce(&mut Group) -> T) -> T {
        let mut groups = self.groups.borrow_mut();
        let existed = groups.contains_key(group);
        let g = groups
            .entry(group.to_string())
            .or_insert_with(|| Group::new(group.to_string()));
        let r = f(g);
        if !existed && g.is_new() {
            groups.remove(group);
        }
        r
    }

    pub fn join_group(self: &Rc<Self>, req: JoinRequest) -> LocalFuture<JoinResult> {
        let group = req.group.clone();
        self.on_group(&group, move |s| {
            let cfg = s.shared.config.group.clone();
            let reply = s.with_group(&req.group.clone(), |g| g.join(req, &cfg, Instant::now()));
            settle(reply)
        })
    }

    pub fn sync_group(
        self: &Rc<Self>,
        group: String,
        member: String,
        generation: i32,
        instance: Option<String>,
        assignments: Vec<(String, Bytes)>,
    ) -> LocalFuture<SyncResult> {
        self.on_group(&group.clone(), move |s| {
            let now = Instant::now();
            let reply = s.with_group(&group, |g| {
                g.sync(&member, generation, instance.as_deref(), assignments, now)
            });
            settle(reply)
        })
    }

    pub fn heartbeat(
        self: &Rc<Self>,
        group: String,
        member: String,
        generation: i32,
        instance: Option<String>,
    ) -> LocalFuture<Result<(), EngineError>> {
        self.on_group(&group.clone(), move |s| {
            let r = s.with_group(&group, |g| {
                g.heartbeat(&member, generation, instance.as_deref(), Instant::now())
            });
            async move { r }
        })
    }

    /// Removes members (member id, or instance id for static members); one result each.
    pub fn leave_group(
        self: &Rc<Self>,
        group: String,
        members: Vec<(String, Option<String>)>,
    ) -> LocalFuture<Result<Vec<Result<(), EngineError>>, EngineError>> {
        self.on_group(&group.clone(), move |s| {
            let cfg = s.shared.config.group.clone();
            let now = Instant::now();
            let r = s.with_group(&group, |g| {
                members
                    .iter()
                    .map(|(id, inst)| g.leave(id, inst.as_deref(), &cfg, now))
                    .collect()
            });
            async move { Ok(r) }
        })
    }

    /// Validates, appends durably, then applies an offset commit (all or nothing).
    pub fn commit_offsets(
        self: &Rc<Self>,
        req: CommitRequest,
    ) -> LocalFuture<Result<(), EngineError>> {
        self.on_group(&req.group.clone(), move |s| async move {
            // Kafka: only a "simple" commit (generation < 0) creates a group; a
            // member's commit to a group that does not exist is ILLEGAL_GENERATION.
            if req.generation >= 0 && !s.groups.borrow().contains_key(&req.group) {
                return Err(EngineError::IllegalGeneration);
            }
            s.with_group(&req.group, |g| {
                g.check_commit(&req.member_id, req.generation, req.instance_id.as_deref())
            })?;
            if req.offsets.is_empty() {
                return Ok(());
            }
            let batch = Bytes::from(group_log::commit_batch(&req.group, &req.offsets, now_ms()));
            s.produce_local(&Self::offsets_tp(&req.group), &batch, Acks::All)
                .await
                .map_err(as_coordinator_error)?;
            s.with_group(&req.group, |g| g.offsets.extend(req.offsets));
            Ok(())
        })
    }

    /// Committed offsets of `tps`, or of every partition the group committed when `None`.
    pub fn fetch_offsets(
        self: &Rc<Self>,
        group: String,
        tps: Option<Vec<TopicPartition>>,
    ) -> LocalFuture<Result<CommittedOffsets, EngineError>> {
        self.on_group(&group.clone(), move |s| {
            let groups = s.groups.borrow();
            let committed = groups.get(&group).map(|g| &g.offsets);
            let r = match tps {
                Some(tps) => tps
                    .into_iter()
                    .map(|tp| {
                        let c = committed.and_then(|o| o.get(&tp).cloned());
                        (tp, c)
                    })
                    .collect(),
                None => committed.map_or_else(Vec::new, |o| {
                    o.iter()
                        .map(|(tp, c)| (tp.clone(), Some(c.clone())))
                        .collect()
                }),
            };
            async move { Ok(r) }
        })
    }

    /// Every group on every shard.
    pub async fn list_groups(self: &Rc<Self>) -> Vec<GroupListing> {
        let listed = self
            .invoke_on_all(|s| async move {
                s.groups
                    .borrow()
                    .values()
                    .map(|g| GroupListing {
                        group: g.id.clone(),
                        protocol_type: g.protocol_type.clone().unwrap_or_default(),
                        state: g.state.kafka_name(),
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let mut all: Vec<GroupListing> = listed.into_iter().flatten().flatten().collect();
        all.sort_by(|a, b| a.group.cmp(&b.group));
        all
    }

    pub fn describe_group(
        self: &Rc<Self>,
        group: String,
    ) -> LocalFuture<Result<GroupDescription, EngineError>> {
        self.on_group(&group.clone(), move |s| {
            let groups = s.groups.borrow();
            let d = match groups.get(&group) {
                None => GroupDescription {
                    group,
                    state: "Dead",
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                },
                Some(g) => describe(g),
            };
            async move { Ok(d) }
        })
    }

    /// Deletes an empty group and its committed offsets (tombstones in the log).
    pub fn delete_group(self: &Rc<Self>, group: String) -> LocalFuture<Result<(), EngineError>> {
        self.on_group(&group.clone(), move |s| async move {
            let tps: Vec<TopicPartition> = {
                let groups = s.groups.borrow();
                let g = groups.get(&group).ok_or(EngineError::GroupIdNotFound)?;
                if !g.members.is_empty() || g.state != GroupState::Empty {
                    return Err(EngineError::NonEmptyGroup);
                }
                g.offsets.keys().cloned().collect()
            };
            let batch = Bytes::from(group_log::tombstone_batch(&group, &tps, true, now_ms()));
            s.produce_local(&Self::offsets_tp(&group), &batch, Acks::All)
                .await
                .map_err(as_coordinator_error)?;
            s.groups.borrow_mut().remove(&group);
            Ok(())
        })
    }

    /// OffsetDelete: removes the group's committed offsets of `tps`
    /// (tombstones in the log first), as Kafka decides it: any partition of
    /// an empty group; of a consumer group with members, only partitions of
    /// topics no member subscribes to (the others get
    /// GROUP_SUBSCRIBED_TO_TOPIC); a non-empty group of another protocol
    /// type is NON_EMPTY_GROUP as a whole.
    pub fn delete_offsets(
        self: &Rc<Self>,
        group: String,
        tps: Vec<TopicPartition>,
    ) -> LocalFuture<Result<OffsetsDeleted, EngineError>> {
        self.on_group(&group.clone(), move |s| async move {
            let (results, doomed) = {
                let groups = s.groups.borrow();
                let g = groups.get(&group).ok_or(EngineError::GroupIdNotFound)?;
                let subscribed = match (g.state, g.subscribed_topics()) {
                    (GroupState::Empty, _) => Default::default(),
                    (_, Some(topics)) => topics,
                    (_, None) => return Err(EngineError::NonEmptyGroup),
                };
                let results: Vec<_> = (tps.into_iter())
                    .map(|tp| {
                        let r = match subscribed.contains(&tp.topic) {
                            true => Err(EngineError::GroupSubscribedToTopic),
                            false => Ok(()),
                        };
                        (tp, r)
                    })
                    .collect();
                let doomed: Vec<TopicPartition> = (results.iter())
                    .filter(|(tp, r)| r.is_ok() && g.offsets.contains_key(tp))
                    .map(|(tp, _)| tp.clone())
                    .collect();
                (results, doomed)
            };
            if !doomed.is_empty() {
                let batch =
                    Bytes::from(group_log::tombstone_batch(&group, &doomed, false, now_ms()));
                s.produce_local(&Self::offsets_tp(&group), &batch, Acks::All)
                    .await
                    .map_err(as_coordinator_error)?;
                s.with_group(&group, |g| {
                    for tp in &doomed {
                        g.offsets.remove(tp);
                    }
                });
            }
            Ok(results)
        })
    }

    /// Expires members and completes due rebalances; stores the membership
    /// of groups that became Stable or Empty; forgets groups left with
    /// nothing (and their stored membership).
    pub(crate) fn tick_groups(self: &Rc<Self>) {
        let cfg = &self.shared.config.group;
        let now = Instant::now();
        let mut writes = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            for g in groups.values_mut() {
                g.tick(cfg, now);
                if let Some(m) = g.membership_to_store() {
                    g.persisted = Some((m.generation, !m.members.is_empty()));
                    writes.push((g.id.clone(), Some(m)));
                }
            }
            groups.retain(|id, g| {
                let forget = g.state == GroupState::Empty && g.is_empty_of_everything();
                if forget && g.persisted.is_some() {
                    writes.push((id.clone(), None));
                }
                !forget
            });
        }
        for (group, m) in writes {
            self.store_membership(group, m);
        }
    }

    /// Appends a group's metadata record (a tombstone for `None`) in the
    /// background. Best effort, as the answer to the SyncGroup has gone: if
    /// it is lost, the group's members rejoin after a restart, as they would
    /// without it; a failed write is retried at the next change.
    fn store_membership(self: &Rc<Self>, group: String, m: Option<Membership>) {
        let me = self.clone();
        compio::runtime::spawn(async move {
            let batch = Bytes::from(group_log::membership_batch(&group, m.as_ref(), now_ms()));
            if let Err(e) = me
                .produce_local(&Self::offsets_tp(&group), &batch, Acks::All)
                .await
            {
                tracing::debug!(group = %group, error = %e, "cannot store the group's membership");
                if let Some(g) = me.groups.borrow_mut().get_mut(&group) {
                    g.persisted = None;
                }
            }
        })
        .detach();
    }
}

/// As Kafka's `GroupMetadata.summary`: the protocol and each member's metadata
/// and assignment are shown only for a Stable group; mid-rebalance they are not
/// settled yet, and the answer leaves them empty.
fn describe(g: &Group) -> GroupDescription {
    let stable = g.state == GroupState::Stable;
    let protocol = g.protocol.clone().filter(|_| stable).unwrap_or_default();
    let members = g
        .members
        .values()
        .map(|m| MemberDescription {
            member_id: m.id.clone(),
            instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            metadata: if stable {
                m.metadata_for(&protocol)
            } else {
                Bytes::new()
            },
            assignment: if stable {
                m.assignment.clone()
            } else {
                Bytes::new()
            },
        })
        .collect();
    GroupDescription {
        group: g.id.clone(),
        state: g.state.kafka_name(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol,
        members,
    }
}

/// What a group's client is told when the coordinator's own append to
/// `__consumer_offsets` fails, as Kafka maps it (`GroupMetadataManager`): the
/// partition moved or its disk failed → NOT_COORDINATOR (find the new one);
/// too few replicas or no quorum → COORDINATOR_NOT_AVAILABLE (retry). Both
/// are retriable; the partition's own errors are not what a committing
/// consumer expects (the Java client fails `commitSync` on them).
pub(crate) fn as_coordinator_error(e: EngineError) -> EngineError {
    match e {
        EngineError::NotLeaderOrFollower
        | EngineError::ShuttingDown
        | EngineError::Storage(_)
        | EngineError::DiskFailure(_) => EngineError::NotCoordinator,
        EngineError::UnknownTopicOrPartition
        | EngineError::NotEnoughReplicas { .. }
        | EngineError::NoQuorum(_) => EngineError::CoordinatorNotAvailable,
        other => other,
    }
}
