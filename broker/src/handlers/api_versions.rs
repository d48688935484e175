//! ApiVersions: the versions of every implemented API, from `protocol::api`.

use kafka_protocol::messages::ApiVersionsResponse;

pub(super) fn handle() -> ApiVersionsResponse {
    // No supported or finalized features: the tagged fields stay at their
    // defaults and are therefore not written (old librdkafka mis-skips them).
    ApiVersionsResponse::default().with_api_keys(protocol::api::api_versions())
}
