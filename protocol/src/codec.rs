//! Request decoding and response encoding.
//!
//! A request frame (without its size prefix) is a header whose version
//! depends on the api key and version, then the body. Decoding checks the
//! api key and version against [`crate::api::SUPPORTED_APIS`] before the body
//! is touched. A response is encoded with its size prefix and the response
//! header version the api key and version call for (ApiVersions: always v0).

use bytes::{BufMut, Bytes};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, AlterConfigsRequest, AlterConfigsResponse,
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
    ApiVersionsRequest, ApiVersionsResponse, CreateAclsRequest, CreateAclsResponse,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteAclsRequest, DeleteAclsResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeAclsRequest, DescribeAclsResponse, DescribeClusterRequest, DescribeClusterResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeProducersRequest,
    DescribeProducersResponse, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, ElectLeadersRequest, ElectLeadersResponse, EndTxnRequest,
    EndTxnResponse, FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    HeartbeatRequest, HeartbeatResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, InitProducerIdRequest, InitProducerIdResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse, ListTransactionsRequest,
    ListTransactionsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, SyncGroupRequest,
    SyncGroupResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::api;
use crate::chunked::{ChunkedBuf, Splice};
use crate::frame::FRAME_PREFIX_BYTES;

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

macro_rules! messages {
    ($($name:ident($request:ty, $response:ty)),* $(,)?) => {
        /// A decoded request body of an implemented API.
        #[derive(Debug, Clone)]
        pub enum Request {
            $($name($request),)*
        }

        /// A response body to encode.
        #[derive(Debug, Clone)]
        pub enum Response {
            $($name($response),)*
        }

        impl Request {
            fn decode(key: ApiKey, body: &mut Bytes, version: i16) -> anyhow::Result<Option<Request>> {
                Ok(Some(match key {
                    $(ApiKey::$name => Request::$name(<$request>::decode(body, version)?),)*
                    #[allow(unreachable_patterns)]
                    _ => return Ok(None),
                }))
            }
        }

        impl Response {
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(Response::$name(_) => ApiKey::$name,)*
                }
            }

            fn encode_body<B: ByteBufMut>(&self, buf: &mut B, version: i16) -> anyhow::Result<()> {
                match self {
                    $(Response::$name(body) => body.encode(buf, version),)*
                }
            }
        }
    };
}

messages! {
    Produce(ProduceRequest, ProduceResponse),
    Fetch(FetchRequest, FetchResponse),
    ListOffsets(ListOffsetsRequest, ListOffsetsResponse),
    Metadata(MetadataRequest, MetadataResponse),
    OffsetCommit(OffsetCommitRequest, OffsetCommitResponse),
    OffsetFetch(OffsetFetchRequest, OffsetFetchResponse),
    FindCoordinator(FindCoordinatorRequest, FindCoordinatorResponse),
    JoinGroup(JoinGroupRequest, JoinGroupResponse),
    Heartbeat(HeartbeatRequest, HeartbeatResponse),
    LeaveGroup(LeaveGroupRequest, LeaveGroupResponse),
    SyncGroup(SyncGroupRequest, SyncGroupResponse),
    DescribeGroups(DescribeGroupsRequest, DescribeGroupsResponse),
    ListGroups(ListGroupsRequest, ListGroupsResponse),
    ApiVersions(ApiVersionsRequest, ApiVersionsResponse),
    CreateTopics(CreateTopicsRequest, CreateTopicsResponse),
    DeleteTopics(DeleteTopicsRequest, DeleteTopicsResponse),
    DeleteRecords(DeleteRecordsRequest, DeleteRecordsResponse),
    DescribeConfigs(DescribeConfigsRequest, DescribeConfigsResponse),
    AlterConfigs(AlterConfigsRequest, AlterConfigsResponse),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse),
    DescribeLogDirs(DescribeLogDirsRequest, DescribeLogDirsResponse),
    CreatePartitions(CreatePartitionsRequest, CreatePartitionsResponse),
    ElectLeaders(ElectLeadersRequest, ElectLeadersResponse),
    DescribeCluster(DescribeClusterRequest, DescribeClusterResponse),
    DescribeTopicPartitions(DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse),
    DeleteGroups(DeleteGroupsRequest, DeleteGroupsResponse),
    OffsetDelete(OffsetDeleteRequest, OffsetDeleteResponse),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse),
    InitProducerId(InitProducerIdRequest, InitProducerIdResponse),
    DescribeProducers(DescribeProducersRequest, DescribeProducersResponse),
    AddPartitionsToTxn(AddPartitionsToTxnRequest, AddPartitionsToTxnResponse),
    AddOffsetsToTxn(AddOffsetsToTxnRequest, AddOffsetsToTxnResponse),
    EndTxn(EndTxnRequest, EndTxnResponse),
    WriteTxnMarkers(WriteTxnMarkersRequest, WriteTxnMarkersResponse),
    TxnOffsetCommit(TxnOffsetCommitRequest, TxnOffsetCommitResponse),
    DescribeTransactions(DescribeTransactionsRequest, DescribeTransactionsResponse),
    ListTransactions(ListTransactionsRequest, ListTransactionsResponse),
    SaslHandshake(SaslHandshakeRequest, SaslHandshakeResponse),
    SaslAuthenticate(SaslAuthenticateRequest, SaslAuthenticateResponse),
    DescribeUserScramCredentials(DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse),
    AlterUserScramCredentials(AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse),
    CreateAcls(CreateAclsRequest, CreateAclsResponse),
    DescribeAcls(DescribeAclsRequest, DescribeAclsResponse),
    DeleteAcls(DeleteAclsRequest, DeleteAclsResponse),
}

/// Why a request frame could not be decoded. Every variant but
/// `ApiVersionsUnsupported` closes the connection, as Apache Kafka does.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request of {0} bytes is too short for a header")]
    TooShort(usize),
    #[error("unknown or unimplemented api key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("unsupported version {version} of {api_key:?} (correlation id {correlation_id})")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    /// ApiVersions at a version we do not know: answered with a v0 body
    /// carrying UNSUPPORTED_VERSION and our api list (KIP-511).
    #[error("ApiVersions v{version} is not supported (correlation id {correlation_id})")]
    ApiVersionsUnsupported { version: i16, correlation_id: i32 },
    #[error(
        "malformed {api_key:?} v{version} request (correlation id {correlation_id}): {reason}"
    )]
    Malformed {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        reason: String,
    },
}

/// A decoded request.
#[derive(Debug, Clone)]
pub struct DecodedRequest {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: Request,
}

impl DecodedRequest {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }
}

/// The api key and version a request frame starts with, read before
/// anything is decoded (a SASL listener decides from them alone whether an
/// unauthenticated client may send it).
pub fn peek_api(frame: &[u8]) -> Option<(i16, i16)> {
    match frame {
        [k0, k1, v0, v1, ..] => Some((
            i16::from_be_bytes([*k0, *k1]),
            i16::from_be_bytes([*v0, *v1]),
        )),
        _ => None,
    }
}

/// Decodes one request frame (the bytes after the size prefix).
pub fn decode_request(mut frame: Bytes) -> Result<DecodedRequest, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);

    let Some(supported) = api::supported(api_key_raw) else {
        return Err(DecodeError::UnknownApiKey {
            api_key: api_key_raw,
            correlation_id,
        });
    };
    let api_key = supported.key;
    if version < supported.min_version || version > supported.max_version {
        if api_key == ApiKey::ApiVersions {
            return Err(DecodeError::ApiVersionsUnsupported {
                version,
                correlation_id,
            });
        }
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |reason: anyhow::Error| DecodeError::Malformed {
        api_key,
        version,
        correlation_id,
        reason: format!("{reason:#}"),
    };
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(malformed)?;
    let body = Request::decode(api_key, &mut frame, version)
        .map_err(malformed)?
        .ok_or(DecodeError::UnknownApiKey {
            api_key: api_key_raw,
            correlation_id,
        })?;
    if !frame.is_empty() {
        // Kafka ignores trailing bytes too; log-worthy but harmless.
        tracing::debug!(
            ?api_key,
            version,
            trailing = frame.len(),
            "trailing bytes after request body"
        );
    }
    Ok(DecodedRequest {
        header,
        api_key,
        body,
    })
}

/// Encodes a response with its size prefix and header.
pub fn encode_response(
    response: &Response,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<Bytes> {
    let chunks = encode_response_chunks(response, Vec::new(), version, correlation_id)?;
    Ok(crate::chunked::join(&chunks))
}

/// [`encode_response`] as chunks to write one after another: the record
/// sets of a Fetch response (16 KiB and more) are chunks of their own,
/// shared with the log reads, not copied; `splices` are the pieces of the
/// response's record set stand-ins, in the order they are encoded.
pub fn encode_response_chunks(
    response: &Response,
    splices: Vec<Splice>,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<Vec<Bytes>> {
    let api_key = response.api_key();
    // The ApiVersions response header is always v0 so that a client that
    // does not yet know our versions can read it.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let shared = match response {
        Response::Fetch(fetch) => fetch
            .responses
            .iter()
            .flat_map(|topic| &topic.partitions)
            .filter_map(|partition| partition.records.clone())
            .collect(),
        _ => Vec::new(),
    };
    let mut buf = ChunkedBuf::new(256, shared, splices);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)?;
    response.encode_body(&mut buf, version)?;
    let size = i32::try_from(buf.offset() - FRAME_PREFIX_BYTES)?;
    buf.head_mut(FRAME_PREFIX_BYTES)
        .copy_from_slice(&size.to_be_bytes());
    buf.into_chunks().map_err(|reason| anyhow::anyhow!(reason))
}

/// The answer to ApiVersions at an unknown version: a v0 body with
/// UNSUPPORTED_VERSION and the api list, so the client can retry lower.
pub fn api_versions_unsupported_response(correlation_id: i32) -> anyhow::Result<Bytes> {
    let body = ApiVersionsResponse::default()
        .with_error_code(UNSUPPORTED_VERSION)
        .with_api_keys(api::api_versions());
    encode_response(&Response::ApiVersions(body), 0, correlation_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::{MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn request_frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_metadata_at_every_supported_version() {
        let supported = api::supported(ApiKey::Metadata as i16).unwrap();
        for version in supported.min_version..=supported.max_version {
            let topic = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("t"))));
            let body = MetadataRequest::default().with_topics(Some(vec![topic]));
            let decoded = decode_request(request_frame(ApiKey::Metadata, version, &body)).unwrap();
            assert_eq!(decoded.header.correlation_id, 7);
            assert_eq!(decoded.header.client_id.as_deref(), Some("test"));
            let Request::Metadata(m) = decoded.body else {
                panic!("wrong kind")
            };
            assert_eq!(m.topics.unwrap()[0].name.as_ref().unwrap().0.as_str(), "t");
        }
    }

    #[test]
    fn rejects_unknown_keys_versions_and_short_frames() {
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3])),
            Err(DecodeError::TooShort(2))
        ));
        let unknown = Bytes::from_static(&[0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            decode_request(unknown),
            Err(DecodeError::UnknownApiKey { api_key: 9999, .. })
        ));
        let metadata_v99 = Bytes::from_static(&[0, 3, 0, 99, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            decode_request(metadata_v99),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        let api_versions_v99 = Bytes::from_static(&[0, 18, 0, 99, 0, 0, 0, 5, 0xff, 0xff]);
        assert!(matches!(
            decode_request(api_versions_v99),
            Err(DecodeError::ApiVersionsUnsupported {
                version: 99,
                correlation_id: 5
            })
        ));
        // Produce v2 is implemented (message sets, up-converted): a header
        // with no body is malformed, not unsupported.
        let produce_v2 = Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 5, 0xff, 0xff]);
        assert!(matches!(
            decode_request(produce_v2),
            Err(DecodeError::Malformed { version: 2, .. })
        ));
    }

    #[test]
    fn huge_array_count_is_rejected_without_allocating() {
        // Metadata v1: header v1, then topics array with count i32::MAX and nothing after.
        let mut frame = BytesMut::new();
        frame.put_slice(&[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff]);
        frame.put_i32(i32::MAX);
        assert!(matches!(
            decode_request(frame.freeze()),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn truncated_bodies_are_malformed_not_panics() {
        let body = MetadataRequest::default().with_topics(None);
        let full = request_frame(ApiKey::Metadata, 12, &body);
        for cut in 8..full.len() {
            let _ = decode_request(full.slice(..cut));
        }
    }

    #[test]
    fn api_versions_response_header_is_v0_and_body_has_no_default_tagged_fields() {
        let body = ApiVersionsResponse::default().with_api_keys(api::api_versions());
        let frame = encode_response(&Response::ApiVersions(body), 3, 42).unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size, frame.len() - 4);
        assert_eq!(i32::from_be_bytes(frame[4..8].try_into().unwrap()), 42);
        // v0 header: the body starts right after the correlation id, with error code 0.
        assert_eq!(&frame[8..10], &[0, 0]);
        // Last bytes: throttle_time_ms (0) then an empty tagged-field section (0).
        assert_eq!(&frame[frame.len() - 5..], &[0, 0, 0, 0, 0]);
    }
}
