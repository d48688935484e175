//! Property tests of the request codec: arbitrary bytes never panic, and
//! requests encoded by the kafka-protocol client side decode to what was sent.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, MetadataRequest, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;
use protocol::api;
use protocol::codec::{decode_request, Request};

fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("proptest")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(Bytes::from(bytes));
    }

    /// A valid header for a supported api and version, then garbage.
    #[test]
    fn garbage_bodies_never_panic(
        api_index in 0..api::SUPPORTED_APIS.len(),
        version_offset in 0i16..20,
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let supported = api::SUPPORTED_APIS[api_index];
        let version = (supported.min_version + version_offset).min(supported.max_version);
        let mut bytes = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(supported.key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .encode(&mut bytes, supported.key.request_header_version(version))
            .unwrap();
        bytes.extend_from_slice(&body);
        let _ = decode_request(bytes.freeze());
    }

    #[test]
    fn metadata_requests_round_trip(
        names in proptest::collection::vec(topic_name(), 0..8),
        version in 1i16..=12,
        correlation_id in any::<i32>(),
        allow in any::<bool>(),
    ) {
        let topics = names
            .iter()
            .map(|name| kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.clone())))))
            .collect();
        let body = MetadataRequest::default().with_topics(Some(topics)).with_allow_auto_topic_creation(allow || version < 4);
        let decoded = decode_request(frame(ApiKey::Metadata, version, correlation_id, &body)).unwrap();
        prop_assert_eq!(decoded.header.correlation_id, correlation_id);
        let Request::Metadata(got) = decoded.body else { panic!("not metadata") };
        prop_assert_eq!(got, body);
    }

    #[test]
    fn produce_requests_keep_record_bytes_intact(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        version in 3i16..=11,
        acks in prop_oneof![Just(-1i16), Just(0), Just(1)],
    ) {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(index, bytes)| PartitionProduceData::default()
                .with_index(index as i32)
                .with_records(Some(Bytes::from(bytes.clone()))))
            .collect();
        let body = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(1000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(partitions)]);
        let decoded = decode_request(frame(ApiKey::Produce, version, 9, &body)).unwrap();
        let Request::Produce(got) = decoded.body else { panic!("not produce") };
        prop_assert_eq!(got, body);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Message sets v0/v1 from the wire: arbitrary bytes are refused or
    /// parsed, never a panic; what parses up-converts into a valid batch.
    #[test]
    fn arbitrary_message_sets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(messages) = protocol::legacy::parse(&Bytes::from(bytes), 1 << 16) {
            let batch = protocol::legacy::up_convert(&messages).unwrap();
            protocol::batch::verify_crc(&batch).unwrap();
        }
    }

    /// A message set whose CRCs are right but whose lengths, magic and
    /// attributes are arbitrary.
    #[test]
    fn message_sets_with_valid_crcs_never_panic(
        entries in proptest::collection::vec((any::<i64>(), any::<i8>(), any::<i8>(), proptest::collection::vec(any::<u8>(), 0..64)), 1..4),
    ) {
        let mut set = BytesMut::new();
        for (offset, magic, attributes, rest) in entries {
            let mut message = vec![magic as u8, attributes as u8];
            message.extend_from_slice(&rest);
            set.extend_from_slice(&offset.to_be_bytes());
            set.extend_from_slice(&(4 + message.len() as i32).to_be_bytes());
            set.extend_from_slice(&crc32fast::hash(&message).to_be_bytes());
            set.extend_from_slice(&message);
        }
        let _ = protocol::legacy::parse(&set.freeze(), 1 << 16);
    }
}
