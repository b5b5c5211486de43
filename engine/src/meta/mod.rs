//! The broker's own state in its data directory: where everything lives and the
//! lock on it, the log directories (JBOD) and where each partition lives, the
//! topic catalog, the dynamic broker settings, the SCRAM credentials, the ACLs and the client quotas (persisted
//! by shard 0).
pub mod acls;
pub mod broker_configs;
pub mod catalog;
pub mod data_dir;
pub mod json_file;
pub mod log_dirs;
pub mod quota;
pub mod scram;
