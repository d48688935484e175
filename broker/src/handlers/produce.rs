//! Produce: validate and append each partition's batch, answer per partition.
//!
//! Only the partition's leader appends; any other broker answers
//! NOT_LEADER_OR_FOLLOWER with the leader it knows (KIP-951, v10+), so that
//! the client can go there without a metadata round trip. With one replica,
//! acks=1 and acks=all are met once the batch is written to the log (the
//! page cache): a `kill -9` of the broker cannot lose it.

use std::collections::BTreeSet;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::Origin;
use crate::clock::now_ms;
use crate::errors::{self, code};
use crate::state::{Broker, Topic};

/// Clients before Produce v8 do not know INVALID_RECORD (KIP-467); they get CORRUPT_MESSAGE.
const INVALID_RECORD_VERSION_MIN: i16 = 8;

pub fn handle(
    broker: &Broker,
    request: ProduceRequest,
    version: i16,
    origin: Origin<'_>,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let mut appended = false;
    let mut redirects = BTreeSet::new();
    let responses = request
        .topic_data
        .into_iter()
        .map(|topic_data| {
            let name = topic_data.name.0.as_str();
            let topic = broker.topic(name);
            let partition_responses = topic_data
                .partition_data
                .into_iter()
                .map(|data| {
                    let mut response =
                        produce_partition(broker, name, topic.as_deref(), data, acks);
                    if version < INVALID_RECORD_VERSION_MIN
                        && response.error_code == code(ResponseError::InvalidRecord)
                    {
                        response.error_code = code(ResponseError::CorruptMessage);
                    }
                    if response.current_leader.leader_id.0 >= 0 {
                        redirects.insert(response.current_leader.leader_id.0);
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
    Some(
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints(broker, &redirects, origin.listener)),
    )
}

fn produce_partition(
    broker: &Broker,
    name: &str,
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
    if crate::state::is_internal(name) {
        return fail(
            ResponseError::InvalidTopicException,
            format!("Cannot append to internal topic {name}"),
        );
    }
    let Some(partition) = topic.and_then(|topic| topic.partition(data.index)) else {
        return not_here(broker, name, data.index, response);
    };
    let records: Bytes = data.records.unwrap_or_default();
    if let Err(message) = exactly_one_batch(&records) {
        return fail(ResponseError::InvalidRecord, message);
    }
    match partition.append(records, now_ms()) {
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
        Err(not_leader) => response
            .with_error_code(errors::not_leader_code(&not_leader))
            .with_current_leader(current_leader(broker, name, data.index)),
    }
}

/// A partition this broker has no `Partition` for: one the cluster has
/// (not applied here yet) is NOT_LEADER_OR_FOLLOWER, else unknown.
fn not_here(
    broker: &Broker,
    name: &str,
    index: i32,
    response: PartitionProduceResponse,
) -> PartitionProduceResponse {
    if broker.metadata().partition(name, index).is_some() {
        response
            .with_error_code(code(ResponseError::NotLeaderOrFollower))
            .with_current_leader(current_leader(broker, name, index))
    } else {
        response
            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
            .with_error_message(Some(StrBytes::from_static_str(
                "This server does not host this topic-partition.",
            )))
    }
}

/// KIP-951: the partition's leader and epoch in the freshest metadata, if
/// it has a live one.
fn current_leader(broker: &Broker, name: &str, index: i32) -> LeaderIdAndEpoch {
    let metadata = broker.metadata();
    match metadata.partition(name, index) {
        Some(partition) if metadata.is_alive(partition.leader) => LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(partition.leader))
            .with_leader_epoch(partition.leader_epoch),
        _ => LeaderIdAndEpoch::default(),
    }
}

fn node_endpoints(broker: &Broker, ids: &BTreeSet<i32>, listener: &str) -> Vec<NodeEndpoint> {
    let metadata = broker.metadata();
    ids.iter()
        .filter_map(|id| {
            let (host, port, rack) = super::endpoint(&metadata, *id, listener)?;
            Some(
                NodeEndpoint::default()
                    .with_node_id(BrokerId(*id))
                    .with_host(StrBytes::from_string(host.to_string()))
                    .with_port(i32::from(port))
                    .with_rack(rack.map(|rack| StrBytes::from_string(rack.to_string()))),
            )
        })
        .collect()
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
