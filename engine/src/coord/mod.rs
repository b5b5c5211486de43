//! Coordinators' state, independent of where it runs: Kafka's consumer-group
//! state machine and the `__consumer_offsets` records it is kept in (the shard
//! layer routes group operations to the group's shard: `shard::groups`).
//! The transaction coordinator's state and its `__transaction_state` records
//! are here as well (`txn`; routed by `shard::txns`).
pub mod group;
pub mod group_log;
pub mod txn;
