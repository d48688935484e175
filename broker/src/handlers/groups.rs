//! The group membership APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! DescribeGroups, ListGroups and DeleteGroups. Each translates between the
//! wire messages and [`crate::group::GroupCoordinator`], minding which
//! fields exist at the request's version.

use std::net::SocketAddr;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::authorizer::{Operation, ResourceType, CLUSTER_NAME};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::errors::{code, option_code, result_code};
use crate::group::{self, JoinRequest, LeavingMember, SyncRequest};

/// JoinGroup v4+ asks new members to rejoin with the id we give them (KIP-394).
const KNOWN_MEMBER_ID_VERSION_MIN: i16 = 4;
/// JoinGroup v0 has no rebalance timeout: the session timeout serves.
const REBALANCE_TIMEOUT_VERSION_MIN: i16 = 1;
/// JoinGroup v7+ and SyncGroup v5+ carry the protocol type and name as nullable fields.
const JOIN_PROTOCOL_TYPE_VERSION_MIN: i16 = 7;
const JOIN_SKIP_ASSIGNMENT_VERSION_MIN: i16 = 9;
const SYNC_PROTOCOL_VERSION_MIN: i16 = 5;
/// LeaveGroup v3+ names members in a list (KIP-345).
const LEAVE_BATCH_VERSION_MIN: i16 = 3;
/// DescribeGroups v3+ has authorized operations.
const DESCRIBE_AUTHORIZED_OPERATIONS_VERSION_MIN: i16 = 3;
/// ListGroups v4+ reports states, v5+ types.
const LIST_STATES_VERSION_MIN: i16 = 4;
const LIST_TYPES_VERSION_MIN: i16 = 5;
/// Without ACLs a client may do everything to a group: READ 3, DELETE 6, DESCRIBE 8.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// All groups of the classic protocol (KIP-848 groups are "consumer").
const CLASSIC_GROUP_TYPE: &str = "classic";

fn string(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

pub(super) async fn join_group(
    broker: &Broker,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let rebalance_timeout_ms = if version >= REBALANCE_TIMEOUT_VERSION_MIN {
        request.rebalance_timeout_ms
    } else {
        request.session_timeout_ms
    };
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms,
        client_id: client_id.to_string(),
        client_host: format!("/{}", peer.ip()),
        require_known_member_id: version >= KNOWN_MEMBER_ID_VERSION_MIN,
    };
    let member_id = join.member_id.clone();
    let reply = broker.groups.join(join, Instant::now(), now_ms());
    let result = reply
        .wait(|| group::JoinResponse {
            error: Some(ResponseError::NotCoordinator),
            generation_id: -1,
            member_id,
            ..Default::default()
        })
        .await;
    let new_protocol_fields = version >= JOIN_PROTOCOL_TYPE_VERSION_MIN;
    JoinGroupResponse::default()
        .with_error_code(option_code(result.error))
        .with_generation_id(result.generation_id)
        .with_protocol_type(if new_protocol_fields {
            result.protocol_type.map(string)
        } else {
            None
        })
        .with_protocol_name(match result.protocol_name {
            Some(name) => Some(string(name)),
            // Before v7 the field is not nullable.
            None if !new_protocol_fields => Some(StrBytes::default()),
            None => None,
        })
        .with_leader(string(result.leader))
        .with_skip_assignment(version >= JOIN_SKIP_ASSIGNMENT_VERSION_MIN && result.skip_assignment)
        .with_member_id(string(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(string(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(string))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

pub(super) async fn sync_group(
    broker: &Broker,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let sync = SyncRequest {
        group_id: request.group_id.0.to_string(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        protocol_type: request.protocol_type.map(|s| s.to_string()),
        protocol_name: request.protocol_name.map(|s| s.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let result = broker
        .groups
        .sync(sync, Instant::now(), now_ms())
        .wait(|| group::SyncResponse {
            error: Some(ResponseError::NotCoordinator),
            ..Default::default()
        })
        .await;
    let mut response = SyncGroupResponse::default()
        .with_error_code(option_code(result.error))
        .with_assignment(result.assignment);
    if version >= SYNC_PROTOCOL_VERSION_MIN {
        response = response
            .with_protocol_type(result.protocol_type.map(string))
            .with_protocol_name(result.protocol_name.map(string));
    }
    response
}

pub(super) fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    let beat = broker.groups.heartbeat(
        request.group_id.0.as_str(),
        request.generation_id,
        request.member_id.as_str(),
        request.group_instance_id.as_deref(),
        Instant::now(),
    );
    HeartbeatResponse::default().with_error_code(result_code(&beat))
}

pub(super) fn leave_group(
    broker: &Broker,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let batched = version >= LEAVE_BATCH_VERSION_MIN;
    let leaving: Vec<LeavingMember> = if batched {
        request
            .members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m
                    .group_instance_id
                    .as_ref()
                    .map(std::string::ToString::to_string),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let (outcome, errors) = broker.groups.leave(
        request.group_id.0.as_str(),
        &leaving,
        Instant::now(),
        now_ms(),
    );
    if !batched {
        // One member: its error is the response's.
        let outcome = outcome.and(errors.first().copied().unwrap_or(Ok(())));
        return LeaveGroupResponse::default().with_error_code(result_code(&outcome));
    }
    LeaveGroupResponse::default()
        .with_error_code(result_code(&outcome))
        .with_members(
            leaving
                .into_iter()
                .zip(errors)
                .map(|(m, left)| {
                    MemberResponse::default()
                        .with_member_id(string(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(string))
                        .with_error_code(result_code(&left))
                })
                .collect(),
        )
}

pub(super) fn describe_groups(
    broker: &Broker,
    request: DescribeGroupsRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> DescribeGroupsResponse {
    let with_operations = request.include_authorized_operations
        && version >= DESCRIBE_AUTHORIZED_OPERATIONS_VERSION_MIN;
    let who = origin.who(ApiKey::DescribeGroups);
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            if !broker.authorizer.authorize(
                &who,
                Operation::Describe,
                ResourceType::Group,
                &group_id,
            ) {
                return DescribedGroup::default()
                    .with_error_code(code(ResponseError::GroupAuthorizationFailed))
                    .with_group_id(group_id)
                    .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
            }
            let operations = match (with_operations, broker.authorizer.enabled()) {
                (false, _) => AUTHORIZED_OPERATIONS_OMITTED,
                (true, false) => GROUP_OPERATIONS,
                (true, true) => {
                    broker
                        .authorizer
                        .authorized_operations(&who, ResourceType::Group, &group_id)
                }
            };
            let description = broker.groups.describe(group_id.0.as_str());
            DescribedGroup::default()
                .with_error_code(option_code(description.error))
                .with_group_id(group_id)
                .with_group_state(string(description.state.name()))
                .with_protocol_type(string(description.protocol_type))
                .with_protocol_data(string(description.protocol))
                .with_authorized_operations(operations)
                .with_members(
                    description
                        .members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(string(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(string))
                                .with_client_id(string(m.client_id))
                                .with_client_host(string(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) fn list_groups(
    broker: &Broker,
    request: ListGroupsRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> ListGroupsResponse {
    // DESCRIBE on the cluster lists every group; else those the principal
    // may DESCRIBE, silently.
    let who = origin.who(ApiKey::ListGroups);
    let all = broker.authorizer.allowed(
        &who,
        Operation::Describe,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.name().to_ascii_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == CLASSIC_GROUP_TYPE))
        .filter(|g| {
            all || broker.authorizer.allowed(
                &who,
                Operation::Describe,
                ResourceType::Group,
                &g.group_id,
            )
        })
        .map(|g| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(string(g.group_id)))
                .with_protocol_type(string(g.protocol_type));
            if version >= LIST_STATES_VERSION_MIN {
                listed = listed.with_group_state(string(g.state.name()));
            }
            if version >= LIST_TYPES_VERSION_MIN {
                listed = listed.with_group_type(string(CLASSIC_GROUP_TYPE));
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) fn delete_groups(
    broker: &Broker,
    request: DeleteGroupsRequest,
    origin: RequestContext<'_>,
) -> DeleteGroupsResponse {
    let who = origin.who(ApiKey::DeleteGroups);
    let results = request
        .groups_names
        .into_iter()
        .map(|group_id| {
            if !broker
                .authorizer
                .authorize(&who, Operation::Delete, ResourceType::Group, &group_id)
            {
                return DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(code(ResponseError::GroupAuthorizationFailed));
            }
            let deleted = broker.groups.delete_group(group_id.0.as_str());
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(result_code(&deleted))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
