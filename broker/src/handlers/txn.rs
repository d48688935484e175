//! The transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn (on the
//! transaction coordinator), TxnOffsetCommit (on the group coordinator),
//! WriteTxnMarkers (on partition leaders, from coordinators), and
//! DescribeTransactions / ListTransactions for operators.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_request::WritableTxnMarkerTopic;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{cluster_allows, RequestContext};
use crate::authorizer::{Operation, ResourceType};
use crate::broker::txn_markers::{self, MarkerWrite};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::errors::{code, for_version, result_code, NONE};
use crate::group::{CommitOffset, CommitRequest};
use crate::internal_topics::{partition_for, OFFSETS_TOPIC};

/// AddPartitionsToTxn v4+ batches transactions (brokers verifying them, KIP-890).
const ADD_PARTITIONS_BATCHED_VERSION_MIN: i16 = 4;
/// TxnOffsetCommit v3+ names the group member (KIP-447).
const TXN_COMMIT_MEMBER_VERSION_MIN: i16 = 3;

type TopicPartition = (String, i32);

/// The partitions of a request's topics, and those the cluster lacks.
fn partitions_of(
    broker: &Broker,
    topics: &[AddPartitionsToTxnTopic],
) -> (Vec<TopicPartition>, BTreeSet<TopicPartition>) {
    let metadata = broker.metadata();
    let mut all = Vec::new();
    let mut unknown = BTreeSet::new();
    for topic in topics {
        for index in &topic.partitions {
            let partition = (topic.name.0.to_string(), *index);
            if metadata.partition(&partition.0, *index).is_none() {
                unknown.insert(partition.clone());
            }
            all.push(partition);
        }
    }
    (all, unknown)
}

/// Per-topic results of AddPartitionsToTxn, each partition's code from `code_of`.
fn topic_results(
    topics: &[AddPartitionsToTxnTopic],
    mut code_of: impl FnMut(&str, i32) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|topic| {
            let results = topic
                .partitions
                .iter()
                .map(|index| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*index)
                        .with_partition_error_code(code_of(&topic.name.0, *index))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(results)
        })
        .collect()
}

/// When some partitions are unknown: those get UNKNOWN_TOPIC_OR_PARTITION
/// and the others OPERATION_NOT_ATTEMPTED; else every partition gets
/// `error_code`.
fn added_results(
    topics: &[AddPartitionsToTxnTopic],
    unknown: &BTreeSet<TopicPartition>,
    error_code: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topic_results(topics, |topic, index| {
        if unknown.is_empty() {
            error_code
        } else if unknown.contains(&(topic.to_string(), index)) {
            code(ResponseError::UnknownTopicOrPartition)
        } else {
            code(ResponseError::OperationNotAttempted)
        }
    })
}

/// What refuses a client's AddPartitionsToTxn: without WRITE on the
/// transactional id every partition is TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
/// without WRITE on a topic its partitions are TOPIC_AUTHORIZATION_FAILED
/// and the others OPERATION_NOT_ATTEMPTED.
fn refused_partitions(
    broker: &Broker,
    origin: RequestContext<'_>,
    transactional_id: &str,
    topics: &[AddPartitionsToTxnTopic],
) -> Option<Vec<AddPartitionsToTxnTopicResult>> {
    let who = origin.who(ApiKey::AddPartitionsToTxn);
    if !broker.authorizer.authorize(
        &who,
        Operation::Write,
        ResourceType::TransactionalId,
        transactional_id,
    ) {
        let denied = code(ResponseError::TransactionalIdAuthorizationFailed);
        return Some(topic_results(topics, |_, _| denied));
    }
    let denied: BTreeSet<&str> = topics
        .iter()
        .map(|topic| topic.name.0.as_str())
        .filter(|name| {
            !broker
                .authorizer
                .authorize(&who, Operation::Write, ResourceType::Topic, name)
        })
        .collect();
    (!denied.is_empty()).then(|| {
        topic_results(topics, |topic, _| {
            if denied.contains(topic) {
                code(ResponseError::TopicAuthorizationFailed)
            } else {
                code(ResponseError::OperationNotAttempted)
            }
        })
    })
}

pub(super) async fn add_partitions_to_txn(
    broker: &Broker,
    request: AddPartitionsToTxnRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> AddPartitionsToTxnResponse {
    if version < ADD_PARTITIONS_BATCHED_VERSION_MIN {
        if let Some(refused) = refused_partitions(
            broker,
            origin,
            &request.v3_and_below_transactional_id,
            &request.v3_and_below_topics,
        ) {
            return AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(refused);
        }
        let (partitions, unknown) = partitions_of(broker, &request.v3_and_below_topics);
        let error_code = if unknown.is_empty() {
            let added = broker
                .transactions
                .add_partitions(
                    &request.v3_and_below_transactional_id.0,
                    request.v3_and_below_producer_id.0,
                    request.v3_and_below_producer_epoch,
                    &partitions,
                )
                .await;
            result_code(&for_version(added, ApiKey::AddPartitionsToTxn, version))
        } else {
            NONE
        };
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
            added_results(&request.v3_and_below_topics, &unknown, error_code),
        );
    }
    // v4+: several transactions; with verify_only, a leader asks whether
    // the partitions are in the transaction already (KIP-890). Only brokers
    // send it: CLUSTER_ACTION on the cluster.
    if !cluster_allows(
        broker,
        origin,
        ApiKey::AddPartitionsToTxn,
        Operation::ClusterAction,
    ) {
        return AddPartitionsToTxnResponse::default()
            .with_error_code(code(ResponseError::ClusterAuthorizationFailed));
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for transaction in request.transactions {
        let (partitions, unknown) = partitions_of(broker, &transaction.topics);
        let id = transaction.transactional_id.0.to_string();
        let topic_results = if transaction.verify_only {
            let codes = broker.transactions.verify(
                &id,
                transaction.producer_id.0,
                transaction.producer_epoch,
                &partitions,
            );
            let mut codes = codes.into_iter();
            topic_results(&transaction.topics, |_, _| {
                codes.next().map_or(NONE, |verified| result_code(&verified))
            })
        } else {
            let error_code = if unknown.is_empty() {
                let added = broker
                    .transactions
                    .add_partitions(
                        &id,
                        transaction.producer_id.0,
                        transaction.producer_epoch,
                        &partitions,
                    )
                    .await;
                result_code(&added)
            } else {
                NONE
            };
            added_results(&transaction.topics, &unknown, error_code)
        };
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(transaction.transactional_id)
                .with_topic_results(topic_results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

pub(super) async fn add_offsets_to_txn(
    broker: &Broker,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let response = AddOffsetsToTxnResponse::default();
    if let Err(error) = broker.ensure_offsets_topic().await {
        tracing::error!(%error, "creating __consumer_offsets failed");
        return response.with_error_code(code(ResponseError::CoordinatorNotAvailable));
    }
    let Some(count) = broker
        .topic(OFFSETS_TOPIC)
        .map(|topic| topic.partitions.len() as i32)
    else {
        return response.with_error_code(code(ResponseError::CoordinatorNotAvailable));
    };
    // The group's partition of __consumer_offsets joins the transaction.
    let partition = (
        OFFSETS_TOPIC.to_string(),
        partition_for(&request.group_id.0, count),
    );
    let result = broker
        .transactions
        .add_partitions(
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            &[partition],
        )
        .await;
    response.with_error_code(result_code(&for_version(
        result,
        ApiKey::AddOffsetsToTxn,
        version,
    )))
}

pub(super) async fn end_txn(
    broker: &Broker,
    request: EndTxnRequest,
    version: i16,
) -> EndTxnResponse {
    let result = broker
        .transactions
        .end_txn(
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        )
        .await;
    EndTxnResponse::default()
        .with_error_code(result_code(&for_version(result, ApiKey::EndTxn, version)))
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub(super) async fn write_txn_markers(
    broker: &Broker,
    request: WriteTxnMarkersRequest,
    origin: RequestContext<'_>,
) -> WriteTxnMarkersResponse {
    // Only transaction coordinators send markers: CLUSTER_ACTION.
    let allowed = cluster_allows(
        broker,
        origin,
        ApiKey::WriteTxnMarkers,
        Operation::ClusterAction,
    );
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        if !allowed {
            let denied = code(ResponseError::ClusterAuthorizationFailed);
            results.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(marker.producer_id)
                    .with_topics(marker_topics(marker.topics, || denied)),
            );
            continue;
        }
        let partitions: Vec<(String, i32)> = marker
            .topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partition_indexes
                    .iter()
                    .map(|index| (topic.name.0.to_string(), *index))
            })
            .collect();
        let write = MarkerWrite {
            producer_id: marker.producer_id.0,
            producer_epoch: marker.producer_epoch,
            commit: marker.transaction_result,
            coordinator_epoch: marker.coordinator_epoch,
        };
        let mut codes = txn_markers::write_markers(broker, write, &partitions)
            .await
            .into_iter()
            .map(|written| result_code(&written));
        let topics = marker_topics(marker.topics, || codes.next().unwrap_or(NONE));
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

/// WriteTxnMarkers' results for a marker's topics, each partition's code
/// from `code_of`, in request order.
fn marker_topics(
    topics: Vec<WritableTxnMarkerTopic>,
    mut code_of: impl FnMut() -> i16,
) -> Vec<WritableTxnMarkerTopicResult> {
    topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|index| {
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(*index)
                        .with_error_code(code_of())
                })
                .collect();
            WritableTxnMarkerTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect()
}

pub(super) async fn txn_offset_commit(
    broker: &Broker,
    request: TxnOffsetCommitRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> TxnOffsetCommitResponse {
    // WRITE on the transactional id, READ on the group and on each topic.
    let who = origin.who(ApiKey::TxnOffsetCommit);
    let authorizer = &broker.authorizer;
    let refused_all = if !authorizer.authorize(
        &who,
        Operation::Write,
        ResourceType::TransactionalId,
        &request.transactional_id,
    ) {
        Some(code(ResponseError::TransactionalIdAuthorizationFailed))
    } else if !authorizer.authorize(
        &who,
        Operation::Read,
        ResourceType::Group,
        &request.group_id,
    ) {
        Some(code(ResponseError::GroupAuthorizationFailed))
    } else {
        None
    };
    let metadata = broker.metadata();
    let mut commits = Vec::new();
    let mut placed = Vec::new(); // (topic, partition, Ok(commit index) | Err(code))
    for topic in &request.topics {
        let refused = refused_all.or_else(|| {
            (!authorizer.authorize(&who, Operation::Read, ResourceType::Topic, &topic.name))
                .then(|| code(ResponseError::TopicAuthorizationFailed))
        });
        for partition in &topic.partitions {
            if let Some(error) = refused {
                placed.push((topic.name.clone(), partition.partition_index, Err(error)));
                continue;
            }
            let known = metadata
                .partition(&topic.name.0, partition.partition_index)
                .is_some();
            if !known {
                placed.push((
                    topic.name.clone(),
                    partition.partition_index,
                    Err(code(ResponseError::UnknownTopicOrPartition)),
                ));
                continue;
            }
            placed.push((
                topic.name.clone(),
                partition.partition_index,
                Ok(commits.len()),
            ));
            commits.push(CommitOffset::new(
                &topic.name.0,
                partition.partition_index,
                partition.committed_offset,
                partition.committed_leader_epoch,
                partition.committed_metadata.as_ref(),
            ));
        }
    }
    let results = if commits.is_empty() {
        Vec::new()
    } else {
        let member = version >= TXN_COMMIT_MEMBER_VERSION_MIN;
        broker
            .groups
            .commit(
                CommitRequest {
                    group_id: request.group_id.0.to_string(),
                    generation_id: if member { request.generation_id } else { -1 },
                    member_id: if member {
                        request.member_id.to_string()
                    } else {
                        String::new()
                    },
                    group_instance_id: request
                        .group_instance_id
                        .as_ref()
                        .map(std::string::ToString::to_string),
                    offsets: commits,
                    producer: Some((request.producer_id.0, request.producer_epoch)),
                },
                now_ms(),
            )
            .await
    };
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    for (name, index, outcome) in placed {
        let error_code = match outcome {
            Ok(i) => result_code(&results[i]),
            Err(error_code) => error_code,
        };
        if topics.last().is_none_or(|topic| topic.name != name) {
            topics.push(TxnOffsetCommitResponseTopic::default().with_name(name));
        }
        topics.last_mut().expect("just pushed").partitions.push(
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(error_code),
        );
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

fn partitions_by_topic(partitions: &BTreeSet<(String, i32)>) -> Vec<TopicData> {
    let mut topics: Vec<TopicData> = Vec::new();
    for (topic, index) in partitions {
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == topic => last.partitions.push(*index),
            _ => topics.push(
                TopicData::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![*index]),
            ),
        }
    }
    topics
}

pub(super) fn describe_transactions(
    broker: &Broker,
    request: DescribeTransactionsRequest,
    origin: RequestContext<'_>,
) -> DescribeTransactionsResponse {
    let who = origin.who(ApiKey::DescribeTransactions);
    let states = request
        .transactional_ids
        .into_iter()
        .map(|id| {
            let state = TransactionState::default().with_transactional_id(id.clone());
            // DESCRIBE on the transactional id.
            if !broker.authorizer.authorize(
                &who,
                Operation::Describe,
                ResourceType::TransactionalId,
                &id,
            ) {
                return state
                    .with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed))
                    .with_transaction_state(StrBytes::from_static_str(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1);
            }
            match broker.transactions.describe(&id.0) {
                Ok(txn) => state
                    .with_transaction_state(StrBytes::from_static_str(txn.state.name()))
                    .with_transaction_timeout_ms(txn.timeout_ms)
                    .with_transaction_start_time_ms(txn.start_ms)
                    .with_producer_id(ProducerId(txn.producer_id))
                    .with_producer_epoch(txn.producer_epoch)
                    .with_topics(partitions_by_topic(&txn.partitions)),
                Err(error) => state
                    .with_error_code(code(error))
                    .with_transaction_state(StrBytes::from_static_str(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub(super) fn list_transactions(
    broker: &Broker,
    request: ListTransactionsRequest,
    origin: RequestContext<'_>,
) -> ListTransactionsResponse {
    // Only the transactions the principal may DESCRIBE, silently.
    let who = origin.who(ApiKey::ListTransactions);
    const STATES: [&str; 8] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let unknown_filters: Vec<StrBytes> = request
        .state_filters
        .iter()
        .filter(|filter| !STATES.contains(&filter.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    let listed = broker
        .transactions
        .listings()
        .into_iter()
        .filter(|listing| {
            broker.authorizer.allowed(
                &who,
                Operation::Describe,
                ResourceType::TransactionalId,
                &listing.transactional_id,
            )
        })
        .filter(|listing| {
            let txn = &listing.metadata;
            (request.state_filters.is_empty()
                || request
                    .state_filters
                    .iter()
                    .any(|filter| filter.as_str() == txn.state.name()))
                && (request.producer_id_filters.is_empty()
                    || request
                        .producer_id_filters
                        .iter()
                        .any(|id| id.0 == txn.producer_id))
                // v1: only transactions open longer than this (-1: all).
                && (request.duration_filter < 0
                    || (txn.state == crate::txn::log::TxnState::Ongoing
                        && now.saturating_sub(txn.start_ms) > request.duration_filter))
        })
        .map(|listing| {
            ListedState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    listing.transactional_id,
                )))
                .with_producer_id(ProducerId(listing.metadata.producer_id))
                .with_transaction_state(StrBytes::from_static_str(listing.metadata.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown_filters)
        .with_transaction_states(listed)
}
