//! One module per Kafka API, or per family of APIs: `groups` (the group
//! APIs), `offsets` (OffsetCommit, OffsetFetch, OffsetDelete), `txn` (the
//! transaction APIs), `producers` (InitProducerId, DescribeProducers),
//! `configs` (Describe/Alter/IncrementalAlterConfigs), `admin_topics`
//! (CreatePartitions, DeleteRecords, DescribeLogDirs, DescribeCluster,
//! DescribeTopicPartitions). `handle` is the single dispatch on the
//! request kind; which APIs and versions exist is decided by
//! `protocol::api`.

mod acls;
mod admin_topics;
mod api_versions;
mod configs;
mod create_topics;
mod delete_topics;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod gate;
mod groups;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod offsets;
mod produce;
mod producers;
mod scram;
mod txn;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use coordinator::{BrokerRegistration, ClusterMetadata};
use protocol::chunked::Splice;
use protocol::codec::{DecodedRequest, Request, Response};

use kafka_protocol::error::ResponseError;

use kafka_protocol::messages::ApiKey;

use crate::authorizer::{Operation, ResourceType, Who, CLUSTER_NAME};
use crate::broker::Broker;
use crate::errors::code;

/// What a handler knows of where a request came from: the client's
/// address, the listener it connected to (clients are told the addresses
/// of that listener), and the connection's principal (what ACLs check).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestContext<'a> {
    pub peer: SocketAddr,
    pub listener: &'a str,
    pub principal: &'a str,
}

impl<'a> RequestContext<'a> {
    /// Who asks, for the authorizer, in API `api`.
    pub(crate) fn who(&self, api: ApiKey) -> Who<'a> {
        Who {
            principal: self.principal,
            host: self.peer.ip(),
            api: api_name(api),
        }
    }
}

/// Whether the request's principal may do `operation` on the cluster
/// (a denial is logged).
pub(crate) fn cluster_allows(
    broker: &Broker,
    origin: RequestContext<'_>,
    api: ApiKey,
    operation: Operation,
) -> bool {
    broker.authorizer.authorize(
        &origin.who(api),
        operation,
        ResourceType::Cluster,
        CLUSTER_NAME,
    )
}

/// Whether the request's principal may do `operation` on a topic (a
/// denial is logged).
pub(crate) fn topic_allows(
    broker: &Broker,
    origin: RequestContext<'_>,
    api: ApiKey,
    operation: Operation,
    topic: &str,
) -> bool {
    broker
        .authorizer
        .authorize(&origin.who(api), operation, ResourceType::Topic, topic)
}

/// An API's name, for logs.
fn api_name(api: ApiKey) -> &'static str {
    // ApiKey's Debug is its name; the names are few and fixed.
    macro_rules! names {
        ($($name:ident),*) => {
            match api { $(ApiKey::$name => stringify!($name),)* _ => "another API" }
        };
    }
    names!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        WriteTxnMarkers,
        TxnOffsetCommit,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        DescribeConfigs,
        AlterConfigs,
        DescribeLogDirs,
        CreatePartitions,
        DeleteGroups,
        ElectLeaders,
        IncrementalAlterConfigs,
        OffsetDelete,
        DescribeCluster,
        DescribeProducers,
        DescribeTransactions,
        ListTransactions,
        DescribeTopicPartitions,
        DescribeUserScramCredentials,
        AlterUserScramCredentials
    )
}

/// Where clients of `listener` reach broker `node_id`: host, port, rack.
pub(crate) fn endpoint<'m>(
    metadata: &'m ClusterMetadata,
    node_id: i32,
    listener: &str,
) -> Option<(&'m str, u16, Option<&'m str>)> {
    let broker: &BrokerRegistration = metadata.brokers.get(&node_id)?;
    let endpoint = broker.endpoint(listener)?;
    Some((&endpoint.host, endpoint.port, broker.rack.as_deref()))
}

/// Each of `ids` that clients of `listener` can reach, built by `make`
/// (node id, host, port, rack): the broker lists of Metadata,
/// DescribeCluster and the KIP-951 node endpoints.
pub(crate) fn reachable<T>(
    metadata: &ClusterMetadata,
    ids: impl IntoIterator<Item = i32>,
    listener: &str,
    make: impl Fn(
        i32,
        kafka_protocol::protocol::StrBytes,
        i32,
        Option<kafka_protocol::protocol::StrBytes>,
    ) -> T,
) -> Vec<T> {
    use kafka_protocol::protocol::StrBytes;
    ids.into_iter()
        .filter_map(|id| {
            let (host, port, rack) = endpoint(metadata, id, listener)?;
            Some(make(
                id,
                StrBytes::from_string(host.to_string()),
                i32::from(port),
                rack.map(|rack| StrBytes::from_string(rack.to_string())),
            ))
        })
        .collect()
}

/// KIP-951: a partition's leader and leader epoch in the freshest
/// metadata, if the leader is alive.
pub(crate) fn current_leader(
    metadata: &ClusterMetadata,
    topic: &str,
    index: i32,
) -> Option<(i32, i32)> {
    metadata
        .partition(topic, index)
        .filter(|partition| metadata.is_alive(partition.leader))
        .map(|partition| (partition.leader, partition.leader_epoch))
}

/// What handling a request comes to.
pub(crate) enum Reply {
    /// The response.
    Now(Response),
    /// The response, with the pieces of its record set stand-ins (Fetch:
    /// a leader's batches from memory, see [`protocol::chunked::Splice`]).
    Spliced(Response, Vec<Splice>),
    /// No response is sent (Produce, acks=0).
    Nothing,
    /// The response once what was done is replicated (Produce, acks=all);
    /// the connection goes on with the next request meanwhile.
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// Handles one request.
pub(crate) async fn handle(
    broker: &Broker,
    request: DecodedRequest,
    origin: RequestContext<'_>,
) -> Reply {
    let peer = origin.peer;
    let version = request.version();
    let client_id = request.header.client_id.clone().unwrap_or_default();
    if let Some(refused) = gate::refuse(broker, &request.body, request.api_key, origin) {
        return Reply::Now(refused);
    }
    Reply::Now(match request.body {
        Request::ApiVersions(_) => Response::ApiVersions(api_versions::handle()),
        Request::Metadata(body) => {
            Response::Metadata(metadata::handle(broker, body, version, origin).await)
        }
        Request::Produce(body) => {
            return produce::handle(broker, body, version, origin).await;
        }
        Request::Fetch(body) => {
            let (response, splices) = fetch::handle(broker, body, version, origin).await;
            return Reply::Spliced(Response::Fetch(response), splices);
        }
        Request::ListOffsets(body) => {
            Response::ListOffsets(list_offsets::handle(broker, body, version, origin))
        }
        Request::OffsetForLeaderEpoch(body) => {
            Response::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, body, origin))
        }
        Request::CreateTopics(body) => {
            Response::CreateTopics(create_topics::handle(broker, body, origin).await)
        }
        Request::FindCoordinator(body) => {
            Response::FindCoordinator(find_coordinator::handle(broker, body, version, origin).await)
        }
        Request::JoinGroup(body) => {
            Response::JoinGroup(groups::join_group(broker, body, version, &client_id, peer).await)
        }
        Request::SyncGroup(body) => {
            Response::SyncGroup(groups::sync_group(broker, body, version).await)
        }
        Request::Heartbeat(body) => Response::Heartbeat(groups::heartbeat(broker, body)),
        Request::LeaveGroup(body) => {
            Response::LeaveGroup(groups::leave_group(broker, body, version))
        }
        Request::DescribeGroups(body) => {
            Response::DescribeGroups(groups::describe_groups(broker, body, version, origin))
        }
        Request::ListGroups(body) => {
            Response::ListGroups(groups::list_groups(broker, body, version, origin))
        }
        Request::DescribeConfigs(body) => {
            Response::DescribeConfigs(configs::describe_configs(broker, body, version, origin))
        }
        Request::AlterConfigs(body) => {
            Response::AlterConfigs(configs::alter_configs(broker, body, origin).await)
        }
        Request::IncrementalAlterConfigs(body) => Response::IncrementalAlterConfigs(
            configs::incremental_alter_configs(broker, body, origin).await,
        ),
        Request::CreatePartitions(body) => {
            Response::CreatePartitions(admin_topics::create_partitions(broker, body, origin).await)
        }
        Request::DeleteRecords(body) => {
            Response::DeleteRecords(admin_topics::delete_records(broker, body, origin))
        }
        Request::DescribeLogDirs(body) => {
            Response::DescribeLogDirs(admin_topics::describe_log_dirs(broker, body, origin))
        }
        Request::DescribeCluster(body) => {
            Response::DescribeCluster(admin_topics::describe_cluster(broker, body, origin))
        }
        Request::DescribeTopicPartitions(body) => Response::DescribeTopicPartitions(
            admin_topics::describe_topic_partitions(broker, body, origin),
        ),
        Request::ElectLeaders(body) => {
            Response::ElectLeaders(elect_leaders::handle(broker, body, version, origin).await)
        }
        Request::DeleteGroups(body) => {
            Response::DeleteGroups(groups::delete_groups(broker, body, origin))
        }
        Request::OffsetCommit(body) => {
            Response::OffsetCommit(offsets::offset_commit(broker, body, version, origin).await)
        }
        Request::OffsetFetch(body) => {
            Response::OffsetFetch(offsets::offset_fetch(broker, body, version, origin))
        }
        Request::OffsetDelete(body) => {
            Response::OffsetDelete(offsets::offset_delete(broker, body, origin))
        }
        Request::InitProducerId(body) => {
            Response::InitProducerId(producers::init_producer_id(broker, body, version).await)
        }
        Request::AddPartitionsToTxn(body) => Response::AddPartitionsToTxn(
            txn::add_partitions_to_txn(broker, body, version, origin).await,
        ),
        Request::AddOffsetsToTxn(body) => {
            Response::AddOffsetsToTxn(txn::add_offsets_to_txn(broker, body, version).await)
        }
        Request::EndTxn(body) => Response::EndTxn(txn::end_txn(broker, body, version).await),
        Request::WriteTxnMarkers(body) => {
            Response::WriteTxnMarkers(txn::write_txn_markers(broker, body, origin).await)
        }
        Request::TxnOffsetCommit(body) => {
            Response::TxnOffsetCommit(txn::txn_offset_commit(broker, body, version, origin).await)
        }
        Request::DescribeTransactions(body) => {
            Response::DescribeTransactions(txn::describe_transactions(broker, body, origin))
        }
        Request::ListTransactions(body) => {
            Response::ListTransactions(txn::list_transactions(broker, body, origin))
        }
        // A SASL listener's connection authenticates before its requests
        // come here (`crate::sasl`); on any other listener, or after
        // authenticating, these are out of place.
        Request::SaslHandshake(_) => Response::SaslHandshake(
            kafka_protocol::messages::SaslHandshakeResponse::default()
                .with_error_code(code(ResponseError::IllegalSaslState)),
        ),
        Request::SaslAuthenticate(_) => Response::SaslAuthenticate(
            kafka_protocol::messages::SaslAuthenticateResponse::default()
                .with_error_code(code(ResponseError::IllegalSaslState))
                .with_error_message(Some(kafka_protocol::protocol::StrBytes::from_static_str(
                    "SaslAuthenticate is out of place: the connection is not in a SASL handshake",
                ))),
        ),
        Request::DescribeUserScramCredentials(body) => {
            Response::DescribeUserScramCredentials(scram::describe(broker, &body, origin))
        }
        Request::AlterUserScramCredentials(body) => {
            Response::AlterUserScramCredentials(scram::alter(broker, body, origin).await)
        }
        Request::CreateAcls(body) => Response::CreateAcls(acls::create(broker, body, origin).await),
        Request::DescribeAcls(body) => {
            Response::DescribeAcls(acls::describe(broker, &body, origin))
        }
        Request::DeleteAcls(body) => Response::DeleteAcls(acls::delete(broker, body, origin).await),
        Request::DescribeProducers(body) => {
            Response::DescribeProducers(producers::describe_producers(broker, body, origin))
        }
        Request::DeleteTopics(body) => {
            Response::DeleteTopics(delete_topics::handle(broker, body, version, origin).await)
        }
    })
}
