//! Topic administration: CreateTopics, CreatePartitions and DeleteTopics,
//! serialised on shard 0, which opens or removes partitions on their owners and
//! sends every shard the new catalog before answering.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use super::{Shard, is_internal_topic};
use crate::cluster::image::{MetaRecord, NodeId};
use crate::config::ConfigChange;
use crate::error::EngineError;
use crate::meta::catalog::{Catalog, TopicMeta, validate_topic_name};
use crate::types::{ShardId, TopicPartition};

/// Most partitions one topic may have.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 10_000;

/// A CreateTopics entry, engine-side.
#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    pub partitions: Option<u32>,
    pub replication_factor: Option<i16>,
    pub configs: BTreeMap<String, String>,
    pub validate_only: bool,
    /// A manual replica assignment, partition by partition (preferred leader
    /// first), already checked for shape; in a cluster its brokers must be
    /// registered.
    pub assignment: Option<Vec<Vec<NodeId>>>,
}

impl Shard {
    /// Creates a topic (on shard 0, wherever it is called).
    pub async fn create_topic(self: &Rc<Self>, t: NewTopic) -> Result<TopicMeta, EngineError> {
        if self.id.0 == 0 {
            return self.create_topic_on_zero(t).await;
        }
        self.invoke_on(ShardId(0), move |s| async move {
            s.create_topic_on_zero(t).await
        })
        .await?
    }

    async fn create_topic_on_zero(self: &Rc<Self>, t: NewTopic) -> Result<TopicMeta, EngineError> {
        let _guard = self.topic_lock.lock().await;
        let meta = self.validate_new_topic(&t)?;
        if self.shared.cluster.is_some() {
            let replicas = match &t.assignment {
                Some(a) => self.check_assignment(a)?,
                None => self.place(&meta.name, 0, meta.partitions, t.replication_factor)?,
            };
            if t.validate_only {
                return Ok(meta);
            }
            self.propose_and_install(vec![MetaRecord::CreateTopic {
                name: meta.name.clone(),
                id: meta.id,
                configs: meta.overrides.clone(),
                replicas,
            }])
            .await?;
            tracing::info!(topic = %meta.name, partitions = meta.partitions, "created topic in the cluster");
            return Ok(meta);
        }
        if t.validate_only {
            return Ok(meta);
        }
        let mut next = (*self.catalog()).clone();
        next.topics.insert(meta.name.clone(), meta.clone());
        self.open_then_store(&meta, 0, next).await?;
        tracing::info!(topic = %meta.name, partitions = meta.partitions, "created topic");
        Ok(meta)
    }

    /// Grows a topic to `count` partitions (Kafka's CreatePartitions), on shard 0
    /// wherever it is called. As with a new topic, the catalog is persisted
    /// before the new partitions are opened on their owners, and every shard has
    /// the new catalog before this returns. Existing partitions are untouched;
    /// note that a keyed producer's partition for a key changes with the count.
    pub async fn create_partitions(
        self: &Rc<Self>,
        name: String,
        count: u32,
        validate_only: bool,
    ) -> Result<TopicMeta, EngineError> {
        if self.id.0 == 0 {
            return self
                .create_partitions_on_zero(name, count, validate_only)
                .await;
        }
        self.invoke_on(ShardId(0), move |s| async move {
            s.create_partitions_on_zero(name, count, validate_only)
                .await
        })
        .await?
    }

    async fn create_partitions_on_zero(
        self: &Rc<Self>,
        name: String,
        count: u32,
        validate_only: bool,
    ) -> Result<TopicMeta, EngineError> {
        let _guard = self.topic_lock.lock().await;
        let Some(current) = self.catalog().topics.get(&name).cloned() else {
            return Err(EngineError::UnknownTopicOrPartition);
        };
        if is_internal_topic(&name) {
            return Err(EngineError::InvalidRequest(format!(
                "the partition count of {name} is fixed"
            )));
        }
        if count <= current.partitions {
            return Err(EngineError::PartitionsNotIncreased {
                topic: name,
                current: current.partitions,
                requested: count,
            });
        }
        if count > MAX_PARTITIONS_PER_TOPIC {
            return Err(EngineError::InvalidPartitions(format!(
                "{count} (must be at most {MAX_PARTITIONS_PER_TOPIC})"
            )));
        }
        let meta = TopicMeta {
            partitions: count,
            ..current
        };
        if let Some(img) = self.cluster_image() {
            let rf = (img.partition(&name, 0)).map_or(1, |p| p.replicas.len() as i16);
            let added = count - current.partitions;
            let replicas = self.place(&name, current.partitions, added, Some(rf))?;
            if validate_only {
                return Ok(meta);
            }
            self.propose_and_install(vec![MetaRecord::AddPartitions {
                name: name.clone(),
                replicas,
            }])
            .await?;
            tracing::info!(topic = %name, partitions = count, "added partitions in the cluster");
            return Ok(meta);
        }
        if validate_only {
            return Ok(meta);
        }
        let mut next = (*self.catalog()).clone();
        next.topics.insert(name.clone(), meta.clone());
        self.open_then_store(&meta, current.partitions, next)
            .await?;
        tracing::info!(topic = %name, partitions = count, "added partitions");
        Ok(meta)
    }

    /// Adds partitions `first..meta.partitions` of `meta`, all or nothing:
    /// each is created and opened on its owner, then the catalog `next` is
    /// persisted and sent to every shard. If any partition cannot be opened
    /// (no space, no file descriptors, …) or the catalog cannot be stored,
    /// every new partition is closed and its directory removed, the catalog
    /// is unchanged, and the error is returned.
    async fn open_then_store(
        self: &Rc<Self>,
        meta: &TopicMeta,
        first: u32,
        next: Catalog,
    ) -> Result<(), EngineError> {
        let m = meta.clone();
        let opened = self
            .invoke_on_all(move |shard| async move {
                for p in (first..m.partitions).filter(|&p| shard.owns(&m.name, p)) {
                    shard.open_partition(&m, p, true)?;
                }
                Ok::<(), EngineError>(())
            })
            .await;
        let failed = opened.into_iter().find_map(|r| r.and_then(|r| r).err());
        let res = match failed {
            Some(e) => Err(e),
            None => next.store(&self.shared.config.data_dir),
        };
        if let Err(e) = res {
            tracing::warn!(topic = %meta.name, error = %e, "cannot add partitions; undoing");
            let (name, end) = (meta.name.clone(), meta.partitions);
            self.invoke_on_all(move |shard| async move {
                shard.discard_partitions(&name, first..end).await
            })
            .await;
            return Err(e);
        }
        self.broadcast_catalog(Arc::new(next)).await;
        Ok(())
    }

    fn validate_new_topic(&self, t: &NewTopic) -> Result<TopicMeta, EngineError> {
        validate_topic_name(&t.name)?;
        if self.catalog().topics.contains_key(&t.name) {
            return Err(EngineError::TopicAlreadyExists);
        }
        if let Some(other) = self.catalog().colliding_topic(&t.name) {
            return Err(EngineError::InvalidTopicName(format!(
                "{:?} collides with existing topic {other:?} ('.' and '_' share metric names)",
                t.name
            )));
        }
        let partitions = t
            .partitions
            .unwrap_or(self.shared.config.default_partitions);
        if partitions == 0 || partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(EngineError::InvalidPartitions(format!(
                "{partitions} (must be 1 to {MAX_PARTITIONS_PER_TOPIC})"
            )));
        }
        if let Some(rf) = t.replication_factor
            && rf != 1
            && self.shared.cluster.is_none()
        {
            return Err(EngineError::InvalidReplicationFactor(format!(
                "{rf}: this broker is a single node"
            )));
        }
        let config = (self.catalog().settings.topic_defaults).with_overrides(&t.configs)?;
        Ok(TopicMeta {
            name: t.name.clone(),
            id: crate::ids::random_uuid(),
            partitions,
            overrides: t.configs.clone(),
            config,
        })
    }

    pub(super) async fn broadcast_catalog(self: &Rc<Self>, catalog: Arc<Catalog>) {
        self.invoke_on_all(move |shard| async move {
            shard.adopt_topic_configs(&catalog);
            *shard.catalog.borrow_mut() = catalog;
        })
        .await;
    }

    /// Gives this shard's open partitions the configs of `catalog` where
    /// they changed (AlterConfigs): every topic setting is read by the
    /// partition as it works, so the next append, roll, retention pass or
    /// flush uses the new value; nothing restarts.
    pub(super) fn adopt_topic_configs(&self, catalog: &Catalog) {
        for (tp, lp) in self.partitions.borrow().iter() {
            let Some(t) = catalog.topics.get(&tp.topic) else {
                continue;
            };
            let mut p = lp.cell.state.borrow_mut();
            if p.config != t.config {
                tracing::info!(partition = %tp, "topic config changed; applied");
                p.config = t.config.clone();
            }
        }
    }

    /// Changes a topic's config overrides (Kafka's AlterConfigs and
    /// IncrementalAlterConfigs), on shard 0 wherever it is called. The
    /// resulting set is checked against the broker defaults first; a bad
    /// value changes nothing. In a cluster the change goes through the
    /// metadata quorum, so every broker applies it; a single broker persists
    /// its catalog first. Every shard's partitions have the new settings
    /// when this returns.
    pub async fn alter_topic_configs(
        self: &Rc<Self>,
        name: String,
        change: ConfigChange,
        validate_only: bool,
    ) -> Result<(), EngineError> {
        if self.id.0 == 0 {
            return (self.alter_topic_configs_on_zero(name, change, validate_only)).await;
        }
        self.invoke_on(ShardId(0), move |s| async move {
            (s.alter_topic_configs_on_zero(name, change, validate_only)).await
        })
        .await?
    }

    async fn alter_topic_configs_on_zero(
        self: &Rc<Self>,
        name: String,
        change: ConfigChange,
        validate_only: bool,
    ) -> Result<(), EngineError> {
        let _guard = self.topic_lock.lock().await;
        let Some(current) = self.catalog().topics.get(&name).cloned() else {
            return Err(EngineError::UnknownTopicOrPartition);
        };
        if is_internal_topic(&name) {
            // Their settings are what keeps group and transaction state:
            // a retention limit or `cleanup.policy=delete` would lose it.
            return Err(EngineError::InvalidRequest(format!(
                "the configs of internal topic {name} are fixed"
            )));
        }
        let overrides = change.applied_to(&current.overrides);
        let config = (self.catalog().settings.topic_defaults).with_overrides(&overrides)?;
        if validate_only || overrides == current.overrides {
            return Ok(());
        }
        if self.shared.cluster.is_some() {
            self.propose_and_install(vec![MetaRecord::AlterTopicConfigs {
                name: name.clone(),
                change,
            }])
            .await?;
            tracing::info!(topic = %name, "altered topic configs in the cluster");
            return Ok(());
        }
        let mut next = (*self.catalog()).clone();
        let meta = TopicMeta {
            overrides,
            config,
            ..current
        };
        next.topics.insert(name.clone(), meta);
        next.store(&self.shared.config.data_dir)?;
        self.broadcast_catalog(Arc::new(next)).await;
        tracing::info!(topic = %name, "altered topic configs");
        Ok(())
    }

    /// Deletes a topic and its data (on shard 0, wherever it is called).
    pub async fn delete_topic(self: &Rc<Self>, name: String) -> Result<(), EngineError> {
        if self.id.0 == 0 {
            return self.delete_topic_on_zero(name).await;
        }
        self.invoke_on(ShardId(0), move |s| async move {
            s.delete_topic_on_zero(name).await
        })
        .await?
    }

    async fn delete_topic_on_zero(self: &Rc<Self>, name: String) -> Result<(), EngineError> {
        let _guard = self.topic_lock.lock().await;
        if is_internal_topic(&name) {
            return Err(EngineError::InvalidTopicName(format!(
                "{name} is an internal topic"
            )));
        }
        let Some(meta) = self.catalog().topics.get(&name).cloned() else {
            return Err(EngineError::UnknownTopicOrPartition);
        };
        if self.shared.cluster.is_some() {
            // Each broker removes its replicas as it applies the deletion.
            self.propose_and_install(vec![MetaRecord::DeleteTopic { name: name.clone() }])
                .await?;
            tracing::info!(topic = %name, "deleted topic in the cluster");
            return Ok(());
        }
        let (topic, end) = (meta.name.clone(), meta.partitions);
        self.invoke_on_all(
            move |shard| async move { shard.discard_partitions(&topic, 0..end).await },
        )
        .await;
        let mut next = (*self.catalog()).clone();
        next.topics.remove(&name);
        next.store(&self.shared.config.data_dir)?;
        self.broadcast_catalog(Arc::new(next)).await;
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }
}

/// One partition as DescribeLogDirs reports it.
#[derive(Clone, Debug)]
pub struct PartitionOnDisk {
    pub tp: TopicPartition,
    /// Bytes of its segments.
    pub size: u64,
    /// Offsets appended but not yet below the high watermark.
    pub lag: u64,
}

impl Shard {
    /// Every open partition of every shard with its size, for DescribeLogDirs.
    pub async fn partitions_on_disk(self: &Rc<Self>) -> Vec<PartitionOnDisk> {
        let all = self
            .invoke_on_all(|shard| async move {
                (shard.partitions.borrow().iter())
                    .map(|(tp, lp)| {
                        let p = lp.cell.state.borrow();
                        PartitionOnDisk {
                            tp: tp.clone(),
                            size: p.size_bytes(),
                            lag: p.log_end.0 - p.high_watermark.0,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        all.into_iter()
            .flat_map(|r| r.unwrap_or_default())
            .collect()
    }
}
