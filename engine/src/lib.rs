//! Brook's engine: the log and everything that owns it. It knows no wire protocol.
//!
//! The folders are the layers, from the bytes up; a layer uses only those
//! before it.
//! - Foundation: [`types`] (offsets, file positions, timestamps, shard ids),
//!   [`error`] (the engine's error enum), [`config`] (engine and topic settings,
//!   Kafka names), [`ids`] (random topic, member and cluster ids).
//! - [`log`]: one partition's log on disk and in memory.
//!   - [`log::batch`]: the RecordBatch v2 header — parsing, CRC-32C, rewriting
//!     the base offset; [`log::records`]: reading uncompressed records.
//!   - [`log::aligned`]: 4 KiB-aligned buffers for O_DIRECT.
//!   - [`log::index`]: the sparse offset and time indexes of a segment (derived).
//!   - [`log::recovery`]: scanning a segment file, stopping at the first torn or
//!     corrupt batch.
//!   - [`log::producer`]: idempotent-producer sequence state.
//!   - [`log::writer`]: the O_DIRECT write side of the active segment and the
//!     shard's pool of write buffers; [`log::segment`]: one `<base>.log` —
//!     appends, sealing, disk reads.
//!   - [`log::checkpoint`]: a partition's recovery checkpoint;
//!     [`log::open`]: opening a partition's segments after a clean stop or a crash.
//!   - [`log::partition`]: segments + batch cache + producer state + the
//!     group-commit flusher.
//! - [`meta`]: the broker's own state in its data directory: [`meta::data_dir`]
//!   (the layout and the lock), [`meta::catalog`] (topics), [`meta::quota`]
//!   (client quotas).
//! - [`coord`]: the coordinators' state — [`coord::group`] (Kafka's
//!   consumer-group state machine and committed offsets) and [`coord::group_log`]
//!   (`__consumer_offsets` records and replay).
//! - [`cluster`]: the metadata quorum (raft-rs on shard 0) and the cluster
//!   image every broker keeps: brokers, topics, replicas, leaders, ISR.
//! - [`shard`]: one core's partitions and the routing of every operation to
//!   the shard that owns it: [`shard::ring`] (the cross-shard mailboxes), the
//!   data path (`data`), topic administration (`topics`), [`shard::groups`]
//!   (group operations, on the group's shard), quotas, producer ids.
pub mod cluster;
pub mod config;
pub mod coord;
pub mod error;
pub mod ids;
pub mod log;
pub mod meta;
pub mod metrics;
pub mod shard;
pub mod types;

pub use config::{EngineConfig, FlushPolicy, TopicConfig};
pub use error::EngineError;
pub use shard::{
    Acks, EngineShared, ListedOffset, NewTopic, OffsetQuery, ProduceRefused, Produced, Shard,
    shard_of,
};
pub use types::{Offset, ShardId, TimestampMs, TopicPartition};
