//! The crate's one error type.

use std::io;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("connection to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("connection to {addr} closed by the broker")]
    Closed { addr: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("broker answered {api} with error {name} ({code})")]
    Broker {
        api: &'static str,
        code: i16,
        name: String,
    },
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Kafka's name for an error code, e.g. `NOT_LEADER_OR_FOLLOWER`.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("ERROR_{code}"),
    }
}

/// Whether Kafka marks the error code retriable.
pub fn is_retriable(code: i16) -> bool {
    kafka_protocol::error::ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}
