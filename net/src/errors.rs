//! The one place engine errors become Kafka error codes.

use brook_engine::EngineError;
use brook_engine::log::batch::BatchError;
use kafka_protocol::error::ResponseError as E;

pub fn code(e: &EngineError) -> i16 {
    let kafka = match e {
        EngineError::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
        EngineError::TopicAlreadyExists => E::TopicAlreadyExists,
        EngineError::InvalidTopicName(_) => E::InvalidTopicException,
        EngineError::InvalidPartitions(_) | EngineError::PartitionsNotIncreased { .. } => {
            E::InvalidPartitions
        }
        EngineError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor,
        EngineError::InvalidConfig(_) => E::InvalidConfig,
        EngineError::CorruptBatch(b) => batch_code(b),
        EngineError::InvalidTimestamp { .. } => E::InvalidTimestamp,
        EngineError::BatchTooLarge { .. } => E::MessageTooLarge,
        EngineError::OffsetOutOfRange { .. } | EngineError::NegativeOffset(_) => {
            E::OffsetOutOfRange
        }
        EngineError::OutOfOrderSequence { .. } => E::OutOfOrderSequenceNumber,
        EngineError::InvalidProducerEpoch => E::InvalidProducerEpoch,
        EngineError::UnknownProducerId => E::UnknownProducerId,
        EngineError::Storage(_) | EngineError::DiskFailure(_) => E::KafkaStorageError,
        EngineError::LogDirNotFound(_) => E::LogDirNotFound,
        // Retriable: the client refreshes metadata and tries again.
        EngineError::ShuttingDown => E::NotLeaderOrFollower,
        EngineError::Unsupported(_) => E::UnsupportedVersion,
        EngineError::UnknownMemberId => E::UnknownMemberId,
        EngineError::IllegalGeneration => E::IllegalGeneration,
        EngineError::RebalanceInProgress => E::RebalanceInProgress,
        EngineError::InconsistentGroupProtocol => E::InconsistentGroupProtocol,
        EngineError::InvalidSessionTimeout => E::InvalidSessionTimeout,
        EngineError::MemberIdRequired(_) => E::MemberIdRequired,
        EngineError::NonEmptyGroup => E::NonEmptyGroup,
        EngineError::GroupSubscribedToTopic => E::GroupSubscribedToTopic,
        EngineError::ElectionNotNeeded => E::ElectionNotNeeded,
        EngineError::NoReassignmentInProgress => E::NoReassignmentInProgress,
        EngineError::PreferredLeaderNotAvailable => E::PreferredLeaderNotAvailable,
        EngineError::EligibleLeadersNotAvailable => E::EligibleLeadersNotAvailable,
        EngineError::GroupIdNotFound => E::GroupIdNotFound,
        EngineError::FencedInstanceId => E::FencedInstanceId,
        EngineError::InvalidGroupId => E::InvalidGroupId,
        EngineError::InvalidRequest(_) => E::InvalidRequest,
        EngineError::InvalidReplicaAssignment(_) => E::InvalidReplicaAssignment,
        EngineError::UnknownTopicId => E::UnknownTopicId,
        EngineError::NotLeaderOrFollower => E::NotLeaderOrFollower,
        EngineError::NotCoordinator => E::NotCoordinator,
        EngineError::FencedLeaderEpoch { .. } => E::FencedLeaderEpoch,
        EngineError::UnknownLeaderEpoch { .. } => E::UnknownLeaderEpoch,
        EngineError::NotEnoughReplicas { .. } => E::NotEnoughReplicas,
        EngineError::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
        EngineError::NoQuorum(_) | EngineError::TimedOut(_) => E::RequestTimedOut,
        EngineError::ConcurrentTransactions => E::ConcurrentTransactions,
        EngineError::ProducerFenced { .. } => E::ProducerFenced,
        EngineError::InvalidProducerIdMapping { .. } => E::InvalidProducerIdMapping,
        EngineError::InvalidTxnState(_) => E::InvalidTxnState,
        // Kafka answers a batch its coordinator could not check yet with a
        // code every client retries.
        EngineError::TxnCoordinatorUnavailable(_) => E::NotEnoughReplicas,
        EngineError::InvalidTransactionTimeout { .. } => E::InvalidTransactionTimeout,
        EngineError::UnstableOffsetCommit => E::UnstableOffsetCommit,
        EngineError::TransactionalIdNotFound => E::TransactionalIdNotFound,
        EngineError::BrokerIdNotRegistered(_) => E::BrokerIdNotRegistered,
        EngineError::UnacceptableCredential(_) => E::UnacceptableCredential,
        EngineError::ClusterAuthorizationFailed => E::ClusterAuthorizationFailed,
        EngineError::TopicAuthorizationFailed => E::TopicAuthorizationFailed,
        EngineError::GroupAuthorizationFailed => E::GroupAuthorizationFailed,
        EngineError::TransactionalIdAuthorizationFailed => E::TransactionalIdAuthorizationFailed,
        EngineError::ResourceNotFound(_) => E::ResourceNotFound,
        EngineError::TransactionCoordinatorFenced { .. } => E::TransactionCoordinatorFenced,
        _ => E::UnknownServerError,
    };
    kafka.code()
}

/// Kafka answers CORRUPT_MESSAGE (retriable for the Java producer) only for bytes
/// damaged in transit: a CRC mismatch or a length below any batch's. A batch that
/// is well-formed bytes but not an acceptable batch — truncated, missing, an old
/// message format, inconsistent counts, a control batch — is INVALID_RECORD, which
/// the producer does not retry (`ProduceRequest.validateRecords`,
/// `LogValidator.validateBatch`).
fn batch_code(b: &BatchError) -> E {
    match b {
        BatchError::CrcMismatch { .. } | BatchError::BadLength(_) => E::CorruptMessage,
        BatchError::BadCompression(_) => E::CorruptMessage,
        _ => E::InvalidRecord,
    }
}

/// The error message for a topic operation: Kafka's text for an existing topic
/// (`kafka-topics --create` prints it), the engine's otherwise.
pub fn topic_message(e: &EngineError, topic: &str) -> String {
    match e {
        EngineError::TopicAlreadyExists => format!("Topic '{topic}' already exists."),
        e => e.to_string(),
    }
}

/// Error code for "no error".
pub const NONE: i16 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_protocol() {
        assert_eq!(code(&EngineError::UnknownTopicOrPartition), 3);
        assert_eq!(
            code(&EngineError::OutOfOrderSequence {
                expected: 1,
                received: 3
            }),
            45
        );
        assert_eq!(code(&EngineError::Storage("x".into())), 56);
        assert_eq!(code(&EngineError::BatchTooLarge { len: 2, max: 1 }), 10);
        assert_eq!(code(&EngineError::CorruptBatch(BatchError::Empty)), 87);
        assert_eq!(
            code(&EngineError::CorruptBatch(BatchError::BadMagic(1))),
            87
        );
        let crc = BatchError::CrcMismatch {
            stored: 1,
            computed: 2,
        };
        assert_eq!(code(&EngineError::CorruptBatch(crc)), 2);
    }
}
