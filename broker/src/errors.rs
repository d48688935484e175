//! The broker's own error types, and the one place where errors become
//! Kafka error codes.

use std::sync::Arc;

use coordinator::{CoordinatorError, ElectionError};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
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

/// The outcome of a request, or of one item of it, in Kafka's terms:
/// what the code below the handlers returns. It becomes a number only where
/// a response is built ([`code`], [`result_code`], [`option_code`]).
pub(crate) type KafkaResult<T = ()> = Result<T, ResponseError>;

pub(crate) fn code(error: ResponseError) -> i16 {
    error.code()
}

/// [`NONE`] for success, else the error's code.
pub(crate) fn result_code<T>(result: &KafkaResult<T>) -> i16 {
    result.as_ref().err().map_or(NONE, ResponseError::code)
}

/// [`NONE`] for no error, else its code.
pub(crate) fn option_code(error: Option<ResponseError>) -> i16 {
    error.map_or(NONE, |error| error.code())
}

/// KIP-588: a producer fenced by a newer epoch is PRODUCER_FENCED, except
/// to requests older than that error (InitProducerId before v4;
/// AddPartitionsToTxn, AddOffsetsToTxn and EndTxn before v2), which are told
/// INVALID_PRODUCER_EPOCH. The one place where an error depends on the
/// version of the request.
pub(crate) fn for_version<T>(result: KafkaResult<T>, api: ApiKey, version: i16) -> KafkaResult<T> {
    let knows_fenced = match api {
        ApiKey::InitProducerId => version >= 4,
        ApiKey::AddPartitionsToTxn | ApiKey::AddOffsetsToTxn | ApiKey::EndTxn => version >= 2,
        _ => true,
    };
    match result {
        Err(ResponseError::ProducerFenced) if !knows_fenced => {
            Err(ResponseError::InvalidProducerEpoch)
        }
        other => other,
    }
}

pub(crate) fn storage_error(error: &StorageError) -> ResponseError {
    match error {
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
    }
}

pub(crate) fn storage_error_code(error: &StorageError) -> i16 {
    code(storage_error(error))
}

pub(crate) fn append_error(error: &AppendError) -> ResponseError {
    match error {
        AppendError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        AppendError::Storage(error) => storage_error(error),
    }
}

pub(crate) fn append_error_code(error: &AppendError) -> i16 {
    code(append_error(error))
}

pub(crate) fn topic_error(error: &TopicError) -> ResponseError {
    match error {
        TopicError::InvalidName(..) => ResponseError::InvalidTopicException,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::NotDynamic(_) => ResponseError::InvalidRequest,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::Storage(error) => storage_error(error),
        TopicError::Metadata(error) => coordinator_error(error),
    }
}

pub(crate) fn topic_error_code(error: &TopicError) -> i16 {
    code(topic_error(error))
}

pub(crate) fn coordinator_error(error: &CoordinatorError) -> ResponseError {
    match error {
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
    }
}

pub(crate) fn coordinator_error_code(error: &CoordinatorError) -> i16 {
    code(coordinator_error(error))
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
pub(crate) fn not_leader(_: &NotLeader) -> ResponseError {
    ResponseError::NotLeaderOrFollower
}

pub(crate) fn not_leader_code(error: &NotLeader) -> i16 {
    code(not_leader(error))
}

/// What a peer's answer (another broker's response) says, as Kafka's
/// error; a code this broker does not know keeps its number.
pub(crate) fn from_code(error_code: i16) -> KafkaResult {
    if error_code == NONE {
        return Ok(());
    }
    Err(ResponseError::try_from_code(error_code).unwrap_or(ResponseError::Unknown(error_code)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_producer_is_told_what_its_request_version_knows() {
        let fenced: KafkaResult = Err(ResponseError::ProducerFenced);
        let old = Err(ResponseError::InvalidProducerEpoch);
        assert_eq!(for_version(fenced, ApiKey::InitProducerId, 3), old);
        assert_eq!(for_version(fenced, ApiKey::InitProducerId, 4), fenced);
        for api in [
            ApiKey::AddPartitionsToTxn,
            ApiKey::AddOffsetsToTxn,
            ApiKey::EndTxn,
        ] {
            assert_eq!(for_version(fenced, api, 1), old, "{api:?}");
            assert_eq!(for_version(fenced, api, 2), fenced, "{api:?}");
        }
        // Other errors and other APIs are left as they are.
        let other: KafkaResult = Err(ResponseError::ConcurrentTransactions);
        assert_eq!(for_version(other, ApiKey::EndTxn, 0), other);
        assert_eq!(for_version(fenced, ApiKey::TxnOffsetCommit, 0), fenced);
        assert_eq!(from_code(NONE), Ok(()));
        assert_eq!(from_code(90), fenced);
        assert_eq!(from_code(-1), Err(ResponseError::UnknownServerError));
        assert_eq!(from_code(9999), Err(ResponseError::Unknown(9999)));
    }
}
