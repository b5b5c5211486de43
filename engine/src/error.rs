//! The engine's one error type. `net` maps each variant to a Kafka error code
//! in one place; the engine itself knows nothing of the wire protocol.

use crate::log::batch::BatchError;
use crate::types::Offset;

#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum EngineError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("topic already exists")]
    TopicAlreadyExists,
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    /// CreatePartitions asked for no more partitions than the topic has
    /// (Kafka's words, which `kafka-topics --alter` prints).
    #[error(
        "The topic {topic} currently has {current} partition(s); {requested} would not be an increase."
    )]
    PartitionsNotIncreased {
        topic: String,
        current: u32,
        requested: u32,
    },
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("corrupt record batch: {0}")]
    CorruptBatch(BatchError),
    #[error("record batch of {len} bytes exceeds max.message.bytes {max}")]
    BatchTooLarge { len: u32, max: u32 },
    #[error("offset {requested} out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        high_watermark: Offset,
    },
    #[error("offset {0} is negative")]
    NegativeOffset(i64),
    #[error("out of order sequence: expected {expected}, received {received}")]
    OutOfOrderSequence { expected: u32, received: u32 },
    #[error("producer epoch is older than the current one")]
    InvalidProducerEpoch,
    #[error("unknown producer id")]
    UnknownProducerId,
    #[error("storage error: {0}")]
    Storage(String),
    /// The disk under a log directory is failing (EIO, EROFS, ENODEV, ENXIO):
    /// the whole directory is taken offline (`shard::fail_log_dir`).
    #[error("disk failure: {0}")]
    DiskFailure(String),
    /// AlterReplicaLogDirs named a path that is not one of `log.dirs`.
    #[error("{0} is not one of this broker's log directories")]
    LogDirNotFound(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("session timeout outside the broker's allowed range")]
    InvalidSessionTimeout,
    #[error("a member id is required: rejoin with {0}")]
    MemberIdRequired(String),
    #[error("the group has members")]
    NonEmptyGroup,
    #[error("no such group")]
    GroupIdNotFound,
    /// OffsetDelete of a topic the group's members subscribe to.
    #[error("the consumer group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("the static member's instance id is used by a newer member")]
    FencedInstanceId,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("timestamp {timestamp} is outside [{min}, {max}] around the broker clock")]
    InvalidTimestamp { timestamp: i64, min: i64, max: i64 },
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The principal may not do this to the cluster (ACLs).
    #[error("Cluster authorization failed.")]
    ClusterAuthorizationFailed,
    /// The principal may not do this to the topic (ACLs).
    #[error("Topic authorization failed.")]
    TopicAuthorizationFailed,
    /// The principal may not do this to the group (ACLs).
    #[error("Group authorization failed.")]
    GroupAuthorizationFailed,
    /// The principal may not use the transactional id (ACLs).
    #[error("Transactional Id authorization failed.")]
    TransactionalIdAuthorizationFailed,
    /// A SCRAM credential Kafka would not accept (iterations out of bounds).
    #[error("{0}")]
    UnacceptableCredential(String),
    /// Something asked for by name does not exist (a SCRAM credential).
    #[error("{0}")]
    ResourceNotFound(String),
    /// The partition exists in the cluster but this broker does not lead it.
    #[error("this broker is not the leader of the partition")]
    NotLeaderOrFollower,
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`.
    #[error("{isr} in-sync replicas, min.insync.replicas is {min}")]
    NotEnoughReplicas { isr: usize, min: u32 },
    /// An ISR change made against an older partition epoch (Kafka's
    /// INVALID_UPDATE_VERSION): the partition changed since, perhaps by this
    /// very request made twice.
    #[error(
        "the partition changed since (partition epoch {current}, the change was made against {given})"
    )]
    StalePartitionEpoch { current: i32, given: i32 },
    /// A request made in an older leader epoch than the partition's.
    #[error("leader epoch {given} is older than the partition's {current}")]
    FencedLeaderEpoch { current: i32, given: i32 },
    /// A request made in a newer leader epoch than this broker knows yet.
    #[error("leader epoch {given} is newer than the partition's {current} here")]
    UnknownLeaderEpoch { current: i32, given: i32 },
    /// The group's `__consumer_offsets` partition is led by another broker.
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    /// The group's coordinator partition has no leader right now.
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    /// A metadata change could not be committed: the quorum has no leader, or
    /// lost it before the change was committed. Retriable.
    #[error("the metadata quorum did not commit the change: {0}")]
    NoQuorum(String),
    /// AlterPartitionReassignments cancelling a partition that is not moving.
    #[error("no reassignment is in progress")]
    NoReassignmentInProgress,
    /// ElectLeaders: the partition already has the leader asked for.
    #[error("leader election not needed")]
    ElectionNotNeeded,
    /// ElectLeaders: the preferred replica is not live and in sync.
    #[error("the preferred leader is not available")]
    PreferredLeaderNotAvailable,
    /// ElectLeaders (unclean): no live replica could lead.
    #[error("no eligible leader is available")]
    EligibleLeadersNotAvailable,
    /// The operation did not finish within the time the request allowed.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// Another operation on this transactional id is in progress (retriable).
    #[error("a transaction operation on this transactional id is in progress")]
    ConcurrentTransactions,
    /// A newer instance with the same transactional id took over.
    #[error("producer fenced: epoch {given} is not the current epoch {current}")]
    ProducerFenced { current: u16, given: u16 },
    /// The producer id is not the one the transactional id holds.
    #[error("producer id {given} is not the one of this transactional id")]
    InvalidProducerIdMapping { given: i64 },
    /// The request does not fit the transaction's state.
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// A partition leader could not reach the transaction coordinator to
    /// check a transactional batch (retriable).
    #[error("the transaction coordinator cannot check this batch now: {0}")]
    TxnCoordinatorUnavailable(String),
    #[error("transaction timeout {given} ms is outside 1..={max} ms")]
    InvalidTransactionTimeout { given: i32, max: i32 },
    /// Offsets of this partition are part of a transaction not yet decided.
    #[error("an offset commit of this partition awaits its transaction's end")]
    UnstableOffsetCommit,
    #[error("unknown transactional id")]
    TransactionalIdNotFound,
    /// UnregisterBroker: no broker with this id is registered.
    #[error("Broker ID {0} is not currently registered")]
    BrokerIdNotRegistered(i32),
    /// A marker from a coordinator older than the last one seen.
    #[error("transaction coordinator epoch {given} is older than {current}")]
    TransactionCoordinatorFenced { current: i32, given: i32 },
}

impl From<std::io::Error> for EngineError {
    fn from(e: std::io::Error) -> Self {
        if crate::meta::log_dirs::is_disk_failure(&e) {
            EngineError::DiskFailure(e.to_string())
        } else {
            EngineError::Storage(e.to_string())
        }
    }
}
