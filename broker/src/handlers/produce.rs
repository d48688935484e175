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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, BrokerId, ProduceRequest, ProduceResponse, ProducerId,
    TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use protocol::batch::BatchHeader;

use protocol::api::PRODUCE_RECORD_BATCH_VERSION_MIN;
use protocol::codec::Response;
use protocol::legacy;

use super::{Reply, RequestContext};
use crate::authorizer::{Operation, ResourceType};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::errors::{self, code};
use crate::internal_topics::{partition_for, TRANSACTION_STATE_TOPIC};
use crate::partition::Partition;
use crate::topics::Topic;

/// AddPartitionsToTxn v4 carries the verification of brokers (KIP-890).
const VERIFY_VERSION: i16 = 4;

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
pub(super) async fn handle(
    broker: &Broker,
    request: ProduceRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> Reply {
    // A transactional producer needs WRITE on its transactional id
    // (CVE-2018-17196), and every producer WRITE on each topic.
    let who = origin.who(ApiKey::Produce);
    let transaction_denied = request.transactional_id.as_ref().is_some_and(|id| {
        !broker.authorizer.authorize(
            &who,
            Operation::Write,
            ResourceType::TransactionalId,
            id.0.as_str(),
        )
    });
    let denied: BTreeSet<String> = request
        .topic_data
        .iter()
        .filter(|_| broker.authorizer.enabled())
        .map(|topic| topic.name.0.to_string())
        .filter(|name| {
            transaction_denied
                || !broker
                    .authorizer
                    .authorize(&who, Operation::Write, ResourceType::Topic, name)
        })
        .collect();
    let verified = if transaction_denied {
        HashMap::default()
    } else {
        verify_transactions(broker, &request).await
    };
    let acks = request.acks;
    let mut redirects = BTreeSet::new();
    let mut pending = Vec::new();
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let name = topic_data.name.0.as_str();
        let topic = broker.topic(name);
        let mut partition_responses = Vec::with_capacity(topic_data.partition_data.len());
        if denied.contains(name) {
            let error = if transaction_denied {
                ResponseError::TransactionalIdAuthorizationFailed
            } else {
                ResponseError::TopicAuthorizationFailed
            };
            partition_responses.extend(topic_data.partition_data.iter().map(|data| {
                PartitionProduceResponse::default()
                    .with_index(data.index)
                    .with_error_code(code(error))
                    .with_base_offset(-1)
            }));
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic_data.name)
                    .with_partition_responses(partition_responses),
            );
            continue;
        }
        for data in topic_data.partition_data {
            let verification = verified.get(&(name.to_string(), data.index)).copied();
            let (mut response, waiting) = produce_partition(
                broker,
                name,
                topic.as_deref(),
                data,
                acks,
                version,
                verification,
            );
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
        if let Err(error) = replicated {
            tracing::debug!(topic = %waiting.partition.topic, partition = waiting.partition.index, %error, "acks=all not met");
            let partition = &mut response.responses[t].partition_responses[p];
            partition.error_code = code(error);
            partition.base_offset = -1;
        }
    }
    response
}

/// Appends one partition's batch; with acks=all, also what to wait for.
/// `verification`: the outcome of verifying the batch's transaction with
/// its coordinator, when it starts the transaction in this partition.
fn produce_partition(
    broker: &Broker,
    name: &str,
    topic: Option<&Topic>,
    data: PartitionProduceData,
    acks: i16,
    version: i16,
    verification: Option<Result<u64, i16>>,
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
    if crate::topics::is_internal(name) {
        let message = format!("Cannot append to internal topic {name}");
        return (fail(ResponseError::InvalidTopicException, message), None);
    }
    let Some((topic, partition)) =
        topic.and_then(|topic| topic.partition(data.index).map(|p| (topic, p)))
    else {
        return (not_here(broker, name, data.index, response), None);
    };
    let min_insync_replicas = (acks == -1).then(|| {
        min_insync_replicas(
            &topic.configs,
            broker.config.replication.min_insync_replicas,
        )
    });
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
    let guard = match verification {
        Some(Err(error_code)) => {
            let response = response
                .with_error_code(error_code)
                .with_error_message(Some(StrBytes::from_static_str(
                    "the transaction coordinator did not verify this transaction",
                )));
            return (response, None);
        }
        Some(Ok(guard)) => Some(guard),
        None => None,
    };
    let bytes = records.len() as u64;
    match partition.append_verified(records, now_ms(), min_insync_replicas, guard) {
        Ok(Ok((info, leader_epoch))) => {
            let messages = u64::try_from(info.last_offset - info.first_offset + 1).unwrap_or(0);
            broker.metrics.produced(name, messages, bytes);
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

type TopicPartition = (String, i32);

/// Where a transactional batch stands before it is appended.
type Verified = HashMap<TopicPartition, Result<u64, i16>>;

/// KIP-890: the first transactional batch of a producer's transaction in a
/// partition is appended only once the transaction coordinator confirms
/// that the partition is in the producer's open transaction at that epoch
/// (so a batch that arrives after its transaction was aborted cannot open a
/// transaction that nothing will end). For each such partition, the guard
/// to append with, or the error to answer: coordinator trouble is
/// NOT_ENOUGH_REPLICAS (retriable, as Kafka answers), a fenced producer
/// INVALID_PRODUCER_EPOCH, anything else INVALID_TXN_STATE.
async fn verify_transactions(broker: &Broker, request: &ProduceRequest) -> Verified {
    let mut needed: Vec<(TopicPartition, i64, i16, u64)> = Vec::new();
    for topic_data in &request.topic_data {
        let Some(topic) = broker.topic(&topic_data.name.0) else {
            continue;
        };
        for data in &topic_data.partition_data {
            let Some(header) = data
                .records
                .as_ref()
                .and_then(|records| BatchHeader::parse(records).ok())
            else {
                continue;
            };
            if !header.is_transactional() || header.is_control() || header.producer_id < 0 {
                continue;
            }
            let Some(partition) = topic.partition(data.index) else {
                continue;
            };
            let guard = partition.with_log(|log| {
                log.producers()
                    .verification_guard(header.producer_id, header.producer_epoch)
            });
            if let Ok(Some(guard)) = guard {
                let key = (topic_data.name.0.to_string(), data.index);
                needed.push((key, header.producer_id, header.producer_epoch, guard));
            }
        }
    }
    let mut verified = Verified::new();
    if needed.is_empty() {
        return verified;
    }
    let Some(transactional_id) = request.transactional_id.as_ref().map(|id| id.0.to_string())
    else {
        tracing::info!("transactional batches in a produce request without a transactional id");
        for (key, ..) in needed {
            verified.insert(key, Err(code(ResponseError::InvalidTxnState)));
        }
        return verified;
    };
    // One producer per request in practice; grouped in case of several.
    let mut by_producer: BTreeMap<(i64, i16), Vec<(TopicPartition, u64)>> = BTreeMap::new();
    for (key, producer_id, epoch, guard) in needed {
        by_producer
            .entry((producer_id, epoch))
            .or_default()
            .push((key, guard));
    }
    for ((producer_id, epoch), partitions) in by_producer {
        let keys: Vec<(String, i32)> = partitions.iter().map(|(key, _)| key.clone()).collect();
        let codes = ask_coordinator(broker, &transactional_id, producer_id, epoch, &keys).await;
        for ((key, guard), error_code) in partitions.into_iter().zip(codes) {
            let outcome = match ResponseError::try_from_code(error_code) {
                None if error_code == errors::NONE => Ok(guard),
                Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch) => {
                    Err(code(ResponseError::InvalidProducerEpoch))
                }
                Some(
                    ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::CoordinatorLoadInProgress
                    | ResponseError::ConcurrentTransactions
                    | ResponseError::NetworkException
                    | ResponseError::RequestTimedOut,
                ) => Err(code(ResponseError::NotEnoughReplicas)),
                _ => Err(code(ResponseError::InvalidTxnState)),
            };
            if let Err(error_code) = outcome {
                tracing::info!(transactional_id, producer_id, epoch, topic = %key.0, partition = key.1, error_code, "transactional batch not verified");
            }
            verified.insert(key, outcome);
        }
    }
    verified
}

/// The coordinator's verification of `partitions`: asked directly when this
/// broker coordinates `transactional_id`, else with AddPartitionsToTxn v4
/// (verify only) at the leader of its `__transaction_state` partition.
async fn ask_coordinator(
    broker: &Broker,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Vec<i16> {
    if broker.transactions.coordinates(transactional_id) {
        return broker
            .transactions
            .verify(transactional_id, producer_id, epoch, partitions)
            .iter()
            .map(errors::result_code)
            .collect();
    }
    let unavailable = vec![code(ResponseError::CoordinatorNotAvailable); partitions.len()];
    let metadata = broker.metadata();
    let Some(coordinator) = metadata.topic(TRANSACTION_STATE_TOPIC).and_then(|topic| {
        let index = partition_for(transactional_id, topic.partitions.len() as i32);
        topic.partitions.get(index as usize).map(|p| p.leader)
    }) else {
        return unavailable;
    };
    if coordinator < 0 || coordinator == broker.node_id() {
        return unavailable;
    }
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in partitions {
        topics.entry(topic).or_default().push(*index);
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(
                topics
                    .iter()
                    .map(|(topic, indexes)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partitions(indexes.clone())
                    })
                    .collect(),
            ),
    ]);
    let response = match broker
        .peers
        .call(coordinator, request, VERIFY_VERSION)
        .await
    {
        Ok(response) => response,
        Err(error) => {
            tracing::info!(coordinator, %error, "verifying a transaction failed");
            return unavailable;
        }
    };
    if response.error_code != errors::NONE {
        return vec![response.error_code; partitions.len()];
    }
    let mut codes: HashMap<(String, i32), i16> = HashMap::new();
    for result in response.results_by_transaction {
        for topic in result.topic_results {
            for partition in topic.results_by_partition {
                codes.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.partition_error_code,
                );
            }
        }
    }
    partitions
        .iter()
        .map(|key| {
            codes
                .get(key)
                .copied()
                .unwrap_or(code(ResponseError::UnknownServerError))
        })
        .collect()
}
