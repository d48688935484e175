//! Committed offsets: OffsetCommit, OffsetFetch and OffsetDelete, on top of
//! [`crate::group::GroupCoordinator`].

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::authorizer::{Operation, ResourceType};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::errors::{code, result_code, NONE};
use crate::group::{CommitOffset, CommitRequest};

/// OffsetCommit v6+ and OffsetFetch v5+ carry the committed leader epoch.
const COMMIT_LEADER_EPOCH_VERSION_MIN: i16 = 6;
/// OffsetFetch v8+ asks for several groups at once.
const FETCH_BATCHED_VERSION_MIN: i16 = 8;
/// OffsetFetch v5+ returns the committed leader epoch.
const LEADER_EPOCH_FETCH_VERSION_MIN: i16 = 5;
/// OffsetFetch before v2 has no top-level error code.
const FETCH_ERROR_CODE_VERSION_MIN: i16 = 2;

pub(super) async fn offset_commit(
    broker: &Broker,
    request: OffsetCommitRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> OffsetCommitResponse {
    // READ on the group, and on each topic.
    let who = origin.who(ApiKey::OffsetCommit);
    let group_allowed = broker.authorizer.authorize(
        &who,
        Operation::Read,
        ResourceType::Group,
        &request.group_id,
    );
    // Partitions of topics we do not have are refused one by one; the rest
    // go to the coordinator together.
    let mut commits = Vec::new();
    let mut placed = Vec::new(); // (topic index, partition index, Some(commit index) | Err(code))
    for (t, topic) in request.topics.iter().enumerate() {
        let exists = broker.metadata().topic(topic.name.0.as_str()).cloned();
        let refused = if !group_allowed {
            Some(code(ResponseError::GroupAuthorizationFailed))
        } else if !broker.authorizer.authorize(
            &who,
            Operation::Read,
            ResourceType::Topic,
            &topic.name,
        ) {
            Some(code(ResponseError::TopicAuthorizationFailed))
        } else {
            None
        };
        for (p, partition) in topic.partitions.iter().enumerate() {
            if let Some(error) = refused {
                placed.push((t, p, Err(error)));
                continue;
            }
            let known = exists.as_ref().is_some_and(|existing| {
                usize::try_from(partition.partition_index)
                    .is_ok_and(|index| index < existing.partitions.len())
            });
            if !known {
                placed.push((t, p, Err(code(ResponseError::UnknownTopicOrPartition))));
                continue;
            }
            placed.push((t, p, Ok(commits.len())));
            let leader_epoch = if version >= COMMIT_LEADER_EPOCH_VERSION_MIN {
                partition.committed_leader_epoch
            } else {
                -1
            };
            commits.push(CommitOffset::new(
                &topic.name.0,
                partition.partition_index,
                partition.committed_offset,
                leader_epoch,
                partition.committed_metadata.as_ref(),
            ));
        }
    }
    let results = if commits.is_empty() {
        Vec::new()
    } else {
        broker
            .groups
            .commit(
                CommitRequest {
                    group_id: request.group_id.0.to_string(),
                    generation_id: request.generation_id_or_member_epoch,
                    member_id: request.member_id.to_string(),
                    group_instance_id: request
                        .group_instance_id
                        .as_ref()
                        .map(std::string::ToString::to_string),
                    offsets: commits,
                    producer: None,
                },
                now_ms(),
            )
            .await
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = request
        .topics
        .iter()
        .map(|topic| OffsetCommitResponseTopic::default().with_name(topic.name.clone()))
        .collect();
    for (t, p, outcome) in placed {
        let error_code = match outcome {
            Ok(i) => result_code(&results[i]),
            Err(error_code) => error_code,
        };
        topics[t].partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(request.topics[t].partitions[p].partition_index)
                .with_error_code(error_code),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// A response partition (`$kind` is the v0-7 or the v8+ type, which have
/// the same fields) for a partition and its committed offset, if any.
macro_rules! fetched_partition {
    ($kind:ty, $index:expr, $committed:expr, $version:expr) => {{
        let (offset, epoch, metadata, error_code) = match $committed {
            Some(c) if c.unstable => (
                -1,
                -1,
                String::new(),
                code(ResponseError::UnstableOffsetCommit),
            ),
            Some(c) => (
                c.offset,
                if $version >= LEADER_EPOCH_FETCH_VERSION_MIN {
                    c.leader_epoch
                } else {
                    -1
                },
                c.metadata,
                NONE,
            ),
            None => (-1, -1, String::new(), NONE),
        };
        <$kind>::default()
            .with_partition_index($index)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(epoch)
            .with_metadata(Some(StrBytes::from_string(metadata)))
            .with_error_code(error_code)
    }};
}

pub(super) fn offset_fetch(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> OffsetFetchResponse {
    // DESCRIBE on the group, and on each topic: a topic the principal may
    // not describe is TOPIC_AUTHORIZATION_FAILED when named, left out when
    // all are asked for.
    let who = origin.who(ApiKey::OffsetFetch);
    let group_allowed = |group: &str| {
        broker
            .authorizer
            .authorize(&who, Operation::Describe, ResourceType::Group, group)
    };
    let topic_allowed = |topic: &str, named: bool| {
        if named {
            broker
                .authorizer
                .authorize(&who, Operation::Describe, ResourceType::Topic, topic)
        } else {
            broker
                .authorizer
                .allowed(&who, Operation::Describe, ResourceType::Topic, topic)
        }
    };
    if version >= FETCH_BATCHED_VERSION_MIN {
        let groups = request
            .groups
            .into_iter()
            .map(|group| {
                if !group_allowed(group.group_id.0.as_str()) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(group.group_id)
                        .with_error_code(code(ResponseError::GroupAuthorizationFailed));
                }
                if !broker.groups.coordinates(group.group_id.0.as_str()) {
                    let error = not_coordinating(broker, group.group_id.0.as_str());
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(group.group_id)
                        .with_error_code(error);
                }
                let named = group.topics.is_some();
                let wanted = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let topics = broker
                    .groups
                    .fetch_offsets(group.group_id.0.as_str(), wanted, request.require_stable)
                    .into_iter()
                    .filter_map(|(topic, partitions)| {
                        shown(&topic, named, &topic_allowed)
                            .map(|denied| (topic, partitions, denied))
                    })
                    .map(|(topic, partitions, denied)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(index, committed)| {
                                        let partition = fetched_partition!(
                                            OffsetFetchResponsePartitions,
                                            index,
                                            committed,
                                            version
                                        );
                                        if denied {
                                            partition.with_error_code(code(
                                                ResponseError::TopicAuthorizationFailed,
                                            ))
                                        } else {
                                            partition
                                        }
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(group.group_id)
                    .with_topics(topics)
                    .with_error_code(NONE)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if !group_allowed(request.group_id.0.as_str()) {
        return not_coordinator(
            request,
            version,
            code(ResponseError::GroupAuthorizationFailed),
        );
    }
    if !broker.groups.coordinates(request.group_id.0.as_str()) {
        let error = not_coordinating(broker, request.group_id.0.as_str());
        return not_coordinator(request, version, error);
    }
    let named = request.topics.is_some();
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = broker
        .groups
        .fetch_offsets(request.group_id.0.as_str(), wanted, request.require_stable)
        .into_iter()
        .filter_map(|(topic, partitions)| {
            shown(&topic, named, &topic_allowed).map(|denied| (topic, partitions, denied))
        })
        .map(|(topic, partitions, denied)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, committed)| {
                            let partition = fetched_partition!(
                                OffsetFetchResponsePartition,
                                index,
                                committed,
                                version
                            );
                            if denied {
                                partition
                                    .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                            } else {
                                partition
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= FETCH_ERROR_CODE_VERSION_MIN {
        response.with_error_code(NONE)
    } else {
        response
    }
}

/// Whether OffsetFetch shows a topic: `None` leaves it out (the principal
/// may not describe it and all topics were asked for), `Some(denied)`
/// shows it, with TOPIC_AUTHORIZATION_FAILED when denied (it was named).
fn shown(topic: &str, named: bool, allowed: &dyn Fn(&str, bool) -> bool) -> Option<bool> {
    if allowed(topic, named) {
        Some(false)
    } else if named {
        Some(true)
    } else {
        None
    }
}

/// Why this broker does not coordinate `group`: COORDINATOR_LOAD_IN_PROGRESS
/// while the freshest metadata names it the leader of the group's
/// partition of `__consumer_offsets` but it has not loaded the partition
/// yet (as Kafka answers while loading: clients wait and ask again),
/// NOT_COORDINATOR otherwise (clients look the coordinator up again).
fn not_coordinating(broker: &Broker, group: &str) -> i16 {
    let metadata = broker.metadata();
    let named = metadata
        .topic(crate::internal_topics::OFFSETS_TOPIC)
        .and_then(|topic| {
            let index = crate::internal_topics::partition_for(group, topic.partitions.len() as i32);
            topic.partitions.get(index as usize)
        })
        .is_some_and(|partition| partition.leader == broker.node_id());
    if named {
        code(ResponseError::CoordinatorLoadInProgress)
    } else {
        code(ResponseError::NotCoordinator)
    }
}

/// An error (NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS) for a
/// single-group OffsetFetch: top-level from v2, on every requested
/// partition before.
fn not_coordinator(request: OffsetFetchRequest, version: i16, error: i16) -> OffsetFetchResponse {
    if version >= FETCH_ERROR_CODE_VERSION_MIN {
        return OffsetFetchResponse::default().with_error_code(error);
    }
    let topics = request
        .topics
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            OffsetFetchResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partition_indexes
                        .into_iter()
                        .map(|index| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(-1)
                                .with_error_code(error)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub(super) fn offset_delete(
    broker: &Broker,
    request: OffsetDeleteRequest,
    origin: RequestContext<'_>,
) -> OffsetDeleteResponse {
    // DELETE on the group, READ on each topic.
    let who = origin.who(ApiKey::OffsetDelete);
    if !broker.authorizer.authorize(
        &who,
        Operation::Delete,
        ResourceType::Group,
        &request.group_id,
    ) {
        return OffsetDeleteResponse::default()
            .with_error_code(code(ResponseError::GroupAuthorizationFailed));
    }
    let denied: std::collections::HashSet<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|name| {
            !broker
                .authorizer
                .authorize(&who, Operation::Read, ResourceType::Topic, name)
        })
        .collect();
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .filter(|t| !denied.contains(t.name.0.as_str()))
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let (outcome, errors) = broker
        .groups
        .delete_offsets(request.group_id.0.as_str(), &partitions);
    if let Err(error) = outcome {
        return OffsetDeleteResponse::default().with_error_code(code(error));
    }
    let mut errors = errors.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let refused = denied.contains(topic.name.0.as_str());
            let known = broker.metadata().topic(topic.name.0.as_str()).cloned();
            OffsetDeleteResponseTopic::default()
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .map(|p| {
                            if refused {
                                return OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code(
                                        ResponseError::TopicAuthorizationFailed,
                                    ));
                            }
                            let deleted =
                                errors.next().map_or(NONE, |deleted| result_code(&deleted));
                            let exists = known.as_ref().is_some_and(|t| {
                                usize::try_from(p.partition_index)
                                    .is_ok_and(|i| i < t.partitions.len())
                            });
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(if exists {
                                    deleted
                                } else {
                                    code(ResponseError::UnknownTopicOrPartition)
                                })
                        })
                        .collect(),
                )
                .with_name(topic.name)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
