//! The one place where requests on a single resource are refused before
//! their handler runs: the group APIs need READ on the group, the
//! transaction APIs WRITE on the transactional id, InitProducerId WRITE on
//! it (or, without one, IDEMPOTENT_WRITE on the cluster or WRITE on some
//! topic), the cluster APIs their operation on the cluster — Kafka's table
//! of operations per API. APIs that name many resources (Produce, Fetch,
//! Metadata, offsets, topics, configs, ...) check each in their handler.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, ApiKey, DescribeClusterResponse, EndTxnResponse, HeartbeatResponse,
    InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse, ProducerId, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use protocol::codec::{Request, Response};

use super::RequestContext;
use crate::authorizer::{Operation, ResourceType, CLUSTER_NAME};
use crate::broker::Broker;
use crate::errors::code;

/// What refuses the request, as the response to send instead; `None` lets
/// it through.
pub(super) fn refuse(
    broker: &Broker,
    request: &Request,
    api: ApiKey,
    origin: RequestContext<'_>,
) -> Option<Response> {
    if !broker.authorizer.enabled() {
        return None;
    }
    let who = origin.who(api);
    let may = |operation, resource, name: &str| {
        broker.authorizer.authorize(&who, operation, resource, name)
    };
    let group = |name: &str| may(Operation::Read, ResourceType::Group, name);
    let transaction = |id: &str| may(Operation::Write, ResourceType::TransactionalId, id);
    let group_denied = code(ResponseError::GroupAuthorizationFailed);
    let transaction_denied = code(ResponseError::TransactionalIdAuthorizationFailed);
    let cluster_denied = code(ResponseError::ClusterAuthorizationFailed);
    match request {
        Request::JoinGroup(body) if !group(&body.group_id) => Some(Response::JoinGroup(
            JoinGroupResponse::default().with_error_code(group_denied),
        )),
        Request::SyncGroup(body) if !group(&body.group_id) => Some(Response::SyncGroup(
            SyncGroupResponse::default().with_error_code(group_denied),
        )),
        Request::Heartbeat(body) if !group(&body.group_id) => Some(Response::Heartbeat(
            HeartbeatResponse::default().with_error_code(group_denied),
        )),
        Request::LeaveGroup(body) if !group(&body.group_id) => Some(Response::LeaveGroup(
            LeaveGroupResponse::default().with_error_code(group_denied),
        )),
        Request::EndTxn(body) if !transaction(&body.transactional_id) => Some(Response::EndTxn(
            EndTxnResponse::default()
                .with_error_code(transaction_denied)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )),
        Request::AddOffsetsToTxn(body) => {
            let error = if !transaction(&body.transactional_id) {
                transaction_denied
            } else if !group(&body.group_id) {
                group_denied
            } else {
                return None;
            };
            Some(Response::AddOffsetsToTxn(
                AddOffsetsToTxnResponse::default().with_error_code(error),
            ))
        }
        Request::InitProducerId(body) => {
            let allowed = match &body.transactional_id {
                Some(id) => transaction(id),
                None => {
                    may(
                        Operation::IdempotentWrite,
                        ResourceType::Cluster,
                        CLUSTER_NAME,
                    ) || broker.authorizer.allowed_on_some(
                        &who,
                        Operation::Write,
                        ResourceType::Topic,
                    )
                }
            };
            let error = match &body.transactional_id {
                Some(_) => transaction_denied,
                None => cluster_denied,
            };
            (!allowed).then(|| {
                Response::InitProducerId(
                    InitProducerIdResponse::default()
                        .with_error_code(error)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                )
            })
        }
        Request::DescribeCluster(_)
            if !may(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) =>
        {
            Some(Response::DescribeCluster(
                DescribeClusterResponse::default()
                    .with_error_code(cluster_denied)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Cluster authorization failed.",
                    ))),
            ))
        }
        _ => None,
    }
}
