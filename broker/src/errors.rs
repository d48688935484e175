//! The one place where internal errors become Kafka error codes.

use kafka_protocol::error::ResponseError;
use storage::StorageError;

use crate::state::{PartitionClosed, TopicError};

pub const NONE: i16 = 0;

pub fn code(error: ResponseError) -> i16 {
    error.code()
}

pub fn storage_error_code(error: &StorageError) -> i16 {
    code(match error {
        StorageError::CorruptMessage(..) => ResponseError::CorruptMessage,
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::InvalidRecord(..) => ResponseError::InvalidRecord,
        StorageError::InvalidTimestamp { .. } => ResponseError::InvalidTimestamp,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        _ => ResponseError::KafkaStorageError,
    })
}

pub fn topic_error_code(error: &TopicError) -> i16 {
    code(match error {
        TopicError::InvalidName(..) => ResponseError::InvalidTopicException,
        TopicError::Exists(_) => ResponseError::TopicAlreadyExists,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::NotDynamic(_) => ResponseError::InvalidRequest,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        TopicError::Storage(error) => return storage_error_code(error),
        TopicError::Metadata(_) => ResponseError::UnknownServerError,
    })
}

/// A partition closed under a request was being deleted or shut down:
/// the client should refresh its metadata and retry.
pub fn closed_code(_: &PartitionClosed) -> i16 {
    code(ResponseError::NotLeaderOrFollower)
}

/// Checks a client's `current_leader_epoch` against ours (-1: no check).
pub fn leader_epoch_code(requested: i32, ours: i32) -> i16 {
    if requested == -1 || requested == ours {
        NONE
    } else if requested > ours {
        code(ResponseError::UnknownLeaderEpoch)
    } else {
        code(ResponseError::FencedLeaderEpoch)
    }
}
