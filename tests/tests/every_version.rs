//! Every (api, version) that ApiVersions advertises is answered: a request
//! encoded by the `kafka-protocol` crate at that version gets a response
//! that decodes at that version with nothing left over, on a connection
//! that stays open. So an old version that clients still send (Sarama 1.22
//! sends OffsetCommit v1 and DescribeConfigs v0 without asking) cannot
//! silently close the connection again.

use std::future::Future;
use std::pin::Pin;

use client::Client;
use e2e::BrokerProcess;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};

/// Sends the request at a version and decodes its response at that
/// version (the client refuses a response with bytes left over).
type Exchange = Box<
    dyn for<'a> Fn(&'a mut Client, i16) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>,
>;

fn pair<R: Request + Clone + 'static>(request: R) -> Exchange {
    Box::new(move |client, version| {
        let request = request.clone();
        Box::pin(async move { client.call(request, version).await.map(drop) })
    })
}

/// A request for `api_key` as a client would send it with no arguments:
/// the crate's defaults, and what makes a response due (acks=1).
fn request(api_key: ApiKey) -> Exchange {
    match api_key {
        ApiKey::Produce => pair(
            ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5_000),
        ),
        ApiKey::Fetch => pair(FetchRequest::default().with_max_wait_ms(0)),
        ApiKey::ListOffsets => pair(ListOffsetsRequest::default()),
        ApiKey::Metadata => pair(MetadataRequest::default()),
        ApiKey::OffsetCommit => pair(OffsetCommitRequest::default()),
        ApiKey::OffsetFetch => pair(OffsetFetchRequest::default()),
        ApiKey::FindCoordinator => pair(FindCoordinatorRequest::default()),
        ApiKey::JoinGroup => pair(JoinGroupRequest::default()),
        ApiKey::Heartbeat => pair(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => pair(LeaveGroupRequest::default()),
        ApiKey::SyncGroup => pair(SyncGroupRequest::default()),
        ApiKey::DescribeGroups => pair(DescribeGroupsRequest::default()),
        ApiKey::ListGroups => pair(ListGroupsRequest::default()),
        ApiKey::ApiVersions => pair(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => pair(CreateTopicsRequest::default()),
        ApiKey::DeleteTopics => pair(DeleteTopicsRequest::default()),
        ApiKey::DeleteRecords => pair(DeleteRecordsRequest::default()),
        ApiKey::OffsetForLeaderEpoch => pair(OffsetForLeaderEpochRequest::default()),
        ApiKey::DescribeConfigs => pair(DescribeConfigsRequest::default()),
        ApiKey::AlterConfigs => pair(AlterConfigsRequest::default()),
        ApiKey::DescribeLogDirs => pair(DescribeLogDirsRequest::default()),
        ApiKey::CreatePartitions => pair(CreatePartitionsRequest::default()),
        ApiKey::DeleteGroups => pair(DeleteGroupsRequest::default()),
        ApiKey::ElectLeaders => pair(ElectLeadersRequest::default()),
        ApiKey::IncrementalAlterConfigs => pair(IncrementalAlterConfigsRequest::default()),
        ApiKey::OffsetDelete => pair(OffsetDeleteRequest::default()),
        ApiKey::DescribeCluster => pair(DescribeClusterRequest::default()),
        ApiKey::DescribeTopicPartitions => pair(DescribeTopicPartitionsRequest::default()),
        ApiKey::InitProducerId => pair(InitProducerIdRequest::default()),
        ApiKey::DescribeProducers => pair(DescribeProducersRequest::default()),
        ApiKey::AddPartitionsToTxn => pair(AddPartitionsToTxnRequest::default()),
        ApiKey::AddOffsetsToTxn => pair(AddOffsetsToTxnRequest::default()),
        ApiKey::EndTxn => pair(EndTxnRequest::default()),
        ApiKey::WriteTxnMarkers => pair(WriteTxnMarkersRequest::default()),
        ApiKey::TxnOffsetCommit => pair(TxnOffsetCommitRequest::default()),
        ApiKey::DescribeTransactions => pair(DescribeTransactionsRequest::default()),
        ApiKey::ListTransactions => pair(ListTransactionsRequest::default()),
        // Without an authorizer: SECURITY_DISABLED.
        ApiKey::DescribeAcls => pair(DescribeAclsRequest::default()),
        ApiKey::CreateAcls => pair(CreateAclsRequest::default()),
        ApiKey::DeleteAcls => pair(DeleteAclsRequest::default()),
        ApiKey::DescribeUserScramCredentials => {
            pair(DescribeUserScramCredentialsRequest::default())
        }
        ApiKey::AlterUserScramCredentials => pair(AlterUserScramCredentialsRequest::default()),
        // On a PLAINTEXT listener: ILLEGAL_SASL_STATE, the connection open.
        ApiKey::SaslHandshake => pair(SaslHandshakeRequest::default()),
        ApiKey::SaslAuthenticate => pair(SaslAuthenticateRequest::default()),
        other => panic!("{other:?} is advertised: add a request for it here"),
    }
}

#[tokio::test]
async fn every_advertised_version_of_every_api_is_answered() {
    let broker = BrokerProcess::start(&[]);
    let mut client = Client::connect(&broker.bootstrap()).await.unwrap();
    // What the broker itself advertises, not our table: the two must agree.
    let advertised = client
        .call(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("every-version"))
                .with_client_software_version(StrBytes::from_static_str("1")),
            3,
        )
        .await
        .unwrap()
        .api_keys;
    assert_eq!(advertised, protocol::api::api_versions());

    let mut failures = Vec::new();
    let mut answered = 0;
    for api in &advertised {
        let api_key = ApiKey::try_from(api.api_key).expect("a known api key");
        let exchange = request(api_key);
        for version in api.min_version..=api.max_version {
            match exchange(&mut client, version).await {
                Ok(()) => answered += 1,
                Err(error) => {
                    failures.push(format!("{api_key:?} v{version}: {error:#}"));
                    // The connection may be gone: go on with a new one.
                    client = Client::connect(&broker.bootstrap()).await.unwrap();
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} advertised versions not answered:\n{}\n{}",
        failures.len(),
        failures.len() + answered,
        failures.join("\n"),
        broker.log()
    );
}
