//! DeleteTopics: by name (v1+) or by topic id (v6+).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{topic_allows, RequestContext};
use crate::authorizer::{Operation, ResourceType};
use crate::broker::Broker;
use crate::errors::{self, code};

/// From v6 topics come as (name or id) pairs; before, as a list of names.
const TOPIC_STATES_VERSION_MIN: i16 = 6;

pub(super) async fn handle(
    broker: &Broker,
    request: DeleteTopicsRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<TopicName>, Uuid)> = if version >= TOPIC_STATES_VERSION_MIN {
        request
            .topics
            .into_iter()
            .map(|topic| (topic.name, topic.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|name| (Some(name), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, topic_id) in targets {
        responses.push(delete(broker, name, topic_id, origin).await);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

async fn delete(
    broker: &Broker,
    name: Option<TopicName>,
    topic_id: Uuid,
    origin: RequestContext<'_>,
) -> DeletableTopicResult {
    let result = DeletableTopicResult::default()
        .with_name(name.clone())
        .with_topic_id(topic_id);
    let failed = |result: DeletableTopicResult, error_code, message: String| {
        result
            .with_error_code(error_code)
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let metadata = broker.metadata();
    let topic = match (&name, topic_id.is_nil()) {
        (Some(name), _) => metadata.topic(name.0.as_str()).cloned(),
        (None, false) => metadata.topic_by_id(topic_id).cloned(),
        (None, true) => {
            return failed(
                result,
                code(ResponseError::InvalidRequest),
                "Neither topic name nor id given".into(),
            )
        }
    };
    // Without DESCRIBE a topic is not told apart from a missing one;
    // without DELETE it is not deleted.
    let described = |topic: &str| {
        broker.authorizer.allowed(
            &origin.who(ApiKey::DeleteTopics),
            Operation::Describe,
            ResourceType::Topic,
            topic,
        )
    };
    let named = name.as_ref().map(|n| n.0.to_string());
    if let Some(named) = named.as_deref().filter(|n| !described(n)) {
        let _ = topic_allows(
            broker,
            origin,
            ApiKey::DeleteTopics,
            Operation::Delete,
            named,
        );
        return failed(
            result,
            code(ResponseError::TopicAuthorizationFailed),
            "Authorization failed.".into(),
        );
    }
    let Some(topic) = topic.filter(|topic| topic_id.is_nil() || topic.topic_id == topic_id) else {
        return if name.is_none() {
            failed(
                result,
                code(ResponseError::UnknownTopicId),
                format!("Topic id {topic_id} does not exist"),
            )
        } else {
            failed(
                result,
                code(ResponseError::UnknownTopicOrPartition),
                "Topic does not exist".into(),
            )
        };
    };
    if !topic_allows(
        broker,
        origin,
        ApiKey::DeleteTopics,
        Operation::Delete,
        &topic.name,
    ) {
        return failed(
            result,
            code(ResponseError::TopicAuthorizationFailed),
            "Authorization failed.".into(),
        );
    }
    match broker.delete_topic(&topic.name).await {
        Ok(deleted) => result
            .with_name(Some(TopicName(StrBytes::from_string(deleted.name.clone()))))
            .with_topic_id(deleted.topic_id),
        Err(error) => failed(result, errors::topic_error_code(&error), error.to_string()),
    }
}
