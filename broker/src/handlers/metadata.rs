//! Metadata: brokers, cluster id, controller, and topics with their
//! partitions; creates requested topics when auto-creation is allowed.

use coordinator::{ClusterMetadata, TopicMetadata};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::RequestContext;
use crate::authorizer::{Operation, ResourceType, CLUSTER_NAME};
use crate::broker::Broker;
use crate::errors::TopicError;
use crate::errors::{self, code};

/// Sent when the client did not ask for authorized operations.
pub(super) const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// Without ACLs every client may do everything: the bit of each ACL
/// operation code that applies to a topic (READ 3, WRITE 4, CREATE 5,
/// DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11) ...
pub(super) const TOPIC_OPERATIONS: i32 = acl_bits(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// ... and to the cluster (CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
/// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12).
pub(super) const CLUSTER_OPERATIONS: i32 = acl_bits(&[5, 7, 8, 9, 10, 11, 12]);

const fn acl_bits(operations: &[u8]) -> i32 {
    let mut bits = 0;
    let mut i = 0;
    while i < operations.len() {
        bits |= 1 << operations[i];
        i += 1;
    }
    bits
}
/// Before v1 an empty topic list meant "all topics"; from v1 that is null.
const NULL_MEANS_ALL_VERSION_MIN: i16 = 1;
/// Before v4 there is no `allow_auto_topic_creation` field: creation is allowed.
const AUTO_CREATE_FIELD_VERSION_MIN: i16 = 4;

pub(super) async fn handle(
    broker: &Broker,
    request: MetadataRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> MetadataResponse {
    let wanted = match request.topics {
        Some(topics) if !(topics.is_empty() && version < NULL_MEANS_ALL_VERSION_MIN) => {
            Some(topics)
        }
        _ => None,
    };
    let allow_auto_create = broker.config.auto_create_topics_enable
        && (version < AUTO_CREATE_FIELD_VERSION_MIN || request.allow_auto_topic_creation);
    let who = origin.who(ApiKey::Metadata);
    let authorizer = &broker.authorizer;
    let mut topics: Vec<MetadataResponseTopic> = match wanted {
        // All topics: those the principal may not DESCRIBE are left out,
        // silently.
        None => {
            let metadata = broker.metadata();
            metadata
                .topics
                .values()
                .filter(|topic| {
                    authorizer.allowed(&who, Operation::Describe, ResourceType::Topic, &topic.name)
                })
                .map(|topic| topic_response(&metadata, topic, origin.listener))
                .collect()
        }
        Some(wanted) => {
            let mut topics = Vec::with_capacity(wanted.len());
            for requested in wanted {
                topics.push(
                    requested_topic(
                        broker,
                        requested.name,
                        requested.topic_id,
                        allow_auto_create,
                        origin,
                    )
                    .await,
                );
            }
            topics
        }
    };
    if request.include_topic_authorized_operations {
        for topic in topics.iter_mut().filter(|topic| topic.error_code == 0) {
            topic.topic_authorized_operations = match (&topic.name, authorizer.enabled()) {
                (Some(name), true) => {
                    authorizer.authorized_operations(&who, ResourceType::Topic, name.0.as_str())
                }
                _ => TOPIC_OPERATIONS,
            };
        }
    }
    let cluster_operations = match (
        request.include_cluster_authorized_operations,
        authorizer.enabled(),
    ) {
        (false, _) => AUTHORIZED_OPERATIONS_OMITTED,
        (true, false) => CLUSTER_OPERATIONS,
        (true, true) => authorizer.authorized_operations(&who, ResourceType::Cluster, CLUSTER_NAME),
    };
    // Read after any auto-creation, so that the brokers match the topics.
    let metadata = broker.metadata();
    let brokers = super::reachable(
        &metadata,
        metadata.brokers.keys().copied(),
        origin.listener,
        |id, host, port, rack| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(host)
                .with_port(port)
                .with_rack(rack)
        },
    );
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(metadata.cluster_id.clone())))
        .with_controller_id(BrokerId(metadata.controller_id().unwrap_or(-1)))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_operations)
}

/// A topic asked for by name or id. A principal without DESCRIBE on it
/// gets TOPIC_AUTHORIZATION_FAILED whether it exists or not; creating it
/// needs CREATE on the cluster or on the topic.
async fn requested_topic(
    broker: &Broker,
    name: Option<TopicName>,
    topic_id: Uuid,
    allow_auto_create: bool,
    origin: RequestContext<'_>,
) -> MetadataResponseTopic {
    let listener = origin.listener;
    let who = origin.who(ApiKey::Metadata);
    let authorizer = &broker.authorizer;
    let may =
        |operation, name: &str| authorizer.authorize(&who, operation, ResourceType::Topic, name);
    let metadata = broker.metadata();
    let Some(name) = name else {
        // v10+: a topic asked for by id only.
        return match metadata.topic_by_id(topic_id) {
            Some(topic) if may(Operation::Describe, &topic.name) => {
                topic_response(&metadata, topic, listener)
            }
            Some(_) => MetadataResponseTopic::default()
                .with_topic_id(topic_id)
                .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
            None => MetadataResponseTopic::default()
                .with_topic_id(topic_id)
                .with_error_code(code(ResponseError::UnknownTopicId))
                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
        };
    };
    let failed = |error_code| {
        MetadataResponseTopic::default()
            .with_name(Some(name.clone()))
            .with_error_code(error_code)
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
    };
    if !may(Operation::Describe, name.0.as_str()) {
        return failed(code(ResponseError::TopicAuthorizationFailed));
    }
    if let Some(topic) = metadata.topic(name.0.as_str()) {
        return topic_response(&metadata, topic, listener);
    }
    if let Err(error) = crate::topics::validate_topic_name(name.0.as_str()) {
        return failed(errors::topic_error_code(&error));
    }
    if !allow_auto_create {
        return failed(code(ResponseError::UnknownTopicOrPartition));
    }
    let may_create =
        authorizer.allowed(&who, Operation::Create, ResourceType::Cluster, CLUSTER_NAME)
            || may(Operation::Create, name.0.as_str());
    if !may_create {
        return failed(code(ResponseError::TopicAuthorizationFailed));
    }
    match broker.auto_create_topic(name.0.as_str()).await {
        Ok(topic) => topic_response(&broker.metadata(), &topic, listener),
        Err(error @ (TopicError::Storage(_) | TopicError::Metadata(_))) => {
            tracing::error!(topic = %name.0, %error, "auto-creating a topic failed");
            failed(errors::topic_error_code(&error))
        }
        Err(error) => failed(errors::topic_error_code(&error)),
    }
}

/// A topic as Metadata describes it. A partition whose leader is not
/// reachable on `listener` (none elected, or not alive) gets
/// LEADER_NOT_AVAILABLE with leader -1, as Kafka answers; replicas that are
/// not alive are listed as offline (v5+).
fn topic_response(
    metadata: &ClusterMetadata,
    topic: &TopicMetadata,
    listener: &str,
) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|partition| {
            let reachable = super::endpoint(metadata, partition.leader, listener).is_some();
            let ids = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
            let offline: Vec<i32> = partition
                .replicas
                .iter()
                .copied()
                .filter(|id| !metadata.is_alive(*id))
                .collect();
            MetadataResponsePartition::default()
                .with_error_code(if reachable {
                    errors::NONE
                } else {
                    code(ResponseError::LeaderNotAvailable)
                })
                .with_partition_index(partition.partition)
                .with_leader_id(BrokerId(if reachable { partition.leader } else { -1 }))
                .with_leader_epoch(partition.leader_epoch)
                .with_replica_nodes(ids(&partition.replicas))
                .with_isr_nodes(ids(&partition.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(crate::topics::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
