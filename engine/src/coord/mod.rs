//! Coordinators' state, independent of where it runs: Kafka's consumer-group
//! state machine and the `__consumer_offsets` records it is kept in (the shard
//! layer routes group operations to the group's shard: `shard::groups`).
//! Transactions will live here too.
pub mod group;
pub mod group_log;
