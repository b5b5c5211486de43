//! The cluster: the metadata quorum and the image every broker keeps of it.
//!
//! - [`codec`]: Brook's own binary form of Raft messages, entries and snapshots
//!   (peer bytes never reach protobuf's parser).
//! - [`image`]: metadata records and the [`image::ClusterImage`] they build — a
//!   pure state machine, the controller's decisions included.
//! - [`store`]: the quorum's durable log (`__brook/quorum.log`).
//! - [`quorum`]: raft-rs's `RawNode` driven on shard 0: ticks, persistence,
//!   apply, broker liveness and registration.
//!
//! Why raft-rs (TiKV's `raft` 0.7) and not openraft: a spike ran both on
//! compio. raft-rs is a sans-IO state machine with no runtime or `Send`
//! bounds of its own, so shard 0 drives it like any other task and a
//! simulator can drive the same code; openraft 0.10 is an alpha that owns its
//! timers and tasks.

pub mod codec;
pub mod image;
pub mod quorum;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

pub use image::{ClusterImage, NO_LEADER, NodeId};

/// How this broker takes part in a cluster (absent: a single broker).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// Kafka's `controller.quorum.voters`: every voter's id and controller address.
    pub voters: Vec<(NodeId, SocketAddr)>,
    /// Where this node's controller listens (`--controller-listen`); `None`:
    /// a broker-only node, which observes the quorum without voting.
    pub controller_listen: Option<SocketAddr>,
    /// Kafka's `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    /// Kafka's `broker.rack`.
    pub rack: Option<String>,
    /// Kafka's `default.replication.factor`; `None`: min(3, live brokers).
    pub default_replication_factor: Option<i16>,
    /// Kafka's `replica.lag.time.max.ms`: a follower that has not caught up
    /// for this long leaves the ISR.
    pub replica_lag: Duration,
    /// Preferred-leader rebalancing interval (`None`: off).
    pub rebalance_every: Option<Duration>,
}
