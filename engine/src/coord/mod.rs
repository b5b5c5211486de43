//! Coordinators: state the broker keeps for clients in its own topics. Today
//! consumer groups (in `__consumer_offsets`); transactions will live here too.
pub mod coordinator;
pub mod group;
pub mod group_log;
