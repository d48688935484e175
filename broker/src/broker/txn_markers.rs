//! Transaction markers: the coordinator's side (finishing a transaction in
//! PrepareCommit or PrepareAbort by having a commit or abort marker written
//! to each of its partitions, then writing CompleteCommit/CompleteAbort) and
//! the partition leader's side (`write_markers`, which WriteTxnMarkers and
//! the coordinator itself, for partitions it leads, call).
//!
//! The coordinator sends WriteTxnMarkers to each partition's leader over
//! the inter-broker listener (`crate::peers`), and
//! retries what fails — a leader moving, a broker down — with backoff until
//! every partition has its marker, the partition is gone, or this broker no
//! longer coordinates the transaction (the new coordinator takes over from
//! the PrepareCommit/PrepareAbort it finds in the log).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::clock::now_ms;
use crate::errors::AppendError;
use crate::errors::{self, KafkaResult};
use crate::internal_topics::OFFSETS_TOPIC;
use crate::txn::coordinator::Completion;

/// Longest a marker waits for the partition's in-sync replicas.
const MARKER_REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// One marker to write: which producer's transaction ends, and how.
#[derive(Debug, Clone, Copy)]
pub struct MarkerWrite {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The leader's side: appends the marker to each of `partitions` this
/// broker leads and waits until their in-sync replicas have it. One
/// outcome per partition. A marker on `__consumer_offsets` also settles the
/// producer's transactional offset commits there.
pub async fn write_markers(
    broker: &Broker,
    marker: MarkerWrite,
    partitions: &[(String, i32)],
) -> Vec<KafkaResult> {
    let mut results = Vec::with_capacity(partitions.len());
    for (topic, index) in partitions {
        let Some(partition) = broker
            .topic(topic)
            .and_then(|topic| topic.partition(*index).cloned())
        else {
            results.push(Err(ResponseError::UnknownTopicOrPartition));
            continue;
        };
        let appended = partition.append_marker(
            marker.producer_id,
            marker.producer_epoch,
            storage::Marker {
                commit: marker.commit,
                coordinator_epoch: marker.coordinator_epoch,
            },
            now_ms(),
        );
        let (info, leader_epoch) = match appended {
            Ok(Ok(appended)) => appended,
            Ok(Err(AppendError::Storage(error))) => {
                tracing::info!(%topic, partition = index, %error, "transaction marker refused");
                results.push(Err(errors::storage_error(&error)));
                continue;
            }
            Ok(Err(error)) => {
                results.push(Err(errors::append_error(&error)));
                continue;
            }
            Err(not_leader) => {
                results.push(Err(errors::not_leader(&not_leader)));
                continue;
            }
        };
        if topic == OFFSETS_TOPIC {
            broker
                .groups
                .complete_txn(*index, marker.producer_id, marker.commit);
        }
        let deadline = tokio::time::Instant::now() + MARKER_REPLICATION_TIMEOUT;
        let replicated = partition
            .wait_replicated(info.last_offset + 1, leader_epoch, 1, deadline)
            .await;
        results.push(replicated);
    }
    results
}

/// Finishes the transactions the coordinator hands over, until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let Some(mut completions) = broker.transactions.take_completions() else {
        return;
    };
    loop {
        let completion = tokio::select! {
            _ = shutdown.cancelled() => return,
            completion = completions.recv() => match completion {
                Some(completion) => completion,
                None => return,
            },
        };
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            complete(&broker, completion, &shutdown).await;
        });
    }
}

/// Writes every marker of `completion`, then completes the transaction.
async fn complete(broker: &Broker, completion: Completion, shutdown: &CancellationToken) {
    let marker = MarkerWrite {
        producer_id: completion.producer_id,
        producer_epoch: completion.producer_epoch,
        commit: completion.commit,
        coordinator_epoch: completion.coordinator_epoch,
    };
    let mut remaining = completion.partitions.clone();
    let mut backoff = BACKOFF_MIN;
    while !remaining.is_empty() {
        if shutdown.is_cancelled() || !broker.transactions.still_completing(&completion) {
            return;
        }
        let metadata = broker.metadata();
        let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, index) in remaining.drain(..) {
            match metadata.partition(&topic, index) {
                // Deleted: nothing to end there.
                None => {}
                Some(state) => by_leader
                    .entry(state.leader)
                    .or_default()
                    .push((topic, index)),
            }
        }
        for (leader, partitions) in by_leader {
            let results = if leader == broker.node_id() {
                write_markers(broker, marker, &partitions).await
            } else if leader < 0 {
                vec![Err(ResponseError::LeaderNotAvailable); partitions.len()]
            } else {
                send(broker, leader, marker, &partitions).await
            };
            for (partition, written) in partitions.into_iter().zip(results) {
                let error = match written {
                    // Written; or gone; or a newer epoch's marker supersedes it.
                    Ok(())
                    | Err(
                        ResponseError::UnknownTopicOrPartition
                        | ResponseError::InvalidProducerEpoch,
                    ) => continue,
                    Err(ResponseError::TransactionCoordinatorFenced) => {
                        tracing::warn!(transactional_id = %completion.transactional_id, "a newer coordinator wrote markers: stopping");
                        return;
                    }
                    Err(error) => error,
                };
                tracing::debug!(transactional_id = %completion.transactional_id, topic = %partition.0, partition = partition.1, %error, "marker not written yet; retrying");
                remaining.push(partition);
            }
        }
        if !remaining.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
    match broker.transactions.complete(&completion).await {
        Ok(()) => {
            tracing::debug!(transactional_id = %completion.transactional_id, commit = completion.commit, "transaction complete");
        }
        Err(error) => {
            tracing::info!(transactional_id = %completion.transactional_id, %error, "completing a transaction failed; the next coordinator finishes it");
        }
    }
}

/// Sends the marker for `partitions` to `leader`: one outcome per
/// partition (NETWORK_EXCEPTION for all if the request failed).
async fn send(
    broker: &Broker,
    leader: i32,
    marker: MarkerWrite,
    partitions: &[(String, i32)],
) -> Vec<KafkaResult> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in partitions {
        topics.entry(topic).or_default().push(*index);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(marker.producer_id))
            .with_producer_epoch(marker.producer_epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                topics
                    .iter()
                    .map(|(topic, indexes)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partition_indexes(indexes.clone())
                    })
                    .collect(),
            )]);
    let response = match broker
        .peers
        .call(leader, request, WRITE_TXN_MARKERS_VERSION)
        .await
    {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(leader, %error, "WriteTxnMarkers failed");
            return vec![Err(ResponseError::NetworkException); partitions.len()];
        }
    };
    let mut by_partition: HashMap<(String, i32), i16> = HashMap::new();
    for result in response.markers {
        for topic in result.topics {
            for partition in topic.partitions {
                by_partition.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.error_code,
                );
            }
        }
    }
    partitions
        .iter()
        .map(|partition| {
            by_partition
                .get(partition)
                .map_or(Err(ResponseError::UnknownServerError), |error_code| {
                    errors::from_code(*error_code)
                })
        })
        .collect()
}
