//! CreateTopics: validates names, partition counts, replication factors and
//! configs; creates (or, with validate_only, only checks) each topic.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{topic_allows, RequestContext};
use crate::authorizer::{Operation, ResourceType, CLUSTER_NAME};
use crate::broker::Broker;
use crate::errors::{self, code};

/// DescribeConfigs' source code for a topic-level override.
const CONFIG_SOURCE_TOPIC: i8 = 1;

pub(super) async fn handle(
    broker: &Broker,
    request: CreateTopicsRequest,
    origin: RequestContext<'_>,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut seen = HashSet::new();
    // CREATE on the cluster, or on each topic.
    let on_cluster = broker.authorizer.allowed(
        &origin.who(ApiKey::CreateTopics),
        Operation::Create,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    for creatable in &request.topics {
        let result = CreatableTopicResult::default().with_name(creatable.name.clone());
        let result = if !seen.insert(creatable.name.0.as_str()) {
            failed(
                result,
                code(ResponseError::InvalidRequest),
                "Topic is listed more than once".into(),
            )
        } else if !on_cluster
            && !topic_allows(
                broker,
                origin,
                ApiKey::CreateTopics,
                Operation::Create,
                &creatable.name,
            )
        {
            failed(
                result,
                code(ResponseError::TopicAuthorizationFailed),
                "Authorization failed.".into(),
            )
        } else {
            create(broker, creatable, request.validate_only, result).await
        };
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn failed(result: CreatableTopicResult, error_code: i16, message: String) -> CreatableTopicResult {
    result
        .with_error_code(error_code)
        .with_error_message(Some(StrBytes::from_string(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_configs(None)
}

async fn create(
    broker: &Broker,
    creatable: &CreatableTopic,
    validate_only: bool,
    result: CreatableTopicResult,
) -> CreatableTopicResult {
    let mut configs = BTreeMap::new();
    for config in &creatable.configs {
        let Some(value) = &config.value else {
            let message = format!(
                "Null value not supported for topic config {}",
                config.name.as_str()
            );
            return failed(result, code(ResponseError::InvalidConfig), message);
        };
        configs.insert(config.name.to_string(), value.to_string());
    }
    let (partitions, replication_factor, assignment) = if creatable.assignments.is_empty() {
        let partitions = if creatable.num_partitions == -1 {
            broker.config.num_partitions
        } else {
            creatable.num_partitions
        };
        let replication_factor = if creatable.replication_factor == -1 {
            broker.config.default_replication_factor
        } else {
            creatable.replication_factor
        };
        (partitions, replication_factor, None)
    } else {
        if creatable.num_partitions != -1 || creatable.replication_factor != -1 {
            let message =
                "Both numPartitions or replicationFactor and replicasAssignments were set"
                    .to_string();
            return failed(result, code(ResponseError::InvalidRequest), message);
        }
        match assignment(creatable) {
            Ok(assignment) => (
                assignment.len() as i32,
                assignment[0].len() as i16,
                Some(assignment),
            ),
            Err(message) => {
                return failed(
                    result,
                    code(ResponseError::InvalidReplicaAssignment),
                    message,
                )
            }
        }
    };
    let name = creatable.name.0.as_str();
    match broker
        .create_topic(
            name,
            partitions,
            replication_factor,
            assignment,
            configs,
            validate_only,
        )
        .await
    {
        Ok(topic) => {
            let configs = topic
                .configs
                .iter()
                .map(|(name, value)| {
                    CreatableTopicConfigs::default()
                        .with_name(StrBytes::from_string(name.clone()))
                        .with_value(Some(StrBytes::from_string(value.clone())))
                        .with_config_source(CONFIG_SOURCE_TOPIC)
                })
                .collect();
            result
                .with_topic_id(topic.topic_id)
                .with_num_partitions(topic.partitions.len() as i32)
                .with_replication_factor(
                    topic
                        .partitions
                        .first()
                        .map_or(replication_factor, |p| p.replicas.len() as i16),
                )
                .with_configs(Some(configs))
        }
        Err(error) => failed(result, errors::topic_error_code(&error), error.to_string()),
    }
}

/// A manual assignment: partitions 0..n each once, with their replicas
/// (which brokers, and how many, the metadata store checks).
fn assignment(creatable: &CreatableTopic) -> Result<Vec<Vec<i32>>, String> {
    let mut by_partition: Vec<(i32, Vec<i32>)> = creatable
        .assignments
        .iter()
        .map(|a| {
            (
                a.partition_index,
                a.broker_ids.iter().map(|id| id.0).collect(),
            )
        })
        .collect();
    by_partition.sort_by_key(|(partition, _)| *partition);
    if by_partition
        .iter()
        .enumerate()
        .any(|(i, (partition, _))| *partition != i as i32)
    {
        return Err("Partitions must be numbered 0 to n-1, each once".into());
    }
    if by_partition.iter().any(|(_, replicas)| replicas.is_empty()) {
        return Err("Every partition needs at least one replica".into());
    }
    Ok(by_partition
        .into_iter()
        .map(|(_, replicas)| replicas)
        .collect())
}
