//! The broker's own error types, and the one place where errors become
//! Kafka error codes.

use std::sync::Arc;

use coordinator::{CoordinatorError, ElectionError};
use kafka_protocol::error::ResponseError;
use storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic name {0:?} is invalid: {1}")]
    InvalidName(String, &'static str),
    #[error("unknown topic {0}")]
    Unknown(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidPartitions(String),
    /// A broker config that cannot change at run time.
    #[error("Cannot update these configs dynamically: {0}")]
    NotDynamic(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(#[from] coordinator::CoordinatorError),
}

/// The partition was closed while a request was using it, or this broker
/// holds no replica of it.
#[derive(Debug, thiserror::Error)]
#[error("partition {topic}-{partition} is closed")]
pub struct PartitionClosed {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// Why a leader did not append.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the ISR has {isr} replicas, fewer than min.insync.replicas={required}")]
    NotEnoughReplicas { isr: usize, required: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// This broker cannot act as the partition's leader now; `leader` and
/// `leader_epoch` are who does, as far as it knows (for KIP-951).
#[derive(Debug, Clone, thiserror::Error)]
#[error("this broker does not lead {topic}-{partition} (leader {leader}, epoch {leader_epoch})")]
pub struct NotLeader {
    pub topic: Arc<str>,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
}

pub(crate) const NONE: i16 = 0;

pub(crate) fn code(error: ResponseError) -> i16 {
    error.code()
}

pub(crate) fn storage_error_code(error: &StorageError) -> i16 {
    code(match error {
        StorageError::CorruptMessage(..) => ResponseError::CorruptMessage,
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::InvalidRecord(..) => ResponseError::InvalidRecord,
        StorageError::InvalidTimestamp { .. } => ResponseError::InvalidTimestamp,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
        StorageError::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        StorageError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        StorageError::TransactionCoordinatorFenced(_) => {
            ResponseError::TransactionCoordinatorFenced
        }
        _ => ResponseError::KafkaStorageError,
    })
}

pub(crate) fn append_error_code(error: &AppendError) -> i16 {
    match error {
        AppendError::NotEnoughReplicas { .. } => code(ResponseError::NotEnoughReplicas),
        AppendError::Storage(error) => storage_error_code(error),
    }
}

pub(crate) fn topic_error_code(error: &TopicError) -> i16 {
    code(match error {
        TopicError::InvalidName(..) => ResponseError::InvalidTopicException,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::NotDynamic(_) => ResponseError::InvalidRequest,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::Storage(error) => return storage_error_code(error),
        TopicError::Metadata(error) => return coordinator_error_code(error),
    })
}

pub(crate) fn coordinator_error_code(error: &CoordinatorError) -> i16 {
    code(match error {
        CoordinatorError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        CoordinatorError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        CoordinatorError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        CoordinatorError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        CoordinatorError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        CoordinatorError::NotController => ResponseError::NotController,
        CoordinatorError::Fenced(_) => ResponseError::InvalidUpdateVersion,
        // Retriable: the client tries again once etcd answers.
        CoordinatorError::Unavailable(_) => ResponseError::RequestTimedOut,
        CoordinatorError::Io { .. } | CoordinatorError::Corrupt { .. } => {
            ResponseError::UnknownServerError
        }
    })
}

pub(crate) fn election_error_code(error: &ElectionError) -> i16 {
    code(match error {
        ElectionError::NotNeeded => ResponseError::ElectionNotNeeded,
        ElectionError::PreferredLeaderNotAvailable(_) => ResponseError::PreferredLeaderNotAvailable,
        ElectionError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
        ElectionError::UnknownPartition => ResponseError::UnknownTopicOrPartition,
    })
}

/// This broker does not lead the partition (now): the client should
/// refresh its metadata and go to the leader.
pub(crate) fn not_leader_code(_: &NotLeader) -> i16 {
    code(ResponseError::NotLeaderOrFollower)
}

/// Checks a client's `current_leader_epoch` against ours (-1: no check).
pub(crate) fn leader_epoch_code(requested: i32, ours: i32) -> i16 {
    if requested == -1 || requested == ours {
        NONE
    } else if requested > ours {
        code(ResponseError::UnknownLeaderEpoch)
    } else {
        code(ResponseError::FencedLeaderEpoch)
    }
}
