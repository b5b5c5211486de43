//! Brook's engine: the log and everything that owns it. It knows no wire protocol.
//!
//! A tour, from the bytes up:
//! - [`types`]: newtypes (offsets, file positions, timestamps, shard ids).
//! - [`batch`]: the Kafka RecordBatch v2 header — parsing, CRC-32C validation,
//!   rewriting the base offset.
//! - [`aligned`]: 4 KiB-aligned buffers for O_DIRECT writes.
//! - [`index`]: the sparse offset index and time index of a segment (derived files).
//! - [`recovery`]: scanning a segment file, stopping at the first torn or corrupt batch.
//! - [`producer`]: idempotent-producer sequence state per partition.
//! - [`segment`]: one `<base>.log` file — appends, sealing, disk reads.
//! - [`writer`]: the O_DIRECT write side of the active segment, and the shard's
//!   pool of write buffers.
//! - [`checkpoint`]: a partition's recovery checkpoint (durable point, its
//!   indexes and producer state), so restarts read only what came after it.
//! - [`log_open`]: opening a partition's segments after a clean stop or a crash
//!   (finishing interrupted seals, truncating a torn tail).
//! - [`partition`]: segments + batch cache + producer state + the group-commit flusher.
//! - [`catalog`]: topics, their ids, partition counts and configs; persisted by shard 0.
//! - [`records`]: reading uncompressed records (for the broker's own topics).
//! - [`group`]: consumer groups — Kafka's membership state machine, committed offsets.
//! - [`group_log`]: `__consumer_offsets` records in Kafka's formats, and replay.
//! - [`quota`]: client byte-rate quotas (configuration; the protocol layer throttles).
//! - [`ring`]: the cross-shard mailboxes.
//! - [`shard`]: one core's partitions, and the routing of every operation to the
//!   shard that owns the partition.
//! - [`coordinator`]: group coordinator operations, routed to the group's shard.
//! - [`ids`]: random ids (topic ids, member ids, the cluster id).
//! - [`data_dir`]: the data directory's layout and the broker's lock on it.
//! - [`config`], [`error`]: engine settings (Kafka names) and the engine's error enum.
pub mod aligned;
pub mod batch;
pub mod catalog;
pub mod checkpoint;
pub mod config;
pub mod coordinator;
pub mod data_dir;
pub mod error;
pub mod group;
pub mod group_log;
pub mod ids;
pub mod index;
pub mod log_open;
pub mod partition;
pub mod producer;
pub mod quota;
pub mod records;
pub mod recovery;
pub mod ring;
pub mod segment;
pub mod shard;
pub mod types;
pub mod writer;

pub use config::{EngineConfig, FlushPolicy, TopicConfig};
pub use error::EngineError;
pub use shard::{
    Acks, EngineShared, ListedOffset, NewTopic, OffsetQuery, ProduceRefused, Produced, Shard,
    shard_of,
};
pub use types::{Offset, ShardId, TimestampMs, TopicPartition};
