//! Produce: validate and append each partition's batch, answer per partition.
//!
//! With one replica, acks=1 and acks=all are met once the batch is written
//! to the log (the page cache): a `kill -9` of the broker cannot lose it.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::clock::now_ms;
use crate::errors::{self, code};
use crate::state::{Broker, Topic};

/// Clients before Produce v8 do not know INVALID_RECORD (KIP-467); they get CORRUPT_MESSAGE.
const INVALID_RECORD_VERSION_MIN: i16 = 8;

pub fn handle(broker: &Broker, request: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let acks = request.acks;
    let mut appended = false;
    let responses = request
        .topic_data
        .into_iter()
        .map(|topic_data| {
            let topic = broker.topic(topic_data.name.0.as_str());
            let partition_responses = topic_data
                .partition_data
                .into_iter()
                .map(|data| {
                    let mut response = produce_partition(topic.as_deref(), data, acks);
                    if version < INVALID_RECORD_VERSION_MIN
                        && response.error_code == code(ResponseError::InvalidRecord)
                    {
                        response.error_code = code(ResponseError::CorruptMessage);
                    }
                    appended |= response.error_code == errors::NONE;
                    response
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partition_responses)
        })
        .collect();
    if appended {
        broker.notify_appended();
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

fn produce_partition(
    topic: Option<&Topic>,
    data: PartitionProduceData,
    acks: i16,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(data.index)
        .with_base_offset(-1);
    let fail = |error: ResponseError, message: String| {
        tracing::debug!(partition = data.index, %message, "produce rejected");
        response
            .clone()
            .with_error_code(code(error))
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if !matches!(acks, -1..=1) {
        return fail(
            ResponseError::InvalidRequiredAcks,
            format!("acks={acks} is not 0, 1 or -1"),
        );
    }
    if let Some(topic) = topic.filter(|topic| crate::state::is_internal(&topic.name)) {
        return fail(
            ResponseError::InvalidTopicException,
            format!("Cannot append to internal topic {}", topic.name),
        );
    }
    let Some(partition) = topic.and_then(|topic| {
        usize::try_from(data.index)
            .ok()
            .and_then(|index| topic.partitions.get(index))
    }) else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            "This server does not host this topic-partition.".into(),
        );
    };
    let records: Bytes = data.records.unwrap_or_default();
    if let Err(message) = exactly_one_batch(&records) {
        return fail(ResponseError::InvalidRecord, message);
    }
    let appended = partition.append(records, now_ms());
    match appended {
        Ok(Ok(info)) => response
            .with_base_offset(info.first_offset)
            .with_log_append_time_ms(info.log_append_time_ms)
            .with_log_start_offset(info.log_start_offset),
        Ok(Err(error)) => {
            tracing::info!(topic = %partition.topic, partition = partition.index, %error, "append rejected");
            response
                .with_error_code(errors::storage_error_code(&error))
                .with_error_message(Some(StrBytes::from_string(error.to_string())))
        }
        Err(closed) => response.with_error_code(errors::closed_code(&closed)),
    }
}

/// Kafka requires exactly one record batch per partition in Produce v3+.
fn exactly_one_batch(records: &Bytes) -> Result<(), String> {
    match protocol::batch::count_batches(records) {
        Ok(1) => Ok(()),
        Ok(count) => Err(format!(
            "Produce requests must contain exactly one record batch, got {count}"
        )),
        // The full validation, with the precise error, happens in the log.
        Err(_) => Ok(()),
    }
}
