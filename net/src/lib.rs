//! Brook's Kafka wire protocol layer. It never touches a file.
//!
//! - [`server`]: per-shard SO_REUSEPORT listeners, graceful stop.
//! - [`conn`]: one connection — framing, pipelining, responses in request order.
//! - [`quota`]: per-client byte-rate measurement and throttling.
//! - [`memory`]: the per-shard request memory budget (backpressure).
//! - [`dispatch`]: request header parsing, version checks, routing to a handler.
//! - [`handlers`]: one file per Kafka API.
//! - [`versions`]: the ApiVersions table.
//! - [`errors`]: engine errors → Kafka error codes, in one place.
//!
//! **Lives on:** every type here is per shard (`Rc`), except [`NetConfig`].
pub mod conn;
pub mod dispatch;
pub mod errors;
pub mod handlers;
pub mod memory;
pub mod quota;
pub mod server;
pub mod versions;

pub use server::{ConnectionCounts, NetConfig, ShardServer};
