//! The APIs this broker implements: one table, the single source of truth
//! for request dispatch limits and for the ApiVersions response.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiKey;

/// An implemented API and the versions we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedApi {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn api(key: ApiKey, min_version: i16, max_version: i16) -> SupportedApi {
    SupportedApi {
        key,
        min_version,
        max_version,
    }
}

/// Sorted by api key. Only APIs that are really implemented are listed
/// (clients change behaviour on what they see here).
///
/// Version notes (see shared/docs/kafka-compat-notes.md):
/// - Produce v0-v2 (message sets v0/v1) are up-converted into record
///   batches, and Fetch v0-v3 down-converted (`legacy`), as Kafka 3.x does.
///   (librdkafka also disables compression when Produce's minimum is
///   above 0.)
/// - librdkafka (every version so far) compresses with LZ4 only when the
///   broker lists FindCoordinator v0, its marker for Kafka >= 0.8.2.
/// - The maxima match Apache Kafka 3.9, so that clients which infer the
///   broker release from this list (kafka-python) see a coherent one.
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    api(ApiKey::Produce, 0, 11),
    api(ApiKey::Fetch, 0, 16),
    api(ApiKey::ListOffsets, 0, 8),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::OffsetCommit, 0, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::FindCoordinator, 0, 5),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::SaslHandshake, 0, 1),
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 0, 7),
    api(ApiKey::DeleteTopics, 0, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::AddPartitionsToTxn, 0, 5),
    api(ApiKey::AddOffsetsToTxn, 0, 4),
    api(ApiKey::EndTxn, 0, 4),
    api(ApiKey::WriteTxnMarkers, 1, 1),
    api(ApiKey::TxnOffsetCommit, 0, 4),
    api(ApiKey::DescribeAcls, 1, 3),
    api(ApiKey::CreateAcls, 1, 3),
    api(ApiKey::DeleteAcls, 1, 3),
    api(ApiKey::DescribeConfigs, 0, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::DescribeLogDirs, 0, 4),
    api(ApiKey::SaslAuthenticate, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::DescribeUserScramCredentials, 0, 0),
    api(ApiKey::AlterUserScramCredentials, 0, 0),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::DescribeProducers, 0, 0),
    api(ApiKey::DescribeTransactions, 0, 0),
    api(ApiKey::ListTransactions, 0, 1),
    api(ApiKey::DescribeTopicPartitions, 0, 0),
];

/// Produce versions below this carry message sets v0/v1, which the log
/// stores up-converted into record batches.
pub const PRODUCE_RECORD_BATCH_VERSION_MIN: i16 = 3;

const _: () = {
    // The table must stay sorted by key.
    let mut i = 1;
    while i < SUPPORTED_APIS.len() {
        assert!((SUPPORTED_APIS[i - 1].key as i16) < (SUPPORTED_APIS[i].key as i16));
        i += 1;
    }
};

/// The entry for `api_key`, if implemented.
pub fn supported(api_key: i16) -> Option<&'static SupportedApi> {
    SUPPORTED_APIS.iter().find(|api| api.key as i16 == api_key)
}

/// The `api_keys` list of an ApiVersions response.
pub fn api_versions() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min_version)
                .with_max_version(api.max_version)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_within_what_the_codec_knows() {
        for api in SUPPORTED_APIS {
            let known = api.key.valid_versions();
            assert!(api.max_version <= known.max, "{:?}", api.key);
            assert!(api.min_version <= api.max_version, "{:?}", api.key);
            assert!(api.min_version >= known.min, "{:?}", api.key);
        }
    }
}
