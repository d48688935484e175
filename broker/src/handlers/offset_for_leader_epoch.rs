//! OffsetForLeaderEpoch: the end offset of a leader epoch, so that clients
//! can detect log truncation after a leader change.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{cluster_allows, RequestContext};
use crate::authorizer::{Operation, ResourceType};
use crate::broker::Broker;
use crate::errors::{self, code};

pub(super) fn handle(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
    origin: RequestContext<'_>,
) -> OffsetForLeaderEpochResponse {
    // A follower (a replica id) needs CLUSTER_ACTION on the cluster; a
    // client DESCRIBE on each topic.
    let follower = request.replica_id.0 >= 0;
    let followers_allowed = follower
        && cluster_allows(
            broker,
            origin,
            ApiKey::OffsetForLeaderEpoch,
            Operation::ClusterAction,
        );
    let who = origin.who(ApiKey::OffsetForLeaderEpoch);
    let topics = request
        .topics
        .into_iter()
        .map(|topic_request| {
            let allowed = if follower {
                followers_allowed
            } else {
                broker.authorizer.authorize(
                    &who,
                    Operation::Describe,
                    ResourceType::Topic,
                    &topic_request.topic,
                )
            };
            let partitions = topic_request
                .partitions
                .iter()
                .map(|partition_request| {
                    let response = EpochEndOffset::default()
                        .with_partition(partition_request.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    if !allowed {
                        return response
                            .with_error_code(code(ResponseError::TopicAuthorizationFailed));
                    }
                    let name = topic_request.topic.0.as_str();
                    let index = partition_request.partition;
                    let Some(partition) = broker.partition(name, index) else {
                        let error = if broker.metadata().partition(name, index).is_some() {
                            ResponseError::NotLeaderOrFollower
                        } else {
                            ResponseError::UnknownTopicOrPartition
                        };
                        return response.with_error_code(code(error));
                    };
                    let epoch_error = errors::leader_epoch_code(
                        partition_request.current_leader_epoch,
                        partition.leader_epoch(),
                    );
                    if epoch_error != errors::NONE {
                        return response.with_error_code(epoch_error);
                    }
                    match partition
                        .lead(|log, _| log.end_offset_for_epoch(partition_request.leader_epoch))
                    {
                        Ok((epoch, end_offset)) => response
                            .with_leader_epoch(epoch)
                            .with_end_offset(end_offset),
                        Err(not_leader) => {
                            response.with_error_code(errors::not_leader_code(&not_leader))
                        }
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic_request.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
