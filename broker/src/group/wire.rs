//! What the group APIs' handlers hand the coordinator and get back: the
//! requests and answers of JoinGroup, SyncGroup, OffsetCommit, OffsetFetch,
//! DescribeGroups, ListGroups and LeaveGroup, free of the wire's versions.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

use super::GroupState;

/// A response that is ready now or arrives when the group moves on.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

impl<T> Reply<T> {
    /// Waits for the response; `lost` when the coordinator dropped the
    /// request without answering (it shut down).
    pub async fn wait(self, lost: impl FnOnce() -> T) -> T {
        match self {
            Reply::Now(value) => value,
            Reply::Later(receiver) => receiver.await.unwrap_or_else(|_| lost()),
        }
    }
}

pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new member must first ask for its id (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResponse {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// Every member's subscription, for the leader only.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

impl JoinResponse {
    pub(super) fn error(error: ResponseError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..JoinResponse::default()
        }
    }
}

pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncResponse {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub(super) fn error(error: ResponseError) -> SyncResponse {
        SyncResponse {
            error: Some(error),
            ..SyncResponse::default()
        }
    }
}

/// One partition's offset in an OffsetCommit.
pub struct CommitOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

impl CommitOffset {
    /// As OffsetCommit and TxnOffsetCommit carry it (a null metadata is empty).
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        leader_epoch: i32,
        metadata: Option<&kafka_protocol::protocol::StrBytes>,
    ) -> CommitOffset {
        CommitOffset {
            topic: topic.to_string(),
            partition,
            offset,
            leader_epoch,
            metadata: metadata
                .map(std::string::ToString::to_string)
                .unwrap_or_default(),
        }
    }
}

pub struct CommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<CommitOffset>,
    /// TxnOffsetCommit: the producer id and epoch whose transaction the
    /// offsets belong to (they count once it commits).
    pub producer: Option<(i64, i16)>,
}

/// A committed offset as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    /// A transaction that commits an offset for the partition is open
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT).
    pub unstable: bool,
}

/// OffsetFetch's answer: per topic, each partition's committed offset (if any).
pub type CommittedByTopic = Vec<(String, Vec<(i32, Option<Committed>)>)>;

/// DescribeGroups' view of a group.
pub struct GroupDescription {
    pub error: Option<ResponseError>,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// ListGroups' view of a group.
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// A member leaving, as LeaveGroup names it.
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}
