//! ListOffsets: earliest, latest, max timestamp, or the first offset at or
//! after a timestamp.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::RequestContext;
use crate::authorizer::{Operation, ResourceType};
use crate::broker::Broker;
use crate::errors::{self, code};
use crate::partition::Partition;

const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
/// `isolation_level` of read_committed consumers.
const READ_COMMITTED: i8 = 1;
/// `replica_id` of a consumer's request.
const CONSUMER_REPLICA_ID: i32 = -1;
/// The response carries the leader epoch from v4 on.
const LEADER_EPOCH_VERSION_MIN: i16 = 4;

pub(super) fn handle(
    broker: &Broker,
    request: ListOffsetsRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> ListOffsetsResponse {
    let who = origin.who(ApiKey::ListOffsets);
    let read_committed = request.isolation_level == READ_COMMITTED;
    // A consumer's request, not a replica's or a debugging tool's (Kafka
    // reads only those at an isolation level, and refuses only those while
    // a new leader's high watermark catches up).
    let client = request.replica_id.0 == CONSUMER_REPLICA_ID;
    let topics = request
        .topics
        .into_iter()
        .map(|topic_request| {
            let name = topic_request.name.0.as_str();
            // DESCRIBE on the topic.
            let topic = broker
                .authorizer
                .authorize(&who, Operation::Describe, ResourceType::Topic, name)
                .then(|| broker.topic(name))
                .ok_or(());
            if topic.is_err() {
                let partitions = topic_request
                    .partitions
                    .iter()
                    .map(|p| failed(p, code(ResponseError::TopicAuthorizationFailed)))
                    .collect();
                return ListOffsetsTopicResponse::default()
                    .with_name(topic_request.name)
                    .with_partitions(partitions);
            }
            let topic = topic.ok().flatten();
            let partitions = topic_request
                .partitions
                .iter()
                .map(|partition_request| {
                    let index = partition_request.partition_index;
                    match topic.as_ref().and_then(|topic| topic.partition(index)) {
                        Some(partition) => list_partition(
                            partition,
                            partition_request,
                            version,
                            read_committed,
                            client,
                        ),
                        None if broker.metadata().partition(name, index).is_some() => {
                            failed(partition_request, code(ResponseError::NotLeaderOrFollower))
                        }
                        None => failed(
                            partition_request,
                            code(ResponseError::UnknownTopicOrPartition),
                        ),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic_request.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn failed(request: &ListOffsetsPartition, error_code: i16) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(request.partition_index)
        .with_error_code(error_code)
        .with_offset(-1)
        .with_timestamp(-1)
}

fn list_partition(
    partition: &Partition,
    request: &ListOffsetsPartition,
    version: i16,
    read_committed: bool,
    client: bool,
) -> ListOffsetsPartitionResponse {
    let epoch_error =
        errors::leader_epoch_code(request.current_leader_epoch, partition.leader_epoch());
    if epoch_error != errors::NONE {
        return failed(request, epoch_error);
    }
    let found = partition.lead(|log, state| {
        // KIP-207: while a new leader's high watermark is below the start of
        // its epoch, a consumer asking for the latest offset (or for a
        // timestamp found nowhere below the high watermark) gets
        // OFFSET_NOT_AVAILABLE, which clients retry, not an end that may lie
        // below one the old leader already showed.
        let lagging = client
            .then(|| partition.high_watermark_behind_epoch_start(log, state))
            .flatten();
        let found = match request.timestamp {
            LATEST_TIMESTAMP if lagging.is_some() => Ok(None),
            // read_committed consumers end at the last stable offset.
            LATEST_TIMESTAMP if read_committed => Ok(Some((log.last_stable_offset(), -1))),
            LATEST_TIMESTAMP => Ok(Some((log.high_watermark(), -1))),
            EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok(Some((log.log_start_offset(), -1))),
            MAX_TIMESTAMP => log.max_timestamp(),
            timestamp => log.offset_for_timestamp(timestamp),
        };
        match (found, lagging) {
            (Ok(None), Some(epoch_start)) => {
                tracing::debug!(
                    topic = %partition.topic,
                    partition = request.partition_index,
                    epoch_start,
                    high_watermark = log.high_watermark(),
                    "ListOffsets: offset not available, the high watermark is below the start of this leader's epoch"
                );
                Err(code(ResponseError::OffsetNotAvailable))
            }
            (Ok(found), _) => Ok((found, state.leader_epoch)),
            (Err(error), _) => Err(errors::storage_error_code(&error)),
        }
    });
    match found {
        Ok(Ok((Some((offset, timestamp)), leader_epoch))) => {
            ListOffsetsPartitionResponse::default()
                .with_partition_index(request.partition_index)
                .with_offset(offset)
                .with_timestamp(timestamp)
                .with_leader_epoch(if version >= LEADER_EPOCH_VERSION_MIN {
                    leader_epoch
                } else {
                    -1
                })
        }
        Ok(Ok((None, _))) => failed(request, errors::NONE),
        Ok(Err(error_code)) => failed(request, error_code),
        Err(not_leader) => failed(request, errors::not_leader_code(&not_leader)),
    }
}
