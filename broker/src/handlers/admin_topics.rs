//! Topic administration beyond create and delete: CreatePartitions,
//! DeleteRecords, DescribeLogDirs, and the cluster views DescribeCluster
//! and DescribeTopicPartitions.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_OPERATIONS, TOPIC_OPERATIONS};
use super::{cluster_allows, topic_allows, RequestContext};
use crate::authorizer::{Operation, ResourceType};
use crate::broker::Broker;
use crate::errors::{self, code, NONE};
use crate::topics::{is_internal, Topic};

/// DescribeCluster's `endpoint_type` for brokers (2 is controllers, which
/// we do not run separately).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub(super) async fn create_partitions(
    broker: &Broker,
    request: CreatePartitionsRequest,
    origin: RequestContext<'_>,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        // ALTER on the topic.
        if !topic_allows(
            broker,
            origin,
            ApiKey::CreatePartitions,
            Operation::Alter,
            &topic.name,
        ) {
            results.push(
                result
                    .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                    .with_error_message(Some(StrBytes::from_static_str("Authorization failed."))),
            );
            continue;
        }
        let assignment = topic.assignments.map(|assignments| {
            assignments
                .into_iter()
                .map(|a| a.broker_ids.into_iter().map(|id| id.0).collect())
                .collect()
        });
        let outcome = broker
            .create_partitions(
                topic.name.0.as_str(),
                topic.count,
                assignment,
                request.validate_only,
            )
            .await;
        results.push(match outcome {
            Ok(_) => result.with_error_code(NONE),
            Err(error) => result
                .with_error_code(errors::topic_error_code(&error))
                .with_error_message(Some(StrBytes::from_string(error.to_string()))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub(super) fn delete_records(
    broker: &Broker,
    request: DeleteRecordsRequest,
    origin: RequestContext<'_>,
) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            // DELETE on the topic.
            let allowed =
                topic_allows(broker, origin, ApiKey::DeleteRecords, Operation::Delete, &topic.name);
            let known = broker.topic(topic.name.0.as_str());
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result =
                        DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                    if !allowed {
                        return result
                            .with_low_watermark(-1)
                            .with_error_code(code(ResponseError::TopicAuthorizationFailed));
                    }
                    let partition = known.as_ref().and_then(|t| {
                        usize::try_from(p.partition_index)
                            .ok()
                            .and_then(|i| t.partitions.get(i).cloned())
                    });
                    let Some(partition) = partition else {
                        return result
                            .with_low_watermark(-1)
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition));
                    };
                    if is_internal(&partition.topic) {
                        return result
                            .with_low_watermark(-1)
                            .with_error_code(code(ResponseError::PolicyViolation));
                    }
                    match partition.lead(|log, _| log.delete_records_before(p.offset)) {
                        Ok(Ok(low_watermark)) => {
                            tracing::info!(topic = %partition.topic, partition = partition.index, low_watermark, "deleted records");
                            result.with_low_watermark(low_watermark).with_error_code(NONE)
                        }
                        Ok(Err(error)) => result
                            .with_low_watermark(-1)
                            .with_error_code(errors::storage_error_code(&error)),
                        Err(not_leader) => result
                            .with_low_watermark(-1)
                            .with_error_code(errors::not_leader_code(&not_leader)),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

pub(super) fn describe_log_dirs(
    broker: &Broker,
    request: DescribeLogDirsRequest,
    origin: RequestContext<'_>,
) -> DescribeLogDirsResponse {
    // DESCRIBE on the cluster; without it, nothing (and from v3 the error).
    if !cluster_allows(broker, origin, ApiKey::DescribeLogDirs, Operation::Describe) {
        return DescribeLogDirsResponse::default()
            .with_error_code(code(ResponseError::ClusterAuthorizationFailed));
    }
    let wanted: Vec<(Arc<Topic>, Vec<i32>)> = match request.topics {
        None => broker
            .all_topics()
            .into_iter()
            .map(|t| {
                let all = (0..t.partitions.len() as i32).collect();
                (t, all)
            })
            .collect(),
        Some(topics) => topics
            .into_iter()
            .filter_map(|t| {
                broker
                    .topic(t.topic.0.as_str())
                    .map(|known| (known, t.partitions))
            })
            .collect(),
    };
    let topics = wanted
        .into_iter()
        .map(|(topic, indexes)| {
            let partitions = indexes
                .into_iter()
                .filter_map(|index| {
                    let partition = topic.partitions.get(usize::try_from(index).ok()?)?;
                    let size = partition.with_log(|log| log.size_bytes()).ok()?;
                    Some(
                        DescribeLogDirsPartition::default()
                            .with_partition_index(index)
                            .with_partition_size(size as i64)
                            .with_offset_lag(0)
                            .with_is_future_key(false),
                    )
                })
                .collect();
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.name.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    let (total_bytes, usable_bytes) = disk_space(&broker.config.log_dir).unwrap_or((-1, -1));
    let dir = std::fs::canonicalize(&broker.config.log_dir)
        .unwrap_or_else(|_| broker.config.log_dir.clone());
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_error_code(NONE)
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes)])
}

/// Total and available bytes of the file system holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(i64, i64)> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    let block = stat.fragment_size() as i64;
    Some((
        stat.blocks() as i64 * block,
        stat.blocks_available() as i64 * block,
    ))
}

pub(super) fn describe_cluster(
    broker: &Broker,
    request: DescribeClusterRequest,
    origin: RequestContext<'_>,
) -> DescribeClusterResponse {
    if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return DescribeClusterResponse::default()
            .with_error_code(code(ResponseError::UnsupportedEndpointType))
            .with_error_message(Some(StrBytes::from_static_str(
                "only broker endpoints are described",
            )));
    }
    let metadata = broker.metadata();
    let brokers = super::reachable(
        &metadata,
        metadata.brokers.keys().copied(),
        origin.listener,
        |id, host, port, rack| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(host)
                .with_port(port)
                .with_rack(rack)
        },
    );
    DescribeClusterResponse::default()
        .with_error_code(NONE)
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(StrBytes::from_string(metadata.cluster_id.clone()))
        .with_controller_id(BrokerId(metadata.controller_id().unwrap_or(-1)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(
            match (
                request.include_cluster_authorized_operations,
                broker.authorizer.enabled(),
            ) {
                (false, _) => AUTHORIZED_OPERATIONS_OMITTED,
                (true, false) => CLUSTER_OPERATIONS,
                (true, true) => broker.authorizer.authorized_operations(
                    &origin.who(ApiKey::DescribeCluster),
                    ResourceType::Cluster,
                    crate::authorizer::CLUSTER_NAME,
                ),
            },
        )
}

/// DescribeTopicPartitions (KIP-966): topics in name order, at most
/// `response_partition_limit` partitions per response, resumable at `cursor`.
pub(super) fn describe_topic_partitions(
    broker: &Broker,
    request: DescribeTopicPartitionsRequest,
    origin: RequestContext<'_>,
) -> DescribeTopicPartitionsResponse {
    let metadata = broker.metadata();
    let who = origin.who(ApiKey::DescribeTopicPartitions);
    // DESCRIBE on each topic: those the principal may not describe are left
    // out of a full listing, and refused when named.
    let listing_all = request.topics.is_empty();
    let mut names: Vec<String> = if listing_all {
        metadata
            .topics
            .keys()
            .filter(|name| {
                broker
                    .authorizer
                    .allowed(&who, Operation::Describe, ResourceType::Topic, name)
            })
            .cloned()
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &request.cursor {
        Some(cursor) => (
            cursor.topic_name.0.to_string(),
            cursor.partition_index.max(0),
        ),
        None => (String::new(), 0),
    };
    let mut budget = request.response_partition_limit.max(1) as usize;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.into_iter().filter(|n| *n >= start_topic) {
        let first = if name == start_topic {
            start_partition
        } else {
            0
        };
        if !listing_all
            && !broker
                .authorizer
                .authorize(&who, Operation::Describe, ResourceType::Topic, &name)
        {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
            );
            continue;
        }
        let Some(topic) = metadata.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_index(first),
            );
            break;
        }
        let mut partitions = Vec::new();
        for partition in topic.partitions.iter().skip(first as usize) {
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_partition_index(partition.partition),
                );
                break;
            }
            budget -= 1;
            let ids = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
            let offline: Vec<i32> = partition
                .replicas
                .iter()
                .copied()
                .filter(|id| !metadata.is_alive(*id))
                .collect();
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(NONE)
                    .with_partition_index(partition.partition)
                    .with_leader_id(BrokerId(partition.leader))
                    .with_leader_epoch(partition.leader_epoch)
                    .with_replica_nodes(ids(&partition.replicas))
                    .with_isr_nodes(ids(&partition.isr))
                    .with_offline_replicas(ids(&offline))
                    .with_eligible_leader_replicas(None)
                    .with_last_known_elr(None),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(NONE)
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_topic_id(topic.topic_id)
                .with_is_internal(is_internal(&topic.name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(TOPIC_OPERATIONS),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
