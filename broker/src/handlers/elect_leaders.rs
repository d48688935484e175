//! ElectLeaders: preferred or unclean leader election for operators
//! (`kafka-leader-election.sh`, AdminClient `electLeaders`, `kbroker admin
//! leaders elect`). Clients send it to the controller; elsewhere it is
//! refused with NOT_CONTROLLER, and they look the controller up again.

use std::collections::BTreeMap;

use coordinator::{CoordinatorError, ElectionError, ElectionType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{cluster_allows, RequestContext};
use crate::authorizer::Operation;
use crate::broker::Broker;
use crate::errors::{self, code, NONE};

/// `election_type` values (v1+; v0 is always preferred).
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;
/// v1+ has a top-level error code.
const TOP_LEVEL_ERROR_VERSION_MIN: i16 = 1;

pub(super) async fn handle(
    broker: &Broker,
    request: ElectLeadersRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> ElectLeadersResponse {
    // ALTER on the cluster.
    if !cluster_allows(broker, origin, ApiKey::ElectLeaders, Operation::Alter) {
        return failed(
            request,
            version,
            code(ResponseError::ClusterAuthorizationFailed),
            "Cluster authorization failed.",
        );
    }
    let election = match request.election_type {
        PREFERRED => ElectionType::Preferred,
        UNCLEAN if version >= 1 => ElectionType::Unclean,
        other => {
            tracing::info!(
                election_type = other,
                "ElectLeaders with an unknown election type"
            );
            return failed(
                request,
                version,
                code(ResponseError::InvalidRequest),
                "unknown election type",
            );
        }
    };
    let all = request.topic_partitions.is_none();
    let partitions = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect::<Vec<_>>()
    });
    let results = match broker.store().elect_leaders(election, partitions).await {
        Ok(results) => results,
        Err(error) => {
            let message = error.to_string();
            let error_code = match error {
                CoordinatorError::NotController => code(ResponseError::NotController),
                other => errors::coordinator_error_code(&other),
            };
            return failed(request, version, error_code, &message);
        }
    };
    if !results.is_empty() {
        broker.wait_applied();
    }
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for ((topic, partition), outcome) in results {
        // Asked for every partition, Kafka reports only the elections that happened.
        if all && outcome == Err(ElectionError::NotNeeded) {
            continue;
        }
        let (error_code, message) = match &outcome {
            Ok(()) => (NONE, None),
            Err(error) => (
                errors::election_error_code(error),
                Some(StrBytes::from_string(error.to_string())),
            ),
        };
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(error_code)
                .with_error_message(message),
        );
    }
    ElectLeadersResponse::default()
        .with_error_code(NONE)
        .with_replica_election_results(
            by_topic
                .into_iter()
                .map(|(topic, partition_result)| {
                    ReplicaElectionResult::default()
                        .with_topic(TopicName(StrBytes::from_string(topic)))
                        .with_partition_result(partition_result)
                })
                .collect(),
        )
}

/// The whole request failed: top-level from v1, on every partition in v0.
fn failed(
    request: ElectLeadersRequest,
    version: i16,
    error_code: i16,
    message: &str,
) -> ElectLeadersResponse {
    if version >= TOP_LEVEL_ERROR_VERSION_MIN {
        return ElectLeadersResponse::default().with_error_code(error_code);
    }
    let results = request
        .topic_partitions
        .unwrap_or_default()
        .into_iter()
        .map(|topic| {
            ReplicaElectionResult::default()
                .with_topic(topic.topic)
                .with_partition_result(
                    topic
                        .partitions
                        .into_iter()
                        .map(|partition| {
                            PartitionResult::default()
                                .with_partition_id(partition)
                                .with_error_code(error_code)
                                .with_error_message(Some(StrBytes::from_string(
                                    message.to_string(),
                                )))
                        })
                        .collect(),
                )
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}
