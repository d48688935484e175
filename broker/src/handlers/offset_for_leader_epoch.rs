//! OffsetForLeaderEpoch: the end offset of a leader epoch, so that clients
//! can detect log truncation after a leader change.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;
use crate::errors::{self, code};

pub(super) fn handle(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic_request| {
            let partitions = topic_request
                .partitions
                .iter()
                .map(|partition_request| {
                    let response = EpochEndOffset::default()
                        .with_partition(partition_request.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
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
