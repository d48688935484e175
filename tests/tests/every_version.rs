//! Every (api, version) that ApiVersions advertises is answered: a request
//! encoded by the `kafka-protocol` crate at that version gets a response
//! that decodes at that version with nothing left over, on a connection
//! that stays open. So an old version that clients still send (Sarama 1.22
//! sends OffsetCommit v1 and DescribeConfigs v0 without asking) cannot
//! silently close the connection again.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use e2e::BrokerProcess;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Encodes the request at a version; decodes its response at a version.
type Encode = Box<dyn Fn(&mut BytesMut, i16) -> anyhow::Result<()>>;
type Decode = fn(&mut Bytes, i16) -> anyhow::Result<()>;

fn pair<R: Request + 'static>(request: R) -> (Encode, Decode) {
    (
        Box::new(move |buf: &mut BytesMut, version| request.encode(buf, version)),
        |buf: &mut Bytes, version| R::Response::decode(buf, version).map(drop),
    )
}

/// A request for `api_key` as a client would send it with no arguments:
/// the crate's defaults, and what makes a response due (acks=1).
fn request(api_key: ApiKey) -> (Encode, Decode) {
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
        other => panic!("{other:?} is advertised: add a request for it here"),
    }
}

/// Sends `body` at `version` and returns the response body, checking the
/// correlation id.
async fn call(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    encode: &Encode,
) -> anyhow::Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("every-version")));
    let mut frame = BytesMut::new();
    header.encode(&mut frame, api_key.request_header_version(version))?;
    encode(&mut frame, version)?;
    let mut message = BytesMut::with_capacity(4 + frame.len());
    message.put_u32(u32::try_from(frame.len())?);
    message.extend_from_slice(&frame);
    stream.write_all(&message).await?;
    let size = stream.read_u32().await? as usize;
    anyhow::ensure!(size < 64 << 20, "response of {size} bytes");
    let mut response = vec![0; size];
    stream.read_exact(&mut response).await?;
    let mut response = Bytes::from(response);
    let header = ResponseHeader::decode(&mut response, api_key.response_header_version(version))?;
    anyhow::ensure!(
        header.correlation_id == correlation_id,
        "correlation id {} in the response to {correlation_id}",
        header.correlation_id
    );
    Ok(response)
}

#[tokio::test]
async fn every_advertised_version_of_every_api_is_answered() {
    let broker = BrokerProcess::start(&[]);
    let mut stream = TcpStream::connect(broker.bootstrap()).await.unwrap();
    // What the broker itself advertises, not our table: the two must agree.
    let mut versions = call(
        &mut stream,
        ApiKey::ApiVersions,
        3,
        0,
        &pair(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("every-version"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        )
        .0,
    )
    .await
    .unwrap();
    let advertised: Vec<ApiVersion> = ApiVersionsResponse::decode(&mut versions, 3)
        .unwrap()
        .api_keys;
    assert_eq!(advertised, protocol::api::api_versions());

    let mut failures = Vec::new();
    let mut answered = 0;
    let mut correlation_id = 1;
    for api in &advertised {
        let api_key = ApiKey::try_from(api.api_key).expect("a known api key");
        for version in api.min_version..=api.max_version {
            correlation_id += 1;
            let (encode, decode) = request(api_key);
            let result = call(&mut stream, api_key, version, correlation_id, &encode)
                .await
                .and_then(|mut response| {
                    decode(&mut response, version)?;
                    anyhow::ensure!(
                        !response.has_remaining(),
                        "{} bytes left after the response",
                        response.remaining()
                    );
                    Ok(())
                });
            match result {
                Ok(()) => answered += 1,
                Err(error) => {
                    failures.push(format!("{api_key:?} v{version}: {error:#}"));
                    // The connection may be gone: go on with a new one.
                    stream = TcpStream::connect(broker.bootstrap()).await.unwrap();
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
