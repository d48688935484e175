//! Produce: validate and append each partition's batch, answer per partition.
//!
//! Only the partition's leader appends; any other broker answers
//! NOT_LEADER_OR_FOLLOWER with the leader it knows (KIP-951, v10+), so that
//! the client can go there without a metadata round trip.
//!
//! acks=1 is answered once the batch is in the leader's log (the page
//! cache: a `kill -9` of the broker cannot lose it). acks=all is refused
//! with NOT_ENOUGH_REPLICAS while the ISR is smaller than
//! `min.insync.replicas`, and answered once the high watermark has passed
//! the batch, i.e. every in-sync replica has it (NOT_ENOUGH_REPLICAS_AFTER_APPEND
//! if the ISR shrank below the minimum meanwhile; REQUEST_TIMED_OUT after the
//! request's timeout). With one replica, that is at once.
//!
//! Produce v0-v2 carry message sets v0/v1: each partition's is up-converted
//! into one record batch before it is appended (`protocol::legacy`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use protocol::api::PRODUCE_RECORD_BATCH_VERSION_MIN;
use protocol::codec::Response;
use protocol::legacy;

use super::{Origin, Reply};
use crate::clock::now_ms;
use crate::errors::{self, code};
use crate::state::{Broker, Partition, Topic};

/// Clients before Produce v8 do not know INVALID_RECORD (KIP-467); they get CORRUPT_MESSAGE.
const INVALID_RECORD_VERSION_MIN: i16 = 8;

/// Longest an acks=all produce waits for its replicas, whatever it asks.
const REPLICATION_WAIT_MS_MAX: u64 = 300_000;

/// An appended batch that acks=all waits for.
struct Pending {
    partition: Arc<Partition>,
    end_offset: i64,
    leader_epoch: i32,
    min_insync_replicas: usize,
}

/// Appends each partition's batch, in request order. With acks=all the
/// response comes once the in-sync replicas have them (`Reply::Later`):
/// the connection reads and appends the requests after this one meanwhile
/// and sends the responses in request order, so a pipelining producer is
/// not held to one replication round trip per request.
pub fn handle(broker: &Broker, request: ProduceRequest, version: i16, origin: Origin<'_>) -> Reply {
    let acks = request.acks;
    let mut redirects = BTreeSet::new();
    let mut pending = Vec::new();
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let name = topic_data.name.0.as_str();
        let topic = broker.topic(name);
        let mut partition_responses = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let (mut response, waiting) =
                produce_partition(broker, name, topic.as_deref(), data, acks, version);
            if version < INVALID_RECORD_VERSION_MIN
                && response.error_code == code(ResponseError::InvalidRecord)
            {
                response.error_code = code(ResponseError::CorruptMessage);
            }
            if response.current_leader.leader_id.0 >= 0 {
                redirects.insert(response.current_leader.leader_id.0);
            }
            if let Some(waiting) = waiting {
                pending.push((responses.len(), partition_responses.len(), waiting));
            }
            partition_responses.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partition_responses),
        );
    }
    if acks == 0 {
        return Reply::Nothing;
    }
    let response = ProduceResponse::default()
        .with_responses(responses)
        .with_node_endpoints(node_endpoints(broker, &redirects, origin.listener));
    if pending.is_empty() {
        return Reply::Now(Response::Produce(response));
    }
    let wait_ms = u64::try_from(request.timeout_ms)
        .unwrap_or(0)
        .min(REPLICATION_WAIT_MS_MAX);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    Reply::Later(Box::pin(async move {
        Response::Produce(wait_replicated(response, pending, deadline).await)
    }))
}

/// The response once every pending batch is replicated, or with the error
/// of each that was not by `deadline`.
async fn wait_replicated(
    mut response: ProduceResponse,
    pending: Vec<(usize, usize, Pending)>,
    deadline: tokio::time::Instant,
) -> ProduceResponse {
    for (t, p, waiting) in pending {
        let replicated = waiting
            .partition
            .wait_replicated(
                waiting.end_offset,
                waiting.leader_epoch,
                waiting.min_insync_replicas,
                deadline,
            )
            .await;
        if let Err(error_code) = replicated {
            tracing::debug!(topic = %waiting.partition.topic, partition = waiting.partition.index, error_code, "acks=all not met");
            let partition = &mut response.responses[t].partition_responses[p];
            partition.error_code = error_code;
            partition.base_offset = -1;
        }
    }
    response
}

/// Appends one partition's batch; with acks=all, also what to wait for.
fn produce_partition(
    broker: &Broker,
    name: &str,
    topic: Option<&Topic>,
    data: PartitionProduceData,
    acks: i16,
    version: i16,
) -> (PartitionProduceResponse, Option<Pending>) {
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
        let message = format!("acks={acks} is not 0, 1 or -1");
        return (fail(ResponseError::InvalidRequiredAcks, message), None);
    }
    if crate::state::is_internal(name) {
        let message = format!("Cannot append to internal topic {name}");
        return (fail(ResponseError::InvalidTopicException, message), None);
    }
    let Some((topic, partition)) =
        topic.and_then(|topic| topic.partition(data.index).map(|p| (topic, p)))
    else {
        return (not_here(broker, name, data.index, response), None);
    };
    let min_insync_replicas = (acks == -1)
        .then(|| min_insync_replicas(&topic.configs, broker.config.min_insync_replicas));
    let mut records: Bytes = data.records.unwrap_or_default();
    if version < PRODUCE_RECORD_BATCH_VERSION_MIN {
        // A message set v0/v1: stored as one record batch, as Kafka 3.x does.
        match legacy::parse(&records, broker.config.socket_request_max_bytes)
            .and_then(|messages| legacy::up_convert(&messages))
        {
            Ok(batch) => records = batch,
            Err(error) => {
                let message = format!("a message set of Produce v{version}: {error}");
                return (fail(ResponseError::CorruptMessage, message), None);
            }
        }
    }
    if let Err(message) = exactly_one_batch(&records) {
        return (fail(ResponseError::InvalidRecord, message), None);
    }
    match partition.append(records, now_ms(), min_insync_replicas) {
        Ok(Ok((info, leader_epoch))) => {
            let pending = min_insync_replicas.map(|min_insync_replicas| Pending {
                partition: partition.clone(),
                end_offset: info.last_offset + 1,
                leader_epoch,
                min_insync_replicas,
            });
            let response = response
                .with_base_offset(info.first_offset)
                .with_log_append_time_ms(info.log_append_time_ms)
                .with_log_start_offset(info.log_start_offset);
            (response, pending)
        }
        Ok(Err(error)) => {
            tracing::info!(topic = %partition.topic, partition = partition.index, %error, "append rejected");
            let response = response
                .with_error_code(errors::append_error_code(&error))
                .with_error_message(Some(StrBytes::from_string(error.to_string())));
            (response, None)
        }
        Err(not_leader) => {
            let response = response
                .with_error_code(errors::not_leader_code(&not_leader))
                .with_current_leader(current_leader(broker, name, data.index));
            (response, None)
        }
    }
}

/// The topic's `min.insync.replicas`, else the broker's.
fn min_insync_replicas(
    configs: &std::collections::BTreeMap<String, String>,
    default: usize,
) -> usize {
    configs
        .get("min.insync.replicas")
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
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

/// KIP-951: where the client should go instead.
fn current_leader(broker: &Broker, name: &str, index: i32) -> LeaderIdAndEpoch {
    match super::current_leader(&broker.metadata(), name, index) {
        Some((leader, epoch)) => LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(leader))
            .with_leader_epoch(epoch),
        None => LeaderIdAndEpoch::default(),
    }
}

fn node_endpoints(broker: &Broker, ids: &BTreeSet<i32>, listener: &str) -> Vec<NodeEndpoint> {
    super::reachable(
        &broker.metadata(),
        ids.iter().copied(),
        listener,
        |id, host, port, rack| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(host)
                .with_port(port)
                .with_rack(rack)
        },
    )
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
