//! One module per Kafka API. `handle` is the single dispatch on the request
//! kind; which APIs and versions exist is decided by `protocol::api`.

mod api_versions;
mod create_topics;
mod delete_topics;
mod fetch;
mod find_coordinator;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;

use protocol::codec::{DecodedRequest, Request, Response};

use crate::state::Broker;

/// Handles one request; `None` when no response is sent (Produce, acks=0).
pub async fn handle(broker: &Broker, request: DecodedRequest) -> Option<Response> {
    let version = request.version();
    Some(match request.body {
        Request::ApiVersions(_) => Response::ApiVersions(api_versions::handle()),
        Request::Metadata(body) => {
            Response::Metadata(metadata::handle(broker, body, version).await)
        }
        Request::Produce(body) => Response::Produce(produce::handle(broker, body, version)?),
        Request::Fetch(body) => Response::Fetch(fetch::handle(broker, body, version).await),
        Request::ListOffsets(body) => {
            Response::ListOffsets(list_offsets::handle(broker, body, version))
        }
        Request::OffsetForLeaderEpoch(body) => {
            Response::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, body))
        }
        Request::CreateTopics(body) => {
            Response::CreateTopics(create_topics::handle(broker, body).await)
        }
        Request::FindCoordinator(body) => {
            Response::FindCoordinator(find_coordinator::handle(broker, body, version))
        }
        Request::DeleteTopics(body) => {
            Response::DeleteTopics(delete_topics::handle(broker, body, version).await)
        }
    })
}
