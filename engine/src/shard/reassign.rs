//! Partition reassignment (Kafka's AlterPartitionReassignments and
//! ListPartitionReassignments, `kafka-reassign-partitions`): moving a
//! partition's replicas to other brokers while it serves.
//!
//! A move is one `Reassign` record per partition through the metadata quorum
//! (the image applies it: the replicas become the target plus the old ones,
//! the leader epoch is bumped so the leader tracks its new followers). The
//! brokers that gain a replica open it as they install the image and follow
//! the leader from offset 0; once every target replica has joined the ISR,
//! the active controller commits `CompleteReassignment`, the old replicas
//! leave and their brokers delete their copies. A single broker has nowhere
//! to move anything.

use std::rc::Rc;

use futures::future::join_all;

use super::Shard;
use crate::cluster::image::{MetaRecord, NodeId};
use crate::error::EngineError;

/// One partition's change: a target replica list, or `None` to cancel.
pub type Reassignment = (String, u32, Option<Vec<NodeId>>);

/// One partition's ongoing move: replicas, adding, removing.
pub type Ongoing = (String, u32, Vec<NodeId>, Vec<NodeId>, Vec<NodeId>);

impl Shard {
    /// Starts or cancels the moves of `changes`; each partition's outcome.
    /// Without `allow_rf_change` (AlterPartitionReassignments v1, KIP-860)
    /// a target of another size than the replica set is
    /// INVALID_REPLICATION_FACTOR.
    pub async fn alter_reassignments(
        self: &Rc<Self>,
        changes: Vec<Reassignment>,
        allow_rf_change: bool,
    ) -> Vec<(String, u32, Result<(), EngineError>)> {
        let img = self.cluster_image();
        let catalog = self.catalog();
        let moves = changes.into_iter().map(|(topic, p, target)| {
            let checked = match &img {
                None => match (catalog.topics.get(&topic), &target) {
                    (Some(t), _) if p >= t.partitions => Err(EngineError::UnknownTopicOrPartition),
                    (None, _) => Err(EngineError::UnknownTopicOrPartition),
                    (Some(_), None) => Err(EngineError::NoReassignmentInProgress),
                    (Some(_), Some(_)) => Err(EngineError::InvalidReplicaAssignment(
                        "this broker is a single node: there is nowhere to move replicas".into(),
                    )),
                },
                Some(img) => match img.partition(&topic, p) {
                    None => Err(EngineError::UnknownTopicOrPartition),
                    Some(pi) => match &target {
                        Some(t) if !allow_rf_change && t.len() != pi.target_replicas().len() => {
                            Err(EngineError::InvalidReplicationFactor(format!(
                                "{} replicas, not {}: the request does not allow changing it",
                                t.len(),
                                pi.target_replicas().len()
                            )))
                        }
                        _ => Ok(()),
                    },
                },
            };
            async move {
                let r = match checked {
                    Ok(()) => self
                        .propose_and_install(vec![MetaRecord::Reassign {
                            topic: topic.clone(),
                            partition: p,
                            target: target.clone(),
                        }])
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                };
                if r.is_ok() {
                    tracing::info!(partition = %format_args!("{topic}-{p}"), ?target, "reassignment started (or cancelled)");
                }
                (topic, p, r)
            }
        });
        join_all(moves).await
    }

    /// The moves in progress, of `wanted` partitions or of all.
    pub fn list_reassignments(&self, wanted: Option<Vec<(String, u32)>>) -> Vec<Ongoing> {
        let Some(img) = self.cluster_image() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for t in img.topics.values() {
            for (i, pi) in t.partitions.iter().enumerate() {
                let i = i as u32;
                let asked = (wanted.as_ref())
                    .is_none_or(|w| w.iter().any(|(n, q)| *n == t.name && *q == i));
                if asked && pi.reassigning() {
                    out.push((
                        t.name.clone(),
                        i,
                        pi.replicas.clone(),
                        pi.adding.clone(),
                        pi.removing.clone(),
                    ));
                }
            }
        }
        out
    }
}
