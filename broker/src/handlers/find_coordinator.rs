//! FindCoordinator: which broker coordinates a consumer group (or, later, a
//! transactional id). In standalone mode that is always this broker; in the
//! cluster it becomes the leader of the key's `__consumer_offsets` partition.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors::{code, NONE};
use crate::state::Broker;

/// `key_type` of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// `key_type` of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// From v4 the request carries a list of keys and the response a list of coordinators.
const BATCHED_VERSION_MIN: i16 = 4;

pub async fn handle(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    // Groups live in __consumer_offsets: it is created on first need.
    let available = if request.key_type == KEY_TYPE_GROUP {
        match broker.ensure_offsets_topic().await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "creating __consumer_offsets failed");
                false
            }
        }
    } else {
        true
    };
    let keys = if version >= BATCHED_VERSION_MIN {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| coordinator(broker, key, request.key_type, available))
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

fn coordinator(broker: &Broker, key: StrBytes, key_type: i8, available: bool) -> Coordinator {
    let failed = |error: ResponseError, message: &str| {
        Coordinator::default()
            .with_key(key.clone())
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(code(error))
            .with_error_message(Some(StrBytes::from_string(message.to_owned())))
    };
    match key_type {
        KEY_TYPE_GROUP if !available => {
            return failed(
                ResponseError::CoordinatorNotAvailable,
                "the group coordinator is not available",
            )
        }
        KEY_TYPE_GROUP => {}
        KEY_TYPE_TRANSACTION => {
            return failed(
                ResponseError::CoordinatorNotAvailable,
                "transactions are not implemented yet",
            )
        }
        other => {
            tracing::info!(key_type = other, "FindCoordinator with an unknown key type");
            return failed(ResponseError::InvalidRequest, "unknown key type");
        }
    }
    let listener = &broker.config.advertised_listener;
    Coordinator::default()
        .with_key(key.clone())
        .with_node_id(BrokerId(broker.config.node_id))
        .with_host(StrBytes::from_string(listener.host.clone()))
        .with_port(i32::from(listener.port))
        .with_error_code(NONE)
        // Kafka's message for no error.
        .with_error_message(Some(StrBytes::from_static_str("NONE")))
}
