//! The cluster's metadata as a state machine: records, and the image they build.
//!
//! Every change to cluster metadata is a [`Proposal`] (one Raft entry) of one or
//! more [`MetaRecord`]s, applied all or nothing. [`ClusterImage::apply`] is a pure
//! function of the image and the proposal: every broker applies the same entries
//! in the same order and reaches the same image, and the decisions that follow
//! from an event (which replica leads once a broker is fenced, the new leader
//! epoch) are made here, inside the apply, not by whoever proposed it. So the
//! same code runs under the engine and under a simulator.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::{EngineConfig, TopicConfig};
use crate::error::EngineError;
use crate::meta::acls::{AclBinding, AclFilter, Acls};
use crate::meta::broker_configs::BrokerConfigs;
use crate::meta::catalog::{Catalog, TopicMeta};
use crate::meta::scram::{ScramChange, ScramCredentials};

/// A broker's node id (Kafka's `node.id`).
pub type NodeId = i32;

/// No leader: the partition is offline.
pub const NO_LEADER: NodeId = -1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaRecord {
    /// A broker (re)joined: its address, and a fresh incarnation per start.
    /// Unfences it and gives it back the leadership of every partition that
    /// had no leader and still counts it in the ISR.
    RegisterBroker {
        node: NodeId,
        host: String,
        port: i32,
        rack: Option<String>,
        incarnation: u64,
        /// Every client listener (`host`/`port` is the first).
        #[serde(default)]
        endpoints: Vec<Endpoint>,
    },
    /// The broker stopped heartbeating (or is shutting down): its leaderships
    /// move to another ISR member and it leaves every ISR it was in.
    FenceBroker {
        node: NodeId,
    },
    CreateTopic {
        name: String,
        id: [u8; 16],
        configs: BTreeMap<String, String>,
        /// Replicas of each partition, preferred leader first.
        replicas: Vec<Vec<NodeId>>,
    },
    AddPartitions {
        name: String,
        replicas: Vec<Vec<NodeId>>,
    },
    DeleteTopic {
        name: String,
    },
    /// A topic's config overrides change (validated by the proposer against
    /// the overrides it saw; applied to the current ones).
    AlterTopicConfigs {
        name: String,
        change: crate::config::ConfigChange,
    },
    /// A partition's leader changes its ISR (Kafka's AlterPartition): applied
    /// only if `leader` still leads in `leader_epoch`, and the new ISR holds
    /// the leader and only replicas.
    AlterPartition {
        topic: String,
        partition: u32,
        leader: NodeId,
        leader_epoch: i32,
        /// The partition epoch the leader's ISR view is from.
        #[serde(default)]
        partition_epoch: i32,
        isr: Vec<NodeId>,
    },
    /// The controller moves a partition's leadership to `leader` (its
    /// preferred replica, once back in the ISR): applied only if `leader` is
    /// live and in the ISR; the epoch is bumped.
    ElectLeader {
        topic: String,
        partition: u32,
        leader: NodeId,
    },
    /// Unclean leader election (the topic's `unclean.leader.election.enable`,
    /// decided by the active controller): a partition whose ISR has no live
    /// member is led by `leader`, a live replica outside it, which becomes the
    /// whole ISR. Records only it held may be lost; that is the setting's
    /// meaning. Applied only while the partition has no leader and no ISR
    /// member is live.
    UncleanElection {
        topic: String,
        partition: u32,
        leader: NodeId,
    },
    /// Broker `node` (in its start `incarnation`) lost its copies of these
    /// partitions (a failed log directory, a write or fsync that failed): they
    /// are offline until it starts again, it leaves their ISRs (except as the
    /// last member) and its leaderships pass to another in-sync replica.
    MarkReplicasOffline {
        node: NodeId,
        incarnation: u64,
        partitions: Vec<(String, u32)>,
    },
    /// AlterPartitionReassignments for one partition: start moving it to
    /// `target` (its replicas become the target plus the old ones being
    /// removed, and the new ones start following), or cancel the move in
    /// progress (`None`: back to the replicas it had). The leader epoch is
    /// bumped so the leader tracks the new replica set.
    Reassign {
        topic: String,
        partition: u32,
        target: Option<Vec<NodeId>>,
    },
    /// The controller ends a reassignment whose target replicas are all in
    /// sync: the removed replicas leave (and their brokers delete their
    /// copies), a leader outside the target hands over to an in-sync one.
    CompleteReassignment {
        topic: String,
        partition: u32,
    },
    /// A block of producer ids for `node`: the next `count` unallocated ids.
    AllocateProducerIds {
        node: NodeId,
        count: i64,
    },
    /// Dynamic broker settings change, for broker `node` or (`None`) as the
    /// cluster-wide default (checked by the proposer; applied to the
    /// settings current at the apply).
    AlterBrokerConfigs {
        node: Option<NodeId>,
        change: crate::config::ConfigChange,
    },
    /// AlterUserScramCredentials: credentials added, replaced or deleted,
    /// in order (a deletion of a credential that does not exist refuses
    /// the whole record).
    AlterScramCredentials {
        changes: Vec<ScramChange>,
    },
    /// CreateAcls (`created`) and DeleteAcls (every binding matching one of
    /// `deleted`).
    AlterAcls {
        created: Vec<AclBinding>,
        deleted: Vec<AclFilter>,
    },
    /// UnregisterBroker: a retired broker leaves the cluster. Refused while
    /// it is live or still holds a replica.
    UnregisterBroker {
        node: NodeId,
    },
}

/// One Raft entry: records applied together, and who proposed them so that the
/// proposer can be told the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub origin: NodeId,
    /// The proposer's start: a restarted broker never takes an old outcome
    /// for one of its new proposals.
    pub incarnation: u64,
    pub seq: u64,
    pub records: Vec<MetaRecord>,
}

/// What applying a proposal produced, for its proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The first id of an allocated producer-id block.
    ProducerIds(i64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub node: NodeId,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub incarnation: u64,
    pub fenced: bool,
    /// Every client listener, by name (older images have none: `host`/`port` only).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

impl BrokerInfo {
    /// Where clients of listener `name` reach this broker: that listener's
    /// advertised address, or `host`/`port` when it has none of that name.
    pub fn endpoint(&self, name: &str) -> (&str, i32) {
        (self.endpoints.iter().find(|e| e.name == name))
            .map_or((self.host.as_str(), self.port), |e| {
                (e.host.as_str(), e.port)
            })
    }
}

/// One advertised listener of a broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: i32,
    /// Kafka's security protocol id (0 PLAINTEXT, 1 SSL, 2 SASL_PLAINTEXT, 3 SASL_SSL).
    pub protocol: i16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub leader_epoch: i32,
    /// Bumped by every change of leader or ISR (Kafka's partition epoch): an
    /// AlterPartition made against an older one is refused.
    #[serde(default)]
    pub partition_epoch: i32,
    /// Replicas whose copy is offline on a live broker (its disk failed or a
    /// write could not be made durable): they neither lead nor join the ISR
    /// until that broker starts again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline: Vec<NodeId>,
    /// A reassignment in progress (Kafka's adding and removing replicas):
    /// `replicas` is the target followed by the replicas being removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<NodeId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<NodeId>,
}

impl PartitionInfo {
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas it had before the reassignment in progress.
    fn original_replicas(&self) -> Vec<NodeId> {
        (self.replicas.iter())
            .filter(|n| !self.adding.contains(n))
            .copied()
            .collect()
    }

    /// The replicas it is moving to.
    pub fn target_replicas(&self) -> Vec<NodeId> {
        (self.replicas.iter())
            .filter(|n| !self.removing.contains(n))
            .copied()
            .collect()
    }

    /// A new replica set: the ISR keeps only its members, and a leader
    /// outside it hands over to an in-sync, usable one (none: offline).
    /// Epochs are bumped either way, so the leader rebuilds its view.
    fn set_replicas(&mut self, replicas: Vec<NodeId>, live: &[NodeId]) {
        self.isr.retain(|n| replicas.contains(n));
        if !replicas.contains(&self.leader) {
            self.leader = (self.isr.iter().copied())
                .find(|n| live.contains(n) && !self.offline.contains(n))
                .unwrap_or(NO_LEADER);
        }
        if self.isr.is_empty() && self.leader != NO_LEADER {
            self.isr.push(self.leader);
        }
        self.offline.retain(|n| replicas.contains(n));
        self.replicas = replicas;
        self.leader_epoch += 1;
        self.partition_epoch += 1;
    }

    /// Starts (or replaces, or with `None` cancels) a reassignment, as
    /// Kafka's controller does: the replicas become the target followed by
    /// the original ones not in it.
    fn reassign(
        &mut self,
        target: Option<&[NodeId]>,
        registered: &[NodeId],
        live: &[NodeId],
    ) -> Result<(), EngineError> {
        let original = self.original_replicas();
        let Some(target) = target else {
            if !self.reassigning() {
                return Err(EngineError::NoReassignmentInProgress);
            }
            self.adding.clear();
            self.removing.clear();
            self.set_replicas(original, live);
            return Ok(());
        };
        let mut seen = std::collections::BTreeSet::new();
        if target.is_empty() || !target.iter().all(|n| seen.insert(*n)) {
            return Err(EngineError::InvalidReplicaAssignment(format!(
                "target replicas {target:?} must be distinct and not empty"
            )));
        }
        if let Some(n) = target.iter().find(|n| !registered.contains(n)) {
            return Err(EngineError::InvalidReplicaAssignment(format!(
                "broker {n} is not registered"
            )));
        }
        let adding: Vec<NodeId> = (target.iter())
            .filter(|n| !original.contains(n))
            .copied()
            .collect();
        let removing: Vec<NodeId> = (original.iter())
            .filter(|n| !target.contains(n))
            .copied()
            .collect();
        let mut replicas = target.to_vec();
        replicas.extend(&removing);
        self.adding = adding;
        self.removing = removing;
        let same_set = {
            let (mut a, mut b) = (replicas.clone(), self.replicas.clone());
            a.sort();
            b.sort();
            a == b
        };
        if same_set {
            // The replicas it has already (in another order, perhaps: the
            // preferred leader changes).
            self.replicas = replicas;
            self.partition_epoch += 1;
            return Ok(());
        }
        // A new move, or a move replaced by another (even one back to the
        // original replicas): replicas no longer wanted leave the ISR.
        self.set_replicas(replicas, live);
        Ok(())
    }

    /// Ends a reassignment once every target replica is in sync.
    fn complete_reassignment(&mut self, live: &[NodeId]) -> Result<(), EngineError> {
        let target = self.target_replicas();
        if !self.reassigning() || !target.iter().all(|n| self.isr.contains(n)) {
            return Err(EngineError::InvalidRequest(
                "the reassignment is not in progress or its target is not in sync".into(),
            ));
        }
        self.adding.clear();
        self.removing.clear();
        self.set_replicas(target, live);
        Ok(())
    }

    /// Whether `node`'s copy can lead or be in sync, given who is live.
    fn usable(&self, node: NodeId, live: &[NodeId]) -> bool {
        live.contains(&node) && !self.offline.contains(&node)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub id: [u8; 16],
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionInfo>,
}

/// Everything the quorum has committed, as of Raft index `applied`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterImage {
    pub applied: u64,
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
    pub next_producer_id: i64,
    /// Dynamic broker settings (cluster-wide default and per broker).
    #[serde(default)]
    pub broker_configs: BrokerConfigs,
    /// SCRAM credentials (AlterUserScramCredentials).
    #[serde(default)]
    pub scram: ScramCredentials,
    /// ACLs (CreateAcls, DeleteAcls).
    #[serde(default)]
    pub acls: Acls,
}

impl ClusterImage {
    /// Applies one committed entry at Raft index `index`. A proposal that is
    /// refused (its topic exists already, say) changes nothing but `applied`.
    pub fn apply(&mut self, index: u64, p: &Proposal) -> Result<Applied, EngineError> {
        let mut next = self.clone();
        next.applied = index;
        let mut outcome = Applied::Done;
        for r in &p.records {
            if let Some(o) = next.apply_record(r).inspect_err(|_| self.applied = index)? {
                outcome = o;
            }
        }
        *self = next;
        Ok(outcome)
    }

    fn apply_record(&mut self, r: &MetaRecord) -> Result<Option<Applied>, EngineError> {
        match r {
            MetaRecord::RegisterBroker {
                node,
                host,
                port,
                rack,
                incarnation,
                endpoints,
            } => {
                let restarted =
                    (self.brokers.get(node)).is_none_or(|b| b.incarnation != *incarnation);
                if restarted {
                    // A new start opens its copies again.
                    for t in self.topics.values_mut() {
                        for p in &mut t.partitions {
                            p.offline.retain(|n| n != node);
                        }
                    }
                }
                self.brokers.insert(
                    *node,
                    BrokerInfo {
                        node: *node,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        incarnation: *incarnation,
                        fenced: false,
                        endpoints: endpoints.clone(),
                    },
                );
                self.lead_orphans(*node);
            }
            MetaRecord::FenceBroker { node } => {
                let Some(b) = self.brokers.get_mut(node) else {
                    return Ok(None);
                };
                b.fenced = true;
                self.move_leaders_from(*node);
            }
            MetaRecord::CreateTopic {
                name,
                id,
                configs,
                replicas,
            } => {
                if self.topics.contains_key(name) {
                    return Err(EngineError::TopicAlreadyExists);
                }
                let partitions = replicas.iter().map(|r| self.new_partition(r)).collect();
                self.topics.insert(
                    name.clone(),
                    TopicInfo {
                        name: name.clone(),
                        id: *id,
                        configs: configs.clone(),
                        partitions,
                    },
                );
            }
            MetaRecord::AddPartitions { name, replicas } => {
                let new: Vec<PartitionInfo> =
                    replicas.iter().map(|r| self.new_partition(r)).collect();
                let t = (self.topics.get_mut(name)).ok_or(EngineError::UnknownTopicOrPartition)?;
                t.partitions.extend(new);
            }
            MetaRecord::DeleteTopic { name } => {
                self.topics
                    .remove(name)
                    .ok_or(EngineError::UnknownTopicOrPartition)?;
            }
            MetaRecord::AlterTopicConfigs { name, change } => {
                let t = (self.topics.get_mut(name)).ok_or(EngineError::UnknownTopicOrPartition)?;
                t.configs = change.applied_to(&t.configs);
            }
            MetaRecord::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let p = partition_mut(&mut self.topics, topic, *partition)?;
                if p.leader != *leader || p.leader_epoch != *leader_epoch {
                    return Err(EngineError::NotLeaderOrFollower);
                }
                if p.partition_epoch != *partition_epoch {
                    return Err(EngineError::StalePartitionEpoch {
                        current: p.partition_epoch,
                        given: *partition_epoch,
                    });
                }
                if !isr.contains(leader) || !isr.iter().all(|n| p.replicas.contains(n)) {
                    return Err(EngineError::InvalidRequest(format!(
                        "ISR {isr:?} of {topic}-{partition} must hold leader {leader} and only replicas {:?}",
                        p.replicas
                    )));
                }
                // A fenced broker never joins an ISR (KIP-841).
                let fenced = |n: &NodeId| self.brokers.get(n).is_none_or(|b| b.fenced);
                if let Some(n) = isr.iter().find(|n| !p.isr.contains(n) && fenced(n)) {
                    return Err(EngineError::InvalidRequest(format!(
                        "broker {n} is fenced and cannot join the ISR of {topic}-{partition}"
                    )));
                }
                if let Some(n) = isr
                    .iter()
                    .find(|n| !p.isr.contains(n) && p.offline.contains(n))
                {
                    return Err(EngineError::InvalidRequest(format!(
                        "broker {n}'s copy of {topic}-{partition} is offline and cannot join its ISR"
                    )));
                }
                p.isr = isr.clone();
                p.partition_epoch += 1;
            }
            MetaRecord::ElectLeader {
                topic,
                partition,
                leader,
            } => {
                let live = self.is_live(*leader);
                let p = partition_mut(&mut self.topics, topic, *partition)?;
                if !live || !p.isr.contains(leader) || p.offline.contains(leader) {
                    return Err(EngineError::InvalidRequest(format!(
                        "broker {leader} cannot lead {topic}-{partition}: not live, not in the ISR or offline"
                    )));
                }
                if p.leader != *leader {
                    p.leader = *leader;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
            MetaRecord::Reassign {
                topic,
                partition,
                target,
            } => {
                let live = self.live_brokers();
                let registered: Vec<NodeId> = self.brokers.keys().copied().collect();
                let p = partition_mut(&mut self.topics, topic, *partition)?;
                p.reassign(target.as_deref(), &registered, &live)?;
            }
            MetaRecord::CompleteReassignment { topic, partition } => {
                let live = self.live_brokers();
                let p = partition_mut(&mut self.topics, topic, *partition)?;
                p.complete_reassignment(&live)?;
            }
            MetaRecord::UncleanElection {
                topic,
                partition,
                leader,
            } => {
                let live = self.live_brokers();
                let p = partition_mut(&mut self.topics, topic, *partition)?;
                let any_isr_live = p.isr.iter().any(|n| p.usable(*n, &live));
                let usable = p.usable(*leader, &live);
                if p.leader != NO_LEADER || any_isr_live || !usable || !p.replicas.contains(leader)
                {
                    return Err(EngineError::InvalidRequest(format!(
                        "no unclean election of {leader} for {topic}-{partition}: it has a leader \
                         or a live ISR member, or {leader} is not a live replica"
                    )));
                }
                p.leader = *leader;
                p.isr = vec![*leader];
                p.leader_epoch += 1;
                p.partition_epoch += 1;
            }
            MetaRecord::MarkReplicasOffline {
                node,
                incarnation,
                partitions,
            } => {
                if (self.brokers.get(node)).is_none_or(|b| b.incarnation != *incarnation) {
                    return Err(EngineError::InvalidRequest(format!(
                        "broker {node}'s offline report is from another start"
                    )));
                }
                let live = self.live_brokers();
                for (topic, partition) in partitions {
                    let Ok(p) = partition_mut(&mut self.topics, topic, *partition) else {
                        continue; // deleted since
                    };
                    if !p.replicas.contains(node) || p.offline.contains(node) {
                        continue;
                    }
                    p.offline.push(*node);
                    if p.isr.len() > 1 {
                        p.isr.retain(|n| n != node);
                    }
                    if p.leader == *node {
                        p.leader = (p.isr.iter().copied())
                            .find(|n| p.usable(*n, &live))
                            .unwrap_or(NO_LEADER);
                        p.leader_epoch += 1;
                    }
                    p.partition_epoch += 1;
                }
            }
            MetaRecord::AllocateProducerIds { count, .. } => {
                let first = self.next_producer_id;
                self.next_producer_id = first.saturating_add(*count);
                return Ok(Some(Applied::ProducerIds(first)));
            }
            MetaRecord::AlterBrokerConfigs { node, change } => {
                self.broker_configs = self.broker_configs.changed(*node, change);
            }
            MetaRecord::AlterScramCredentials { changes } => {
                for c in changes {
                    self.scram.check(c)?;
                    self.scram = self.scram.changed(std::slice::from_ref(c));
                }
            }
            MetaRecord::AlterAcls { created, deleted } => {
                self.acls = self.acls.changed(created, deleted);
            }
            MetaRecord::UnregisterBroker { node } => {
                let b =
                    (self.brokers.get(node)).ok_or(EngineError::BrokerIdNotRegistered(*node))?;
                if !b.fenced {
                    return Err(EngineError::InvalidRequest(format!(
                        "broker {node} is running: stop it before it is unregistered"
                    )));
                }
                // Fencing took it out of every ISR it could leave and moved
                // its leaderships; replicas still assigned to it stay
                // offline until they are reassigned, as in Kafka.
                self.brokers.remove(node);
            }
        }
        Ok(None)
    }

    fn is_live(&self, node: NodeId) -> bool {
        self.brokers.get(&node).is_some_and(|b| !b.fenced)
    }

    /// A new partition's state: the live replicas are the ISR, the first of
    /// them leads. With none live it starts offline, every replica in its ISR
    /// (none has data the others lack).
    fn new_partition(&self, replicas: &[NodeId]) -> PartitionInfo {
        let live: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|&n| self.is_live(n))
            .collect();
        let isr = if live.is_empty() {
            replicas.to_vec()
        } else {
            live
        };
        let leader = isr
            .iter()
            .copied()
            .find(|&n| self.is_live(n))
            .unwrap_or(NO_LEADER);
        PartitionInfo {
            replicas: replicas.to_vec(),
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            offline: Vec::new(),
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// `node` is fenced: it leaves every ISR (except as the last member, which
    /// Kafka keeps so that the partition can come back without an unclean
    /// election), and its leaderships pass to a live ISR member, or to none.
    fn move_leaders_from(&mut self, node: NodeId) {
        let live: Vec<NodeId> = (self.brokers.values())
            .filter(|b| !b.fenced)
            .map(|b| b.node)
            .collect();
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                let before = (p.leader, p.isr.len());
                if p.isr.len() > 1 {
                    p.isr.retain(|&n| n != node);
                }
                if p.leader == node {
                    p.leader = (p.isr.iter().copied())
                        .find(|n| p.usable(*n, &live))
                        .unwrap_or(NO_LEADER);
                    p.leader_epoch += 1;
                }
                if (p.leader, p.isr.len()) != before {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// `node` is back: partitions without a leader whose ISR holds it are led
    /// by it again.
    fn lead_orphans(&mut self, node: NodeId) {
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                if p.leader == NO_LEADER && p.isr.contains(&node) && !p.offline.contains(&node) {
                    p.leader = node;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// Reassignments whose target replicas are all in sync: what the
    /// controller completes.
    pub fn reassignments_to_complete(&self) -> Vec<MetaRecord> {
        let mut out = Vec::new();
        for t in self.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.reassigning() && p.target_replicas().iter().all(|n| p.isr.contains(n)) {
                    out.push(MetaRecord::CompleteReassignment {
                        topic: t.name.clone(),
                        partition: i as u32,
                    });
                }
            }
        }
        out
    }

    /// Partitions whose preferred replica (the first) is live and in the ISR
    /// but does not lead: what preferred-leader election would move.
    pub fn preferred_elections(&self) -> Vec<MetaRecord> {
        let mut out = Vec::new();
        for t in self.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                let usable = self.is_live(preferred) && !p.offline.contains(&preferred);
                if p.leader != preferred && usable && p.isr.contains(&preferred) {
                    out.push(MetaRecord::ElectLeader {
                        topic: t.name.clone(),
                        partition: i as u32,
                        leader: preferred,
                    });
                }
            }
        }
        out
    }

    /// Partitions with no leader and no live ISR member, of topics for which
    /// `allowed` says unclean election is enabled, that a live replica could
    /// lead: the elections the controller proposes.
    pub fn unclean_elections(&self, allowed: impl Fn(&TopicInfo) -> bool) -> Vec<MetaRecord> {
        let mut out = Vec::new();
        let live = self.live_brokers();
        for t in self.topics.values().filter(|t| allowed(t)) {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.leader != NO_LEADER || p.isr.iter().any(|n| p.usable(*n, &live)) {
                    continue;
                }
                if let Some(&leader) = p.replicas.iter().find(|n| p.usable(**n, &live)) {
                    out.push(MetaRecord::UncleanElection {
                        topic: t.name.clone(),
                        partition: i as u32,
                        leader,
                    });
                }
            }
        }
        out
    }

    /// What Kafka's ElectLeaders would do for one partition now: the record
    /// to propose, or why none is needed or possible. Preferred: the first
    /// replica takes over if it is live, online and in the ISR
    /// (PREFERRED_LEADER_NOT_AVAILABLE otherwise; ELECTION_NOT_NEEDED if it
    /// leads already). Unclean: only a partition without a leader, led by a
    /// live online replica, in-sync ones first (ELIGIBLE_LEADERS_NOT_AVAILABLE
    /// if there is none; ELECTION_NOT_NEEDED if it has a leader).
    pub fn election_for(
        &self,
        topic: &str,
        partition: u32,
        unclean: bool,
    ) -> Result<MetaRecord, EngineError> {
        let p = (self.partition(topic, partition)).ok_or(EngineError::UnknownTopicOrPartition)?;
        let live = self.live_brokers();
        let (topic, partition) = (topic.to_string(), partition);
        if unclean {
            if p.leader != NO_LEADER {
                return Err(EngineError::ElectionNotNeeded);
            }
            let in_isr_first = (p.replicas.iter()).filter(|n| p.isr.contains(n));
            let rest = (p.replicas.iter()).filter(|n| !p.isr.contains(n));
            let leader = (in_isr_first.chain(rest))
                .find(|&&n| p.usable(n, &live))
                .copied()
                .ok_or(EngineError::EligibleLeadersNotAvailable)?;
            return Ok(match p.isr.contains(&leader) {
                // The ISR member that came back takes it as a clean election.
                true => MetaRecord::ElectLeader {
                    topic,
                    partition,
                    leader,
                },
                false => MetaRecord::UncleanElection {
                    topic,
                    partition,
                    leader,
                },
            });
        }
        let preferred = *p
            .replicas
            .first()
            .ok_or(EngineError::UnknownTopicOrPartition)?;
        if p.leader == preferred {
            return Err(EngineError::ElectionNotNeeded);
        }
        if !p.usable(preferred, &live) || !p.isr.contains(&preferred) {
            return Err(EngineError::PreferredLeaderNotAvailable);
        }
        Ok(MetaRecord::ElectLeader {
            topic,
            partition,
            leader: preferred,
        })
    }

    pub fn live_brokers(&self) -> Vec<NodeId> {
        (self.brokers.values())
            .filter(|b| !b.fenced)
            .map(|b| b.node)
            .collect()
    }

    pub fn partition(&self, topic: &str, p: u32) -> Option<&PartitionInfo> {
        self.topics.get(topic)?.partitions.get(p as usize)
    }

    /// The topics as broker `node`'s shards know them, with its settings
    /// (`engine`'s static ones and the dynamic ones) resolved.
    pub fn catalog(&self, engine: &EngineConfig, node: NodeId) -> Catalog {
        let mut topics = HashMap::new();
        for t in self.topics.values() {
            topics.insert(
                t.name.clone(),
                TopicMeta {
                    name: t.name.clone(),
                    id: t.id,
                    partitions: t.partitions.len() as u32,
                    overrides: t.configs.clone(),
                    config: TopicConfig::default(),
                },
            );
        }
        let mut catalog = Catalog {
            topics,
            broker_configs: self.broker_configs.clone(),
            scram: std::sync::Arc::new(self.scram.clone()),
            acls: std::sync::Arc::new(self.acls.clone()),
            ..Catalog::default()
        };
        catalog.resolve(engine, node);
        catalog
    }
}

/// Partition `partition` of `topic` in `topics`, to change.
fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, TopicInfo>,
    topic: &str,
    partition: u32,
) -> Result<&'a mut PartitionInfo, EngineError> {
    (topics.get_mut(topic))
        .and_then(|t| t.partitions.get_mut(partition as usize))
        .ok_or(EngineError::UnknownTopicOrPartition)
}

/// Replicas for `count` new partitions numbered from `first` on the live
/// brokers `live` (sorted): partition p's replicas are `rf` consecutive
/// brokers starting at a per-topic offset plus p, so leaders spread evenly
/// and each broker's followers are spread over the others.
pub fn place_replicas(
    live: &[NodeId],
    topic: &str,
    first: u32,
    count: u32,
    rf: usize,
) -> Result<Vec<Vec<NodeId>>, EngineError> {
    if rf == 0 || rf > live.len() {
        return Err(EngineError::InvalidReplicationFactor(format!(
            "replication factor {rf} with {} live brokers",
            live.len()
        )));
    }
    let start = topic
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    Ok((first..first + count)
        .map(|p| {
            (0..rf)
                .map(|i| live[(start + p as usize + i) % live.len()])
                .collect()
        })
        .collect())
}

/// Rack-aware placement (`broker.rack`), as Kafka spreads replicas: the
/// live brokers are ordered alternating between racks, each partition's
/// leader is the next one in that order (so leaders spread evenly), and its
/// followers are the next brokers in order on racks the partition does not
/// use yet, then any. With at least `rf` racks no two replicas share one.
/// Without any rack it is [`place_replicas`].
pub fn place_replicas_racked(
    live: &[(NodeId, Option<String>)],
    topic: &str,
    first: u32,
    count: u32,
    rf: usize,
) -> Result<Vec<Vec<NodeId>>, EngineError> {
    if live.iter().all(|(_, r)| r.is_none()) {
        let nodes: Vec<NodeId> = live.iter().map(|(n, _)| *n).collect();
        return place_replicas(&nodes, topic, first, count, rf);
    }
    if rf == 0 || rf > live.len() {
        return Err(EngineError::InvalidReplicationFactor(format!(
            "replication factor {rf} with {} live brokers",
            live.len()
        )));
    }
    // Racks in name order, brokers in id order within each; then one from
    // each rack in turn.
    let mut racks: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for (n, r) in live {
        racks
            .entry(r.as_deref().unwrap_or(""))
            .or_default()
            .push(*n);
    }
    racks.values_mut().for_each(|v| v.sort());
    let mut order = Vec::with_capacity(live.len());
    for i in 0..racks.values().map(Vec::len).max().unwrap_or(0) {
        order.extend(racks.values().filter_map(|v| v.get(i)));
    }
    let rack_of: HashMap<NodeId, &str> = (live.iter())
        .map(|(n, r)| (*n, r.as_deref().unwrap_or("")))
        .collect();
    let start = topic
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    Ok((first..first + count)
        .map(|p| {
            let at = start + p as usize;
            let next = |i: usize| order[(at + i) % order.len()];
            let mut chosen = vec![next(0)];
            // Followers start a partition-dependent step further on, so a
            // broker's followers spread over the others.
            let shift = 1 + (p as usize / order.len()) % (order.len() - 1).max(1);
            let candidates: Vec<NodeId> = (0..order.len() - 1)
                .map(|i| next(shift + i))
                .filter(|n| *n != chosen[0])
                .collect();
            for pass in 0..2 {
                for &n in &candidates {
                    if chosen.len() == rf {
                        break;
                    }
                    let new_rack = !chosen.iter().any(|c| rack_of[c] == rack_of[&n]);
                    if !chosen.contains(&n) && (pass == 1 || new_rack) {
                        chosen.push(n);
                    }
                }
            }
            chosen
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigChange;

    #[test]
    fn racked_placement_spreads_replicas_over_racks_and_leaders_over_brokers() {
        let rack = |r: &str| Some(r.to_string());
        let live = vec![
            (1, rack("a")),
            (2, rack("a")),
            (3, rack("b")),
            (4, rack("b")),
            (5, rack("c")),
            (6, rack("c")),
        ];
        let placed = place_replicas_racked(&live, "orders", 0, 60, 3).unwrap();
        let rack_of = |n: NodeId| live.iter().find(|(m, _)| *m == n).unwrap().1.clone();
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for rs in &placed {
            assert_eq!(rs.len(), 3);
            let racks: std::collections::BTreeSet<_> = rs.iter().map(|n| rack_of(*n)).collect();
            assert_eq!(racks.len(), 3, "{rs:?} shares a rack");
            *leaders.entry(rs[0]).or_insert(0) += 1;
            for n in rs {
                *replicas.entry(*n).or_insert(0) += 1;
            }
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [10; 6]);
        assert!(
            replicas.values().all(|&c| (25..=35).contains(&c)),
            "{replicas:?}"
        );
        // Two racks, three replicas: both racks used, no broker twice.
        let two = &live[..4];
        for rs in place_replicas_racked(two, "t", 0, 8, 3).unwrap() {
            let distinct: std::collections::BTreeSet<_> = rs.iter().collect();
            assert_eq!(distinct.len(), 3);
            let racks: std::collections::BTreeSet<_> = rs.iter().map(|n| rack_of(*n)).collect();
            assert_eq!(racks.len(), 2, "{rs:?}");
        }
        // No racks: the plain placement.
        let bare: Vec<_> = (1..=3).map(|n| (n, None)).collect();
        assert_eq!(
            place_replicas_racked(&bare, "t", 0, 6, 2).unwrap(),
            place_replicas(&[1, 2, 3], "t", 0, 6, 2).unwrap()
        );
        assert!(place_replicas_racked(&live, "t", 0, 1, 7).is_err());
    }

    fn register(node: NodeId) -> MetaRecord {
        MetaRecord::RegisterBroker {
            node,
            host: "127.0.0.1".into(),
            port: 9000 + node,
            rack: None,
            incarnation: 1,
            endpoints: Vec::new(),
        }
    }

    fn apply(img: &mut ClusterImage, records: Vec<MetaRecord>) -> Result<Applied, EngineError> {
        let index = img.applied + 1;
        img.apply(
            index,
            &Proposal {
                origin: 1,
                incarnation: 1,
                seq: index,
                records,
            },
        )
    }

    /// Partition t-0's leader adds `node` to its ISR.
    fn join_isr(img: &mut ClusterImage, node: NodeId) {
        let p = img.partition("t", 0).unwrap().clone();
        let mut isr = p.isr.clone();
        isr.push(node);
        apply(
            img,
            vec![MetaRecord::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr,
            }],
        )
        .unwrap();
    }

    fn three_brokers_one_topic() -> ClusterImage {
        let mut img = ClusterImage::default();
        apply(&mut img, vec![register(1), register(2), register(3)]).unwrap();
        let replicas = place_replicas(&img.live_brokers(), "t", 0, 6, 3).unwrap();
        apply(
            &mut img,
            vec![MetaRecord::CreateTopic {
                name: "t".into(),
                id: [7; 16],
                configs: BTreeMap::new(),
                replicas,
            }],
        )
        .unwrap();
        img
    }

    #[test]
    fn placement_spreads_leaders_and_replicas() {
        let r = place_replicas(&[1, 2, 3], "t", 0, 6, 2).unwrap();
        let mut leaders = BTreeMap::new();
        for rs in &r {
            assert_eq!(rs.len(), 2);
            assert_ne!(rs[0], rs[1]);
            *leaders.entry(rs[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        assert!(place_replicas(&[1, 2], "t", 0, 1, 3).is_err());
    }

    #[test]
    fn a_reassignment_adds_then_removes_and_can_be_cancelled() {
        let mut img = three_brokers_one_topic();
        apply(&mut img, vec![register(4)]).unwrap();
        let before = img.partition("t", 0).unwrap().clone();
        let (kept, gone) = (before.replicas[1], before.replicas[0]);
        let target = vec![4, kept, before.replicas[2]];
        let reassign = |target: Option<Vec<NodeId>>| MetaRecord::Reassign {
            topic: "t".into(),
            partition: 0,
            target,
        };
        assert_eq!(
            apply(&mut img, vec![reassign(None)]),
            Err(EngineError::NoReassignmentInProgress)
        );
        assert!(apply(&mut img, vec![reassign(Some(vec![4, 4]))]).is_err());
        assert!(apply(&mut img, vec![reassign(Some(vec![9]))]).is_err());
        apply(&mut img, vec![reassign(Some(target.clone()))]).unwrap();
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!(
            (p.adding.clone(), p.removing.clone()),
            (vec![4], vec![gone])
        );
        assert_eq!(p.replicas, [target.clone(), vec![gone]].concat());
        assert_eq!(
            p.leader, before.leader,
            "the leader stays while it is a replica"
        );
        assert_eq!(p.leader_epoch, before.leader_epoch + 1);
        // Not in sync yet: nothing to complete.
        assert!(img.reassignments_to_complete().is_empty());
        join_isr(&mut img, 4);
        let done = img.reassignments_to_complete();
        assert_eq!(done.len(), 1);
        apply(&mut img, done).unwrap();
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!(p.replicas, target);
        assert!(!p.reassigning() && !p.isr.contains(&gone), "{p:?}");
        assert!(target.contains(&p.leader) && p.isr.contains(&p.leader));

        // A move replaced by one back to where it is: the added replica
        // leaves the replicas and the ISR.
        let here = img.partition("t", 0).unwrap().replicas.clone();
        apply(&mut img, vec![reassign(Some(vec![gone, kept, 4]))]).unwrap();
        join_isr(&mut img, gone);
        apply(&mut img, vec![reassign(Some(here.clone()))]).unwrap();
        let p = img.partition("t", 0).unwrap().clone();
        assert!(!p.reassigning() && p.replicas == here, "{p:?}");
        assert!(p.isr.iter().all(|n| here.contains(n)), "{p:?}");

        // Another move, cancelled: back to the replicas it had.
        apply(&mut img, vec![reassign(Some(vec![gone, kept, 4]))]).unwrap();
        assert!(img.partition("t", 0).unwrap().reassigning());
        apply(&mut img, vec![reassign(None)]).unwrap();
        let p = img.partition("t", 0).unwrap();
        // (in the order of the replica list during the move, as in Kafka)
        let (mut got, mut want) = (p.replicas.clone(), target.clone());
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert!(!p.reassigning() && !p.isr.contains(&gone));
    }

    #[test]
    fn elections_as_kafka_decides_them() {
        let mut img = three_brokers_one_topic();
        let p = img.partition("t", 0).unwrap().clone();
        let preferred = p.replicas[0];
        assert_eq!(p.leader, preferred);
        assert_eq!(
            img.election_for("t", 0, false),
            Err(EngineError::ElectionNotNeeded)
        );
        assert_eq!(
            img.election_for("t", 0, true),
            Err(EngineError::ElectionNotNeeded)
        );
        assert_eq!(
            img.election_for("t", 99, false),
            Err(EngineError::UnknownTopicOrPartition)
        );
        // The preferred replica is fenced: another leads, and it cannot be
        // elected until it is back in the ISR.
        apply(&mut img, vec![MetaRecord::FenceBroker { node: preferred }]).unwrap();
        assert_eq!(
            img.election_for("t", 0, false),
            Err(EngineError::PreferredLeaderNotAvailable)
        );
        apply(&mut img, vec![register(preferred)]).unwrap();
        let leader = img.partition("t", 0).unwrap().leader;
        let isr: Vec<NodeId> = vec![leader, preferred];
        let (epoch, pe) = {
            let p = img.partition("t", 0).unwrap();
            (p.leader_epoch, p.partition_epoch)
        };
        apply(
            &mut img,
            vec![MetaRecord::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader,
                leader_epoch: epoch,
                partition_epoch: pe,
                isr,
            }],
        )
        .unwrap();
        let r = img.election_for("t", 0, false).unwrap();
        assert_eq!(
            r,
            MetaRecord::ElectLeader {
                topic: "t".into(),
                partition: 0,
                leader: preferred
            }
        );
        apply(&mut img, vec![r]).unwrap();
        assert_eq!(img.partition("t", 0).unwrap().leader, preferred);
        // Every replica fenced: nothing is eligible, even uncleanly.
        let replicas = img.partition("t", 0).unwrap().replicas.clone();
        for n in &replicas {
            apply(&mut img, vec![MetaRecord::FenceBroker { node: *n }]).unwrap();
        }
        assert_eq!(img.partition("t", 0).unwrap().leader, NO_LEADER);
        assert_eq!(
            img.election_for("t", 0, true),
            Err(EngineError::EligibleLeadersNotAvailable)
        );
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_back() {
        let mut img = three_brokers_one_topic();
        let before = img.partition("t", 0).unwrap().clone();
        assert_eq!(before.isr.len(), 3);
        let old = before.leader;
        apply(&mut img, vec![MetaRecord::FenceBroker { node: old }]).unwrap();
        let p = img.partition("t", 0).unwrap();
        assert_ne!(p.leader, old);
        assert_ne!(p.leader, NO_LEADER);
        assert!(!p.isr.contains(&old));
        assert_eq!(p.leader_epoch, before.leader_epoch + 1);
        // Every partition: the leader is live and in the ISR.
        for t in img.topics.values() {
            for p in &t.partitions {
                assert!(p.isr.contains(&p.leader) && p.leader != old);
            }
        }
    }

    #[test]
    fn last_isr_member_is_kept_and_leads_again_on_return() {
        let mut img = ClusterImage::default();
        apply(&mut img, vec![register(1), register(2)]).unwrap();
        apply(
            &mut img,
            vec![MetaRecord::CreateTopic {
                name: "one".into(),
                id: [1; 16],
                configs: BTreeMap::new(),
                replicas: vec![vec![2]],
            }],
        )
        .unwrap();
        apply(&mut img, vec![MetaRecord::FenceBroker { node: 2 }]).unwrap();
        let p = img.partition("one", 0).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (NO_LEADER, vec![2], 1)
        );
        apply(&mut img, vec![register(2)]).unwrap();
        let p = img.partition("one", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch), (2, 2));
    }

    #[test]
    fn a_refused_proposal_changes_nothing_but_the_index() {
        let mut img = three_brokers_one_topic();
        let before = img.clone();
        let again = MetaRecord::CreateTopic {
            name: "t".into(),
            id: [9; 16],
            configs: BTreeMap::new(),
            replicas: vec![vec![1]],
        };
        // The first record would apply; the second is refused: neither stays.
        let other = MetaRecord::CreateTopic {
            name: "u".into(),
            id: [8; 16],
            configs: BTreeMap::new(),
            replicas: vec![vec![1]],
        };
        assert_eq!(
            apply(&mut img, vec![other, again]),
            Err(EngineError::TopicAlreadyExists)
        );
        assert_eq!(img.applied, before.applied + 1);
        assert_eq!(img.topics, before.topics);
    }

    #[test]
    fn isr_changes_only_from_the_current_leader() {
        let mut img = three_brokers_one_topic();
        let p = img.partition("t", 0).unwrap().clone();
        let follower = *p.replicas.iter().find(|&&n| n != p.leader).unwrap();
        let shrunk: Vec<NodeId> = p.isr.iter().copied().filter(|&n| n != follower).collect();
        let alter = |leader, epoch, isr: Vec<NodeId>| MetaRecord::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader,
            leader_epoch: epoch,
            partition_epoch: 0,
            isr,
        };
        // A stale epoch or a non-leader is refused.
        assert!(
            apply(
                &mut img,
                vec![alter(p.leader, p.leader_epoch + 1, shrunk.clone())]
            )
            .is_err()
        );
        assert!(
            apply(
                &mut img,
                vec![alter(follower, p.leader_epoch, shrunk.clone())]
            )
            .is_err()
        );
        // Without the leader: refused.
        assert!(
            apply(
                &mut img,
                vec![alter(p.leader, p.leader_epoch, vec![follower])]
            )
            .is_err()
        );
        apply(
            &mut img,
            vec![alter(p.leader, p.leader_epoch, shrunk.clone())],
        )
        .unwrap();
        assert_eq!(img.partition("t", 0).unwrap().isr, shrunk);
        // Made against an older partition epoch: refused.
        let stale = alter(p.leader, p.leader_epoch, p.isr.clone());
        assert!(apply(&mut img, vec![stale]).is_err());
        // A fenced follower cannot come back into the ISR.
        apply(&mut img, vec![MetaRecord::FenceBroker { node: follower }]).unwrap();
        let q = img.partition("t", 0).unwrap().clone();
        let back = MetaRecord::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: q.leader,
            leader_epoch: q.leader_epoch,
            partition_epoch: q.partition_epoch,
            isr: q.replicas.clone(),
        };
        assert!(apply(&mut img, vec![back]).is_err());
    }

    #[test]
    fn preferred_leaders_return_once_in_the_isr() {
        let mut img = three_brokers_one_topic();
        let p0 = img.partition("t", 0).unwrap().clone();
        let preferred = p0.replicas[0];
        apply(&mut img, vec![MetaRecord::FenceBroker { node: preferred }]).unwrap();
        apply(&mut img, vec![register(preferred)]).unwrap();
        // Back, but not in the ISR yet: nothing to elect for it.
        assert!(img.preferred_elections().iter().all(|r| !matches!(r,
            MetaRecord::ElectLeader { leader, .. } if *leader == preferred)));
        join_isr(&mut img, preferred);
        let epoch = img.partition("t", 0).unwrap().leader_epoch;
        let elections = img.preferred_elections();
        assert!(!elections.is_empty());
        apply(&mut img, elections).unwrap();
        let after = img.partition("t", 0).unwrap();
        assert_eq!(after.leader, preferred);
        assert_eq!(after.leader_epoch, epoch + 1);
    }

    #[test]
    fn unclean_election_only_without_a_live_isr_member() {
        let mut img = three_brokers_one_topic();
        let all = |_: &TopicInfo| true;
        // Node 3 is fenced first, then 2: node 1 is the last ISR member.
        apply(&mut img, vec![MetaRecord::FenceBroker { node: 3 }]).unwrap();
        apply(&mut img, vec![MetaRecord::FenceBroker { node: 2 }]).unwrap();
        assert!(
            img.unclean_elections(all).is_empty(),
            "node 1 is live and in the ISR"
        );
        apply(&mut img, vec![MetaRecord::FenceBroker { node: 1 }]).unwrap();
        assert!(img.unclean_elections(all).is_empty(), "no replica is live");
        // Node 3 returns; the ISR's only member (1) is still down.
        apply(&mut img, vec![register(3)]).unwrap();
        assert!(img.unclean_elections(|_| false).is_empty());
        let elections = img.unclean_elections(all);
        assert!(!elections.is_empty());
        for e in &elections {
            assert!(
                matches!(e, MetaRecord::UncleanElection { leader: 3, .. }),
                "{e:?}"
            );
        }
        let before = img.partition("t", 0).unwrap().clone();
        apply(&mut img, elections.clone()).unwrap();
        let after = img.partition("t", 0).unwrap();
        assert_eq!((after.leader, after.isr.clone()), (3, vec![3]));
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        // A second copy of the election is refused: the partition has a leader.
        assert!(apply(&mut img, elections[..1].to_vec()).is_err());
        assert!(img.unclean_elections(all).is_empty());
    }

    #[test]
    fn an_offline_copy_leaves_the_isr_and_comes_back_with_a_new_start() {
        let mut img = three_brokers_one_topic();
        let led_by_2: Vec<u32> = (0..6u32)
            .filter(|&p| img.partition("t", p).unwrap().leader == 2)
            .collect();
        assert!(!led_by_2.is_empty());
        let offline = MetaRecord::MarkReplicasOffline {
            node: 2,
            incarnation: 1,
            partitions: (0..6).map(|p| ("t".to_string(), p)).collect(),
        };
        // A report from another start of the broker is refused.
        let stale = MetaRecord::MarkReplicasOffline {
            node: 2,
            incarnation: 9,
            partitions: vec![("t".to_string(), 0)],
        };
        assert!(apply(&mut img, vec![stale]).is_err());
        apply(&mut img, vec![offline]).unwrap();
        for p in 0..6u32 {
            let pi = img.partition("t", p).unwrap();
            assert_eq!(pi.offline, vec![2]);
            assert!(!pi.isr.contains(&2) && pi.leader != 2, "{p}: {pi:?}");
        }
        // Broker 2 is live, but its copies cannot lead or rejoin an ISR.
        assert!(
            img.preferred_elections()
                .iter()
                .all(|e| !matches!(e, MetaRecord::ElectLeader { leader: 2, .. }))
        );
        // Partition 0's leader asks for broker 2 back in its ISR.
        let rejoin = |img: &ClusterImage| {
            let p0 = img.partition("t", 0).unwrap().clone();
            MetaRecord::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: p0.leader,
                leader_epoch: p0.leader_epoch,
                partition_epoch: p0.partition_epoch,
                isr: [p0.isr.clone(), vec![2]].concat(),
            }
        };
        let r = rejoin(&img);
        assert!(apply(&mut img, vec![r]).is_err());
        // The same start registering again changes nothing; a new start
        // brings its copies back.
        apply(&mut img, vec![register(2)]).unwrap();
        assert_eq!(img.partition("t", 0).unwrap().offline, vec![2]);
        let mut again = register(2);
        if let MetaRecord::RegisterBroker { incarnation, .. } = &mut again {
            *incarnation = 2;
        }
        apply(&mut img, vec![again]).unwrap();
        assert!(img.partition("t", 0).unwrap().offline.is_empty());
        let r = rejoin(&img);
        apply(&mut img, vec![r]).unwrap();
        assert!(img.partition("t", 0).unwrap().isr.contains(&2));
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut img = ClusterImage::default();
        let a = apply(
            &mut img,
            vec![MetaRecord::AllocateProducerIds {
                node: 1,
                count: 1000,
            }],
        );
        let b = apply(
            &mut img,
            vec![MetaRecord::AllocateProducerIds {
                node: 2,
                count: 1000,
            }],
        );
        assert_eq!(a, Ok(Applied::ProducerIds(0)));
        assert_eq!(b, Ok(Applied::ProducerIds(1000)));
    }

    #[test]
    fn image_round_trips_through_json() {
        let img = three_brokers_one_topic();
        let json = serde_json::to_vec(&img).unwrap();
        assert_eq!(serde_json::from_slice::<ClusterImage>(&json).unwrap(), img);
    }

    #[test]
    fn broker_configs_reach_every_brokers_catalog() {
        let mut img = three_brokers_one_topic();
        let set = |node, k: &str, v: &str| MetaRecord::AlterBrokerConfigs {
            node,
            change: ConfigChange::Update(vec![(k.to_string(), Some(v.to_string()))]),
        };
        apply(&mut img, vec![set(None, "log.retention.ms", "1000")]).unwrap();
        apply(&mut img, vec![set(Some(2), "log.retention.ms", "2000")]).unwrap();
        let engine = EngineConfig::new("/nonexistent".into(), 1);
        let retention = |node| img.catalog(&engine, node).topics["t"].config.retention_ms;
        assert_eq!((retention(1), retention(2)), (Some(1000), Some(2000)));
        // Older images (no broker configs) still read.
        let mut json: serde_json::Value = serde_json::to_value(&img).unwrap();
        json.as_object_mut().unwrap().remove("broker_configs");
        let old: ClusterImage = serde_json::from_value(json).unwrap();
        assert_eq!(old.broker_configs, BrokerConfigs::default());
    }

    #[test]
    fn only_a_stopped_broker_is_unregistered() {
        let mut img = three_brokers_one_topic();
        let unregister = |node| MetaRecord::UnregisterBroker { node };
        assert!(matches!(
            apply(&mut img, vec![unregister(3)]),
            Err(EngineError::InvalidRequest(_))
        ));
        assert_eq!(
            apply(&mut img, vec![unregister(9)]),
            Err(EngineError::BrokerIdNotRegistered(9))
        );
        apply(&mut img, vec![MetaRecord::FenceBroker { node: 3 }]).unwrap();
        apply(&mut img, vec![unregister(3)]).unwrap();
        assert_eq!(img.live_brokers(), vec![1, 2]);
        assert!(!img.brokers.contains_key(&3));
        // It may come back: a start registers it again.
        apply(&mut img, vec![register(3)]).unwrap();
        assert!(img.brokers.contains_key(&3));
    }
}
