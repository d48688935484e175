//! InitProducerId (idempotent producers: a new producer id at epoch 0) and
//! DescribeProducers (the producers each partition's leader knows).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;

use super::{topic_allows, RequestContext};
use crate::authorizer::Operation;
use crate::broker::Broker;
use crate::errors::{self, code, for_version};

/// InitProducerId v3+ carries the producer id and epoch the producer had (KIP-360).
const KEEP_PRODUCER_VERSION_MIN: i16 = 3;

pub(super) async fn init_producer_id(
    broker: &Broker,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(transactional_id) = &request.transactional_id {
        let expected = (version >= KEEP_PRODUCER_VERSION_MIN)
            .then_some((request.producer_id.0, request.producer_epoch));
        let initialized = broker
            .transactions
            .init_producer_id(
                &broker.producer_ids,
                transactional_id,
                request.transaction_timeout_ms,
                expected,
            )
            .await;
        return match for_version(initialized, ApiKey::InitProducerId, version) {
            Ok((producer_id, epoch)) => response
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            Err(error) => response.with_error_code(code(error)),
        };
    }
    // An idempotent producer: a new id at epoch 0, whatever it had (Kafka
    // does the same when it asks with its old id and epoch, KIP-360).
    match broker.producer_ids.next().await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::warn!(%error, "no producer id to give");
            // Retriable for every client: it asks again.
            response.with_error_code(code(ResponseError::CoordinatorNotAvailable))
        }
    }
}

pub(super) fn describe_producers(
    broker: &Broker,
    request: DescribeProducersRequest,
    origin: RequestContext<'_>,
) -> DescribeProducersResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic_request| {
            // READ on the topic.
            let allowed = topic_allows(
                broker,
                origin,
                ApiKey::DescribeProducers,
                Operation::Read,
                &topic_request.name,
            );
            let topic = broker.topic(&topic_request.name.0);
            let partitions = topic_request
                .partition_indexes
                .iter()
                .map(|&index| {
                    let response = PartitionResponse::default().with_partition_index(index);
                    if !allowed {
                        return response
                            .with_error_code(code(ResponseError::TopicAuthorizationFailed));
                    }
                    let Some(partition) = topic.as_ref().and_then(|topic| topic.partition(index))
                    else {
                        return response
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition));
                    };
                    let described = partition.lead(|log, _| {
                        log.producers()
                            .producers()
                            .map(|(id, entry)| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(id))
                                    .with_producer_epoch(i32::from(entry.epoch))
                                    .with_last_sequence(entry.last_seq())
                                    .with_last_timestamp(entry.last_timestamp)
                                    .with_coordinator_epoch(entry.coordinator_epoch)
                                    .with_current_txn_start_offset(
                                        entry.txn_first_offset.unwrap_or(-1),
                                    )
                            })
                            .collect::<Vec<_>>()
                    });
                    match described {
                        Ok(mut producers) => {
                            producers.sort_by_key(|producer| producer.producer_id.0);
                            response.with_active_producers(producers)
                        }
                        Err(not_leader) => response
                            .with_error_code(errors::not_leader_code(&not_leader))
                            .with_error_message(Some(StrBytes::from_string(
                                not_leader.to_string(),
                            ))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(topic_request.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
