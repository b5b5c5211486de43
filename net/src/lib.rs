//! Brook's Kafka wire protocol layer. It never touches a file.
//!
//! - [`server`]: one shard's protocol state (`ShardServer`), graceful stop.
//! - [`listener`]: per-shard SO_REUSEPORT listeners, steering, accept loops.
//! - [`conn`]: one connection — framing, pipelining, responses in request order.
//! - [`quota`]: per-client byte-rate measurement and throttling.
//! - [`memory`]: the per-shard request memory budget (backpressure).
//! - [`dispatch`]: request header parsing and version checks.
//! - [`routes`]: the routing table — every API, its versions (the ApiVersions
//!   rows) and its handler, in one list.
//! - [`handlers`]: one file per Kafka API.
//! - [`errors`]: engine errors → Kafka error codes, in one place.
//! - [`peer`]: the metadata quorum's transport between brokers (CONTROLLER
//!   listener and peer connections, on shard 0).
//! - [`replica_fetcher`]: follower brokers fetching their partitions from the
//!   leaders (Kafka's Fetch with a replica id), on each partition's shard.
//!
//! **Lives on:** every type here is per shard (`Rc`), except [`NetConfig`].
pub mod broker_call;
pub mod conn;
pub mod dispatch;
pub mod errors;
pub mod handlers;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod peer;
pub mod quota;
pub mod replica_fetcher;
pub mod routes;
pub mod security;
pub mod server;
pub mod txn_calls;

pub use server::{ConnectionCounts, NetConfig, ShardServer};
