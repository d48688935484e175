//! FindCoordinator: which broker coordinates a consumer group or a
//! transactional id: the leader of the group's `__consumer_offsets`
//! partition, or of the id's `__transaction_state` partition, as in Kafka.
//! Each topic is created when first needed.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::authorizer::{Operation, ResourceType};
use crate::broker::Broker;
use crate::errors::{code, NONE};
use crate::internal_topics::{partition_for, OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};

/// `key_type` of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// `key_type` of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// From v4 the request carries a list of keys and the response a list of coordinators.
const BATCHED_VERSION_MIN: i16 = 4;

pub(super) async fn handle(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> FindCoordinatorResponse {
    let ensured = match request.key_type {
        KEY_TYPE_GROUP => Some(broker.ensure_offsets_topic().await),
        KEY_TYPE_TRANSACTION => Some(broker.ensure_transaction_state_topic().await),
        _ => None,
    };
    let available = match ensured {
        Some(Err(error)) => {
            tracing::error!(%error, key_type = request.key_type, "creating a coordinator topic failed");
            false
        }
        _ => true,
    };
    let keys = if version >= BATCHED_VERSION_MIN {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    // DESCRIBE on the group or the transactional id.
    let who = origin.who(ApiKey::FindCoordinator);
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let (resource, denied) = match request.key_type {
                KEY_TYPE_TRANSACTION => (
                    ResourceType::TransactionalId,
                    ResponseError::TransactionalIdAuthorizationFailed,
                ),
                _ => (ResourceType::Group, ResponseError::GroupAuthorizationFailed),
            };
            if broker
                .authorizer
                .authorize(&who, Operation::Describe, resource, &key)
            {
                coordinator(broker, key, request.key_type, available, origin.listener)
            } else {
                Coordinator::default()
                    .with_key(key)
                    .with_error_code(code(denied))
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
            }
        })
        .collect();
    if version >= BATCHED_VERSION_MIN {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let single = coordinators.into_iter().next().unwrap_or_default();
    FindCoordinatorResponse::default()
        .with_error_code(single.error_code)
        .with_error_message(single.error_message)
        .with_node_id(single.node_id)
        .with_host(single.host)
        .with_port(single.port)
}

fn coordinator(
    broker: &Broker,
    key: StrBytes,
    key_type: i8,
    available: bool,
    listener: &str,
) -> Coordinator {
    let failed = |error: ResponseError, message: &str| {
        Coordinator::default()
            .with_key(key.clone())
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(code(error))
            .with_error_message(Some(StrBytes::from_string(message.to_owned())))
    };
    let topic = match key_type {
        KEY_TYPE_GROUP => OFFSETS_TOPIC,
        KEY_TYPE_TRANSACTION => TRANSACTION_STATE_TOPIC,
        other => {
            tracing::info!(key_type = other, "FindCoordinator with an unknown key type");
            return failed(ResponseError::InvalidRequest, "unknown key type");
        }
    };
    if !available {
        return failed(
            ResponseError::CoordinatorNotAvailable,
            "the coordinator is not available",
        );
    }
    let metadata = broker.metadata();
    let leader = metadata.topic(topic).and_then(|topic| {
        let index = partition_for(key.as_str(), topic.partitions.len() as i32);
        topic.partitions.get(index as usize).map(|p| p.leader)
    });
    let Some((node_id, (host, port, _))) = leader
        .and_then(|id| super::endpoint(&metadata, id, listener).map(|endpoint| (id, endpoint)))
    else {
        return failed(
            ResponseError::CoordinatorNotAvailable,
            "the coordinator is not available: its partition has no live leader",
        );
    };
    Coordinator::default()
        .with_key(key.clone())
        .with_node_id(BrokerId(node_id))
        .with_host(StrBytes::from_string(host.to_string()))
        .with_port(i32::from(port))
        .with_error_code(NONE)
        // Kafka's message for no error.
        .with_error_message(Some(StrBytes::from_static_str("NONE")))
}
