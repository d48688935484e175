//! The group coordinator: Apache Kafka's classic group protocol.
//!
//! Each group runs the state machine Empty → PreparingRebalance →
//! CompletingRebalance → Stable (and back), with Kafka's rules for member
//! ids (KIP-394), static membership (KIP-345), session and rebalance
//! timeouts and the initial rebalance delay. Clients' assignors run
//! unchanged: the coordinator picks the protocol all members support, hands
//! the leader every member's subscription and relays the leader's
//! assignment to each member.
//!
//! Committed offsets and group metadata are written, in Kafka's record
//! formats, to the internal topic `__consumer_offsets` (through the same
//! log as user data) before a request that changed them is answered, and
//! are replayed from it when the broker starts.
//!
//! All groups sit behind one mutex: group operations are few and short,
//! and the lock also orders appends to `__consumer_offsets` with the
//! in-memory changes they record. Requests that must wait (JoinGroup until
//! the rebalance completes, SyncGroup until the leader's assignment) get a
//! oneshot receiver and await it outside the lock.

pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::config::GroupConfig;
use crate::errors::AppendError;
use crate::errors::{code, NONE};
use crate::internal_topics::{internal_batch, partition_for, read_all_records};
use crate::partition::Partition;
use crate::topics::Topic;
use records::{GroupValue, MemberValue, OffsetValue, RecordKey};

/// How long an OffsetCommit waits for the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms` default).
const OFFSET_COMMIT_TIMEOUT: Duration = Duration::from_millis(5000);

/// Where a change was appended to `__consumer_offsets`.
struct Appended {
    partition: Arc<Partition>,
    end_offset: i64,
    leader_epoch: i32,
}

/// Client ids longer than this are cut in generated member ids, which must
/// fit a Kafka string (at most 32767 bytes) with room to spare.
const MEMBER_ID_CLIENT_PREFIX_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

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
    pub error_code: i16,
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
    fn error(error: ResponseError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error_code: code(error),
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
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: ResponseError) -> SyncResponse {
        SyncResponse {
            error_code: code(error),
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
    pub error_code: i16,
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

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Order of joining: the first one becomes leader when one is needed.
    joined_seq: u64,
    session_deadline: Instant,
    join_waiter: Option<oneshot::Sender<JoinResponse>>,
    sync_waiter: Option<oneshot::Sender<SyncResponse>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn heartbeat(&mut self, now: Instant) {
        self.session_deadline = now + millis(self.session_timeout_ms);
    }

    /// Members waiting for JoinGroup or SyncGroup answers are alive.
    fn expired(&self, now: Instant) -> bool {
        self.join_waiter.is_none() && self.sync_waiter.is_none() && now >= self.session_deadline
    }

    fn fail_waiters(&mut self, error: ResponseError) {
        if let Some(waiter) = self.join_waiter.take() {
            let _ = waiter.send(JoinResponse::error(error, &self.id));
        }
        if let Some(waiter) = self.sync_waiter.take() {
            let _ = waiter.send(SyncResponse::error(error));
        }
    }
}

struct Group {
    id: String,
    state: GroupState,
    state_timestamp_ms: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id of the static members.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or time out.
    pending: HashMap<String, Instant>,
    next_join_seq: u64,
    rebalance_deadline: Option<Instant>,
    /// While the first members of an empty group gather (group.initial.rebalance.delay.ms).
    initial_delay_until: Option<Instant>,
    sync_deadline: Option<Instant>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Transactional offset commits (TxnOffsetCommit) by producer id, until
    /// the producer's transaction ends: a commit marker makes them the
    /// committed offsets, an abort marker drops them.
    pending_txn: HashMap<i64, BTreeMap<(String, i32), OffsetValue>>,
}

impl Group {
    fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            next_join_seq: 0,
            rebalance_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            offsets: BTreeMap::new(),
            pending_txn: HashMap::new(),
        }
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        if self.state != state {
            tracing::debug!(group = %self.id, from = self.state.name(), to = state.name(), generation = self.generation, "group state");
        }
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// Protocols every member supports (all of `extra`'s when the group is empty).
    fn candidate_protocols(&self, extra: Option<&[(String, Bytes)]>) -> Vec<String> {
        let mut lists: Vec<Vec<&str>> = self
            .members
            .values()
            .map(|m| m.protocols.iter().map(|(name, _)| name.as_str()).collect())
            .collect();
        if let Some(extra) = extra {
            lists.push(extra.iter().map(|(name, _)| name.as_str()).collect());
        }
        let Some((first, rest)) = lists.split_first() else {
            return Vec::new();
        };
        first
            .iter()
            .filter(|name| rest.iter().all(|list| list.contains(name)))
            .map(std::string::ToString::to_string)
            .collect()
    }

    /// Kafka's `supportsProtocols`: a joining member must share the
    /// protocol type and at least one protocol with every current member.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && !self.candidate_protocols(Some(protocols)).is_empty()
    }

    /// The protocol with most votes, each member voting for its most
    /// preferred candidate.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols(None);
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        for member in members {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(name))
            {
                if let Some(entry) = votes.iter_mut().find(|(c, _)| c == name) {
                    entry.1 += 1;
                }
            }
        }
        // max_by_key keeps the last maximum: reverse so the first candidate wins ties.
        votes
            .into_iter()
            .rev()
            .max_by_key(|(_, count)| *count)
            .map(|(name, _)| name)
    }

    fn max_rebalance_timeout(&self) -> Duration {
        millis(
            self.members
                .values()
                .map(|m| m.rebalance_timeout_ms)
                .max()
                .unwrap_or(0),
        )
    }

    /// Starts a rebalance: members must rejoin before it completes.
    fn prepare_rebalance(&mut self, config: &GroupConfig, now: Instant, now_ms: i64, reason: &str) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(SyncResponse::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let timeout = self.max_rebalance_timeout();
        self.rebalance_deadline = Some(now + timeout);
        self.sync_deadline = None;
        if self.state == GroupState::Empty {
            let delay = Duration::from_millis(config.initial_rebalance_delay_ms).min(timeout);
            self.initial_delay_until = Some(now + delay);
        }
        tracing::info!(group = %self.id, generation = self.generation, reason, "preparing rebalance");
        self.set_state(GroupState::PreparingRebalance, now_ms);
    }

    /// Rebalances unless one is already under way (then checks whether it can complete).
    fn rebalance_or_check(
        &mut self,
        config: &GroupConfig,
        now: Instant,
        now_ms: i64,
        reason: &str,
    ) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty => {
                self.prepare_rebalance(config, now, now_ms, reason);
            }
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
    }

    fn response_for(&self, member: &Member, with_members: bool) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if with_members {
            let mut members: Vec<&Member> = self.members.values().collect();
            members.sort_by_key(|m| m.joined_seq);
            members
                .into_iter()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error_code: NONE,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member.id.clone(),
            skip_assignment: false,
            members,
        }
    }

    fn remove_member(&mut self, member_id: &str, error: ResponseError) -> bool {
        let Some(mut member) = self.members.remove(member_id) else {
            return false;
        };
        member.fail_waiters(error);
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        true
    }

    fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: members
                .into_iter()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// A static member's current member id must match the one it claims.
    fn fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|instance| self.static_members.get(instance))
            .is_some_and(|known| known != member_id)
    }

    /// The topics a member of a `consumer` group subscribes to.
    fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for member in self.members.values() {
            let mut metadata = member.metadata_for(protocol);
            topics.extend(consumer_subscription_topics(&mut metadata)?);
        }
        Some(topics)
    }
}

/// Parses a consumer protocol subscription (its version is the first field).
fn consumer_subscription_topics(metadata: &mut Bytes) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    if metadata.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([metadata[0], metadata[1]]);
    let mut body = metadata.slice(2..);
    // Newer versions start with v3's fields: read them as v3.
    let subscription = ConsumerProtocolSubscription::decode(&mut body, version.clamp(0, 3)).ok()?;
    Some(
        subscription
            .topics
            .into_iter()
            .map(|t| t.to_string())
            .collect(),
    )
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The coordinator of every group of this broker.
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Group>>,
    /// `__consumer_offsets`, once it exists.
    offsets_topic: Mutex<Option<Arc<Topic>>>,
    /// The partitions of `__consumer_offsets` this broker leads and has
    /// loaded: it coordinates exactly the groups that hash to them.
    owned: Mutex<std::collections::BTreeSet<i32>>,
    /// Set at shutdown (under the groups lock): no request waits any more.
    closed: AtomicBool,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator {
            config,
            groups: Mutex::new(HashMap::new()),
            offsets_topic: Mutex::new(None),
            owned: Mutex::new(std::collections::BTreeSet::new()),
            closed: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock()
    }

    pub fn offsets_topic(&self) -> Option<Arc<Topic>> {
        self.offsets_topic.lock().clone()
    }

    /// Replays one partition of `__consumer_offsets` (in offset order),
    /// which this broker now leads: from now on it coordinates the groups
    /// of that partition.
    pub fn load_partition(&self, partition: &Partition, now: Instant, now_ms: i64) {
        let mut groups = self.lock();
        let records = partition.with_log(read_all_records);
        let Ok(records) = records else {
            return;
        };
        let loaded = records.len();
        // Transactional offset commits wait for their producer's marker.
        let mut open: HashMap<i64, Vec<(RecordKey, Option<Bytes>)>> = HashMap::new();
        for record in records {
            let Some(key) = record.key else { continue };
            if record.control {
                // A marker: key (version, type 0 abort / 1 commit).
                let commit = key.len() >= 4 && key[3] == 1;
                for (key, value) in open.remove(&record.producer_id).unwrap_or_default() {
                    if commit {
                        replay(&mut groups, key, value, now, now_ms);
                    }
                }
                continue;
            }
            let key = match RecordKey::decode(key) {
                Ok(key) => key,
                Err(error) => {
                    tracing::warn!(%error, "skipping a record of __consumer_offsets");
                    continue;
                }
            };
            if record.transactional {
                open.entry(record.producer_id)
                    .or_default()
                    .push((key, record.value));
            } else {
                replay(&mut groups, key, record.value, now, now_ms);
            }
        }
        for (producer_id, entries) in open {
            for (key, value) in entries {
                let (
                    RecordKey::Offset {
                        group,
                        topic,
                        partition,
                    },
                    Some(value),
                ) = (key, value)
                else {
                    continue;
                };
                if let Ok(value) = OffsetValue::decode(value) {
                    groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_ms))
                        .pending_txn
                        .entry(producer_id)
                        .or_default()
                        .insert((topic, partition), value);
                }
            }
        }
        self.owned.lock().insert(partition.index);
        tracing::info!(
            partition = partition.index,
            records = loaded,
            groups = groups.len(),
            "loaded group metadata and offsets"
        );
    }

    /// This broker no longer leads partition `index` of
    /// `__consumer_offsets`: its groups are forgotten here (the new leader
    /// loads them) and their waiting members are told NOT_COORDINATOR.
    pub fn unload_partition(&self, index: i32) {
        let mut groups = self.lock();
        let was_owned = self.owned.lock().remove(&index);
        let count = self.partition_count();
        let moved: Vec<String> = groups
            .keys()
            .filter(|id| count.is_some_and(|n| partition_for(id, n) == index))
            .cloned()
            .collect();
        for id in &moved {
            if let Some(mut group) = groups.remove(id) {
                for member in group.members.values_mut() {
                    member.fail_waiters(ResponseError::NotCoordinator);
                }
            }
        }
        if was_owned {
            tracing::info!(
                partition = index,
                groups = moved.len(),
                "no longer coordinating the groups of this partition"
            );
        }
    }

    fn partition_count(&self) -> Option<i32> {
        self.offsets_topic()
            .map(|topic| topic.partitions.len() as i32)
    }

    /// Whether this broker coordinates `group_id`: it leads the group's
    /// partition of `__consumer_offsets` (FindCoordinator points there).
    pub fn coordinates(&self, group_id: &str) -> bool {
        let Some(count) = self.partition_count() else {
            return false;
        };
        self.owned.lock().contains(&partition_for(group_id, count))
    }

    pub fn set_offsets_topic(&self, topic: Arc<Topic>) {
        *self.offsets_topic.lock() = Some(topic);
    }

    /// Appends records for `group` to its `__consumer_offsets` partition.
    /// Called with the groups lock held, so the log's order is the order of the changes.
    fn persist(
        &self,
        group: &str,
        entries: Vec<(RecordKey, Option<Bytes>)>,
    ) -> Result<Option<Appended>, i16> {
        self.persist_for(group, entries, None)
    }

    /// [`Self::persist`]; with `producer`, as a transactional batch of that
    /// producer (TxnOffsetCommit), whose epoch the log checks.
    fn persist_for(
        &self,
        group: &str,
        entries: Vec<(RecordKey, Option<Bytes>)>,
        producer: Option<(i64, i16)>,
    ) -> Result<Option<Appended>, i16> {
        if entries.is_empty() {
            return Ok(None);
        }
        let Some(topic) = self.offsets_topic() else {
            return Err(code(ResponseError::CoordinatorNotAvailable));
        };
        let index = partition_for(group, topic.partitions.len() as i32);
        let Some(partition) = topic.partitions.get(index as usize) else {
            return Err(code(ResponseError::CoordinatorNotAvailable));
        };
        let now = crate::clock::now_ms();
        let entries = entries
            .into_iter()
            .map(|(key, value)| (key.encode(), value))
            .collect();
        let batch = match internal_batch(entries, now, producer) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(group, %error, "encoding a __consumer_offsets batch failed");
                return Err(code(ResponseError::UnknownServerError));
            }
        };
        let appended = match producer {
            None => partition.append(batch, now, None),
            Some(_) => partition.append_as_coordinator(batch, now),
        };
        match appended {
            Ok(Ok((info, leader_epoch))) => Ok(Some(Appended {
                partition: partition.clone(),
                end_offset: info.last_offset + 1,
                leader_epoch,
            })),
            Ok(Err(AppendError::Storage(storage::StorageError::MessageTooLarge { .. }))) => {
                Err(code(ResponseError::InvalidCommitOffsetSize))
            }
            Ok(Err(AppendError::Storage(storage::StorageError::InvalidProducerEpoch(message)))) => {
                tracing::info!(group, %message, "transactional offset commit fenced");
                Err(code(ResponseError::InvalidProducerEpoch))
            }
            Ok(Err(error)) => {
                tracing::error!(group, %error, "appending to __consumer_offsets failed");
                Err(code(ResponseError::CoordinatorNotAvailable))
            }
            Err(_) => Err(code(ResponseError::NotCoordinator)),
        }
    }

    fn persist_group(&self, group: &Group) -> Result<(), i16> {
        let key = RecordKey::Group {
            group: group.id.clone(),
        };
        self.persist(&group.id, vec![(key, Some(group.to_value().encode()))])
            .map(|_| ())
    }

    // ---------------------------------------------------------------- join

    pub fn join(&self, request: JoinRequest, now: Instant, now_ms: i64) -> Reply<JoinResponse> {
        let config = &self.config;
        let fail = |error| Reply::Now(JoinResponse::error(error, &request.member_id));
        if request.group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        if request.session_timeout_ms < config.min_session_timeout_ms
            || request.session_timeout_ms > config.max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        let mut groups = self.lock();
        if self.closed.load(Ordering::Relaxed) || !self.coordinates(&request.group_id) {
            return fail(ResponseError::NotCoordinator);
        }
        if !groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return fail(ResponseError::UnknownMemberId);
            }
            groups.insert(
                request.group_id.clone(),
                Group::new(&request.group_id, now_ms),
            );
        }
        let group = groups.get_mut(&request.group_id).expect("inserted above");
        if group.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if !group.supports(&request.protocol_type, &request.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if group.fenced(request.group_instance_id.as_deref(), &request.member_id)
            && !request.member_id.is_empty()
        {
            return fail(ResponseError::FencedInstanceId);
        }

        let reply = if request.member_id.is_empty() {
            self.join_unknown_member(group, request, now, now_ms)
        } else if group.pending.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            self.add_member(group, member_id, request, now, now_ms)
        } else if group.members.contains_key(&request.member_id) {
            self.join_known_member(group, request, now, now_ms)
        } else {
            fail(ResponseError::UnknownMemberId)
        };
        self.try_complete_join(group, now, now_ms);
        reply
    }

    fn join_unknown_member(
        &self,
        group: &mut Group,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        let prefix = match &request.group_instance_id {
            Some(instance) => instance.as_str(),
            None => request.client_id.as_str(),
        };
        let prefix: String = prefix.chars().take(MEMBER_ID_CLIENT_PREFIX_MAX).collect();
        let new_id = format!("{prefix}-{}", Uuid::new_v4());

        if let Some(instance) = request.group_instance_id.clone() {
            if let Some(old_id) = group.static_members.get(&instance).cloned() {
                return self.replace_static_member(group, old_id, new_id, request, now, now_ms);
            }
        } else if request.require_known_member_id {
            if group.members.len() + group.pending.len() >= self.config.max_size {
                return Reply::Now(JoinResponse::error(ResponseError::GroupMaxSizeReached, ""));
            }
            group
                .pending
                .insert(new_id.clone(), now + millis(request.session_timeout_ms));
            return Reply::Now(JoinResponse::error(
                ResponseError::MemberIdRequired,
                &new_id,
            ));
        }
        self.add_member(group, new_id, request, now, now_ms)
    }

    fn add_member(
        &self,
        group: &mut Group,
        member_id: String,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        if group.members.len() >= self.config.max_size {
            return Reply::Now(JoinResponse::error(
                ResponseError::GroupMaxSizeReached,
                &member_id,
            ));
        }
        let (sender, receiver) = oneshot::channel();
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        let seq = group.next_join_seq;
        group.next_join_seq += 1;
        group.members.insert(
            member_id.clone(),
            Member {
                id: member_id,
                instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                session_timeout_ms: request.session_timeout_ms,
                protocols: request.protocols,
                assignment: Bytes::new(),
                joined_seq: seq,
                session_deadline: now + millis(request.session_timeout_ms),
                join_waiter: Some(sender),
                sync_waiter: None,
            },
        );
        if group.state == GroupState::PreparingRebalance {
            // New members arriving during the initial delay push it back,
            // up to the rebalance timeout.
            if let (Some(_), Some(deadline)) = (group.initial_delay_until, group.rebalance_deadline)
            {
                let delay = Duration::from_millis(self.config.initial_rebalance_delay_ms);
                group.initial_delay_until = Some((now + delay).min(deadline));
            }
        } else {
            group.rebalance_or_check(&self.config, now, now_ms, "a member joined");
        }
        Reply::Later(receiver)
    }

    fn join_known_member(
        &self,
        group: &mut Group,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        let is_leader = group.leader.as_deref() == Some(request.member_id.as_str());
        let member = group
            .members
            .get_mut(&request.member_id)
            .expect("checked by the caller");
        let unchanged = member.protocols == request.protocols;
        member.protocols = request.protocols;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.heartbeat(now);
        let (sender, receiver) = oneshot::channel();
        match group.state {
            GroupState::PreparingRebalance => {
                member.fail_waiters(ResponseError::RebalanceInProgress);
                member.join_waiter = Some(sender);
                Reply::Later(receiver)
            }
            GroupState::CompletingRebalance if unchanged => {
                // The member lost our JoinGroup answer: send it again.
                let member = &group.members[&request.member_id];
                Reply::Now(group.response_for(member, is_leader))
            }
            GroupState::Stable if unchanged && !is_leader => {
                let member = &group.members[&request.member_id];
                Reply::Now(group.response_for(member, false))
            }
            _ => {
                member.fail_waiters(ResponseError::RebalanceInProgress);
                member.join_waiter = Some(sender);
                group.prepare_rebalance(&self.config, now, now_ms, "a member rejoined");
                Reply::Later(receiver)
            }
        }
    }

    /// A static member came back with no member id (a restart): it takes
    /// over its old membership; the old id is fenced.
    fn replace_static_member(
        &self,
        group: &mut Group,
        old_id: String,
        new_id: String,
        request: JoinRequest,
        now: Instant,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        let Some(mut member) = group.members.remove(&old_id) else {
            group
                .static_members
                .remove(request.group_instance_id.as_deref().unwrap_or(""));
            return self.add_member(group, new_id, request, now, now_ms);
        };
        member.fail_waiters(ResponseError::FencedInstanceId);
        let old_protocols = std::mem::replace(&mut member.protocols, request.protocols);
        member.id = new_id.clone();
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.heartbeat(now);
        let was_leader = group.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), new_id.clone());
        }
        let unchanged = old_protocols == member.protocols;
        group.members.insert(new_id.clone(), member);
        tracing::info!(group = %group.id, old = %old_id, new = %new_id, "static member rejoined under a new member id");

        if group.state == GroupState::Stable && unchanged {
            // No rebalance: the member resumes its assignment.
            if let Err(error_code) = self.persist_group(group) {
                return Reply::Now(JoinResponse {
                    error_code,
                    ..JoinResponse::error(ResponseError::UnknownServerError, &new_id)
                });
            }
            let member = &group.members[&new_id];
            let mut response = group.response_for(member, was_leader);
            // The leader already assigned this generation (KIP-814).
            response.skip_assignment = was_leader;
            return Reply::Now(response);
        }
        let (sender, receiver) = oneshot::channel();
        group
            .members
            .get_mut(&new_id)
            .expect("inserted above")
            .join_waiter = Some(sender);
        group.rebalance_or_check(&self.config, now, now_ms, "a static member rejoined");
        Reply::Later(receiver)
    }

    /// Completes the join phase when every member has rejoined (after the
    /// initial delay), or when the rebalance timeout has passed.
    fn try_complete_join(&self, group: &mut Group, now: Instant, now_ms: i64) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let timed_out = group.rebalance_deadline.is_some_and(|d| now >= d);
        let all_joined =
            group.pending.is_empty() && group.members.values().all(|m| m.join_waiter.is_some());
        let delayed = group.initial_delay_until.is_some_and(|until| now < until);
        if !(timed_out || (all_joined && !delayed)) {
            return;
        }
        let missing: Vec<String> = group
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for member_id in &missing {
            tracing::info!(group = %group.id, member = %member_id, "removing a member that did not rejoin in time");
            group.remove_member(member_id, ResponseError::UnknownMemberId);
        }
        group.pending.clear();
        group.initial_delay_until = None;
        group.rebalance_deadline = None;
        group.generation += 1;

        if group.members.is_empty() {
            group.protocol = None;
            group.leader = None;
            group.set_state(GroupState::Empty, now_ms);
            if let Err(error_code) = self.persist_group(group) {
                tracing::warn!(group = %group.id, error_code, "could not record the now empty group");
            }
            return;
        }
        group.protocol = group.select_protocol();
        if group
            .leader
            .as_ref()
            .is_none_or(|leader| !group.members.contains_key(leader))
        {
            group.leader = group
                .members
                .values()
                .min_by_key(|m| m.joined_seq)
                .map(|m| m.id.clone());
        }
        group.set_state(GroupState::CompletingRebalance, now_ms);
        group.sync_deadline = Some(now + group.max_rebalance_timeout());
        tracing::info!(group = %group.id, generation = group.generation, members = group.members.len(), protocol = ?group.protocol, leader = ?group.leader, "rebalance: join phase complete");
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let is_leader = group.leader.as_deref() == Some(id.as_str());
            let response = group.response_for(&group.members[&id], is_leader);
            let member = group.members.get_mut(&id).expect("listed above");
            member.heartbeat(now);
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(response);
            }
        }
    }

    // ---------------------------------------------------------------- sync

    pub fn sync(&self, request: SyncRequest, now: Instant, now_ms: i64) -> Reply<SyncResponse> {
        let fail = |error| Reply::Now(SyncResponse::error(error));
        let mut groups = self.lock();
        if self.closed.load(Ordering::Relaxed) || !self.coordinates(&request.group_id) {
            return fail(ResponseError::NotCoordinator);
        }
        let Some(group) = groups.get_mut(&request.group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if group.fenced(request.group_instance_id.as_deref(), &request.member_id) {
            return fail(ResponseError::FencedInstanceId);
        }
        if !group.members.contains_key(&request.member_id) {
            return fail(ResponseError::UnknownMemberId);
        }
        if request.generation_id != group.generation {
            return fail(ResponseError::IllegalGeneration);
        }
        if request
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || request
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != group.protocol.as_ref())
        {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.heartbeat(now);
                let response = SyncResponse {
                    error_code: NONE,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    assignment: member.assignment.clone(),
                };
                Reply::Now(response)
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.heartbeat(now);
                member.fail_waiters(ResponseError::RebalanceInProgress);
                member.sync_waiter = Some(sender);
                if group.leader.as_deref() == Some(request.member_id.as_str()) {
                    self.complete_sync(group, request.assignments, now, now_ms);
                }
                Reply::Later(receiver)
            }
        }
    }

    /// The leader's assignment arrived: record it, then answer every member.
    fn complete_sync(
        &self,
        group: &mut Group,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        now_ms: i64,
    ) {
        let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
        for member in group.members.values_mut() {
            member.assignment = assignments.remove(&member.id).unwrap_or_default();
        }
        if let Err(error_code) = self.persist_group(group) {
            for member in group.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(SyncResponse {
                        error_code,
                        ..SyncResponse::default()
                    });
                }
            }
            group.prepare_rebalance(&self.config, now, now_ms, "recording the assignment failed");
            return;
        }
        group.sync_deadline = None;
        group.set_state(GroupState::Stable, now_ms);
        tracing::info!(group = %group.id, generation = group.generation, "rebalance complete: group stable");
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol.clone();
        for member in group.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncResponse {
                    error_code: NONE,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: member.assignment.clone(),
                });
            }
        }
    }

    // ----------------------------------------------------------- heartbeat

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> i16 {
        if !self.coordinates(group_id) {
            return code(ResponseError::NotCoordinator);
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        if group.fenced(instance_id, member_id) {
            return code(ResponseError::FencedInstanceId);
        }
        let state = group.state;
        let generation = group.generation;
        let Some(member) = group.members.get_mut(member_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        if generation_id != generation {
            return code(ResponseError::IllegalGeneration);
        }
        member.heartbeat(now);
        match state {
            GroupState::Empty | GroupState::Dead => code(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        }
    }

    // --------------------------------------------------------------- leave

    /// Returns the top-level error and one error per leaving member.
    pub fn leave(
        &self,
        group_id: &str,
        leaving: &[LeavingMember],
        now: Instant,
        now_ms: i64,
    ) -> (i16, Vec<i16>) {
        if !self.coordinates(group_id) {
            return (code(ResponseError::NotCoordinator), Vec::new());
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return (
                NONE,
                vec![code(ResponseError::UnknownMemberId); leaving.len()],
            );
        };
        if group.state == GroupState::Dead {
            return (code(ResponseError::CoordinatorNotAvailable), Vec::new());
        }
        let mut errors = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for member in leaving {
            let member_id = match member.group_instance_id.as_deref() {
                Some(instance) => match group.static_members.get(instance) {
                    Some(known) if member.member_id.is_empty() || *known == member.member_id => {
                        known.clone()
                    }
                    Some(_) => {
                        errors.push(code(ResponseError::FencedInstanceId));
                        continue;
                    }
                    None => {
                        errors.push(code(ResponseError::UnknownMemberId));
                        continue;
                    }
                },
                None => member.member_id.clone(),
            };
            if group.pending.remove(&member_id).is_some() {
                errors.push(NONE);
            } else if group.remove_member(&member_id, ResponseError::UnknownMemberId) {
                tracing::info!(group = %group.id, member = %member_id, "member left");
                removed = true;
                errors.push(NONE);
            } else {
                errors.push(code(ResponseError::UnknownMemberId));
            }
        }
        if removed {
            group.rebalance_or_check(&self.config, now, now_ms, "a member left");
        }
        self.try_complete_join(group, now, now_ms);
        (NONE, errors)
    }

    // ------------------------------------------------------------- offsets

    /// Commits offsets; returns one error code per offset of the request.
    pub async fn commit(&self, request: CommitRequest, now_ms: i64) -> Vec<i16> {
        let (mut results, appended) = self.commit_locally(request, now_ms);
        if let Some(appended) = appended {
            let deadline = tokio::time::Instant::now() + OFFSET_COMMIT_TIMEOUT;
            let replicated = appended
                .partition
                .wait_replicated(appended.end_offset, appended.leader_epoch, 1, deadline)
                .await;
            if let Err(error_code) = replicated {
                // Kafka's storeOffsets: leadership lost is NOT_COORDINATOR,
                // replicas too few or too slow COORDINATOR_NOT_AVAILABLE.
                let error_code = if error_code == code(ResponseError::NotLeaderOrFollower) {
                    code(ResponseError::NotCoordinator)
                } else {
                    code(ResponseError::CoordinatorNotAvailable)
                };
                for result in results.iter_mut().filter(|r| **r == NONE) {
                    *result = error_code;
                }
            }
        }
        results
    }

    /// The commit in memory and in the local log; what is left is to wait
    /// for the in-sync replicas to have it.
    fn commit_locally(&self, request: CommitRequest, now_ms: i64) -> (Vec<i16>, Option<Appended>) {
        let all = |error: ResponseError| (vec![code(error); request.offsets.len()], None);
        if request.group_id.is_empty() {
            return all(ResponseError::InvalidGroupId);
        }
        if !self.coordinates(&request.group_id) {
            return all(ResponseError::NotCoordinator);
        }
        let mut groups = self.lock();
        let transactional = request.producer.is_some();
        let group = match groups.get_mut(&request.group_id) {
            Some(group) => group,
            // Commits outside group management create the group (as Kafka
            // does), and so do transactional ones.
            None if request.generation_id < 0 || transactional => groups
                .entry(request.group_id.clone())
                .or_insert_with(|| Group::new(&request.group_id, now_ms)),
            None => return all(ResponseError::IllegalGeneration),
        };
        // Kafka's checks for TxnOffsetCommit (v3+ names the member, KIP-447):
        // a member id and a generation are checked only when given.
        let error = if transactional {
            if group.state == GroupState::Dead {
                Some(ResponseError::CoordinatorNotAvailable)
            } else if group.fenced(request.group_instance_id.as_deref(), &request.member_id) {
                Some(ResponseError::FencedInstanceId)
            } else if !request.member_id.is_empty()
                && !group.members.contains_key(&request.member_id)
            {
                Some(ResponseError::UnknownMemberId)
            } else if request.generation_id >= 0 && request.generation_id != group.generation {
                Some(ResponseError::IllegalGeneration)
            } else {
                None
            }
        } else if group.state == GroupState::Dead {
            Some(ResponseError::CoordinatorNotAvailable)
        } else if group.fenced(request.group_instance_id.as_deref(), &request.member_id) {
            Some(ResponseError::FencedInstanceId)
        } else if request.generation_id < 0 && group.state == GroupState::Empty {
            None
        } else if !group.members.contains_key(&request.member_id) {
            Some(ResponseError::UnknownMemberId)
        } else if request.generation_id != group.generation {
            Some(ResponseError::IllegalGeneration)
        } else if group.state == GroupState::CompletingRebalance {
            // The member knows the new generation but has not synced yet.
            Some(ResponseError::RebalanceInProgress)
        } else {
            None
        };
        if let Some(error) = error {
            return all(error);
        }
        let mut results = Vec::with_capacity(request.offsets.len());
        let mut entries = Vec::new();
        let mut accepted = Vec::new();
        for (i, commit) in request.offsets.iter().enumerate() {
            if commit.metadata.len() > self.config.offset_metadata_max_bytes
                || commit.metadata.len() > i16::MAX as usize
            {
                results.push(code(ResponseError::OffsetMetadataTooLarge));
                continue;
            }
            results.push(NONE);
            let value = OffsetValue {
                offset: commit.offset,
                leader_epoch: commit.leader_epoch,
                metadata: commit.metadata.clone(),
                commit_timestamp_ms: now_ms,
            };
            entries.push((
                RecordKey::Offset {
                    group: request.group_id.clone(),
                    topic: commit.topic.clone(),
                    partition: commit.partition,
                },
                Some(value.encode()),
            ));
            accepted.push((i, value));
        }
        let appended = match self.persist_for(&request.group_id, entries, request.producer) {
            Ok(appended) => appended,
            Err(error_code) => {
                for (i, _) in &accepted {
                    results[*i] = error_code;
                }
                return (results, None);
            }
        };
        for (i, value) in accepted {
            let commit = &request.offsets[i];
            let key = (commit.topic.clone(), commit.partition);
            match request.producer {
                Some((producer_id, _)) => {
                    group
                        .pending_txn
                        .entry(producer_id)
                        .or_default()
                        .insert(key, value);
                }
                None => {
                    group.offsets.insert(key, value);
                }
            }
        }
        (results, appended)
    }

    /// A transaction marker for `producer_id` was written to partition
    /// `index` of `__consumer_offsets`: its transactional offset commits in
    /// the groups of that partition count now (commit) or never (abort).
    pub fn complete_txn(&self, index: i32, producer_id: i64, commit: bool) {
        let Some(count) = self.partition_count() else {
            return;
        };
        let mut groups = self.lock();
        for (id, group) in groups.iter_mut() {
            if partition_for(id, count) != index {
                continue;
            }
            if let Some(pending) = group.pending_txn.remove(&producer_id) {
                tracing::debug!(group = %id, producer_id, commit, offsets = pending.len(), "transactional offsets settled");
                if commit {
                    group.offsets.extend(pending);
                }
            }
        }
    }

    /// Committed offsets of `group_id`: of the given partitions (None where
    /// nothing is committed), or of every partition when `wanted` is None.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    ) -> CommittedByTopic {
        let groups = self.lock();
        let group = groups.get(group_id);
        let offsets = group.map(|g| &g.offsets);
        let committed = |topic: &str, partition: i32| {
            let key = (topic.to_string(), partition);
            let unstable = require_stable
                && group.is_some_and(|g| g.pending_txn.values().any(|p| p.contains_key(&key)));
            if unstable {
                return Some(Committed {
                    offset: -1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    unstable: true,
                });
            }
            offsets.and_then(|o| o.get(&key)).map(|v| Committed {
                offset: v.offset,
                leader_epoch: v.leader_epoch,
                metadata: v.metadata.clone(),
                unstable: false,
            })
        };
        match wanted {
            Some(wanted) => wanted
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| (p, committed(&topic, p)))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<Committed>)>> = BTreeMap::new();
                for (topic, partition) in offsets.into_iter().flat_map(|o| o.keys()) {
                    by_topic
                        .entry(topic.clone())
                        .or_default()
                        .push((*partition, committed(topic, *partition)));
                }
                by_topic.into_iter().collect()
            }
        }
    }

    /// OffsetDelete: returns the top-level error and one error per partition.
    pub fn delete_offsets(&self, group_id: &str, partitions: &[(String, i32)]) -> (i16, Vec<i16>) {
        if !self.coordinates(group_id) {
            return (code(ResponseError::NotCoordinator), Vec::new());
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return (code(ResponseError::GroupIdNotFound), Vec::new());
        };
        let subscribed = match group.state {
            GroupState::Empty => Vec::new(),
            GroupState::Dead => return (code(ResponseError::GroupIdNotFound), Vec::new()),
            _ => match group.subscribed_topics() {
                Some(topics) => topics,
                None => return (code(ResponseError::NonEmptyGroup), Vec::new()),
            },
        };
        let mut errors = Vec::with_capacity(partitions.len());
        let mut entries = Vec::new();
        let mut doomed = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.contains(topic) {
                errors.push(code(ResponseError::GroupSubscribedToTopic));
                continue;
            }
            errors.push(NONE);
            if group.offsets.contains_key(&(topic.clone(), *partition)) {
                entries.push(offset_tombstone(group_id, topic, *partition));
                doomed.push((topic.clone(), *partition));
            }
        }
        if let Err(error_code) = self.persist(group_id, entries) {
            return (error_code, Vec::new());
        }
        for key in doomed {
            group.offsets.remove(&key);
        }
        (NONE, errors)
    }

    // -------------------------------------------------------- administration

    pub fn describe(&self, group_id: &str) -> GroupDescription {
        if !self.coordinates(group_id) {
            return GroupDescription {
                error_code: code(ResponseError::NotCoordinator),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        }
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return GroupDescription {
                error_code: NONE,
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        let stable = group.state == GroupState::Stable;
        let protocol = group.protocol.clone().unwrap_or_default();
        let mut members: Vec<&Member> = group.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        GroupDescription {
            error_code: NONE,
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            // Kafka names the protocol and shows metadata only once stable.
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    pub fn list(&self) -> Vec<GroupListing> {
        let groups = self.lock();
        let mut listings: Vec<GroupListing> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect();
        listings.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listings
    }

    /// DeleteGroups for one group: only empty groups can be deleted.
    pub fn delete_group(&self, group_id: &str) -> i16 {
        if group_id.is_empty() {
            return code(ResponseError::InvalidGroupId);
        }
        if !self.coordinates(group_id) {
            return code(ResponseError::NotCoordinator);
        }
        let mut groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return code(ResponseError::GroupIdNotFound);
        };
        match group.state {
            GroupState::Dead => return code(ResponseError::GroupIdNotFound),
            GroupState::Empty => {}
            _ => return code(ResponseError::NonEmptyGroup),
        }
        let mut entries: Vec<(RecordKey, Option<Bytes>)> = group
            .offsets
            .keys()
            .map(|(topic, partition)| offset_tombstone(group_id, topic, *partition))
            .collect();
        entries.push((
            RecordKey::Group {
                group: group_id.to_string(),
            },
            None,
        ));
        if let Err(error_code) = self.persist(group_id, entries) {
            return error_code;
        }
        groups.remove(group_id);
        tracing::info!(group = group_id, "deleted group");
        NONE
    }

    // ---------------------------------------------------------------- time

    /// Expires sessions, pending member ids and rebalance phases. Called
    /// every few tens of milliseconds.
    pub fn tick(&self, now: Instant, now_ms: i64) {
        let mut groups = self.lock();
        for group in groups.values_mut() {
            let before = group.pending.len();
            group.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| m.expired(now))
                .map(|m| m.id.clone())
                .collect();
            for member_id in &expired {
                tracing::info!(group = %group.id, member = %member_id, "member session expired");
                group.remove_member(member_id, ResponseError::UnknownMemberId);
            }
            if !expired.is_empty() {
                group.rebalance_or_check(&self.config, now, now_ms, "a member's session expired");
            }
            if group.state == GroupState::CompletingRebalance
                && group.sync_deadline.is_some_and(|d| now >= d)
            {
                let laggards: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| m.sync_waiter.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                for member_id in &laggards {
                    tracing::info!(group = %group.id, member = %member_id, "member did not sync in time");
                    group.remove_member(member_id, ResponseError::UnknownMemberId);
                }
                group.prepare_rebalance(&self.config, now, now_ms, "members did not sync in time");
            }
            if !expired.is_empty()
                || before != group.pending.len()
                || group.state == GroupState::PreparingRebalance
            {
                self.try_complete_join(group, now, now_ms);
            }
        }
    }

    /// Removes offsets past `offsets.retention.minutes` (KIP-211: an empty
    /// group's offsets expire that long after it became empty; a consumer
    /// group's offsets of topics no member subscribes to, that long after
    /// their commit), then empty groups without offsets.
    pub fn expire_offsets(&self, now_ms: i64) {
        let retention = self.config.offsets_retention_ms;
        let mut groups = self.lock();
        let mut dead = Vec::new();
        for group in groups.values_mut() {
            let expired: Vec<(String, i32)> = match group.state {
                GroupState::Empty => group
                    .offsets
                    .iter()
                    .filter(|(_, v)| {
                        let base = if group.protocol_type.is_some() {
                            group.state_timestamp_ms
                        } else {
                            v.commit_timestamp_ms
                        };
                        now_ms.saturating_sub(base) >= retention
                    })
                    .map(|(k, _)| k.clone())
                    .collect(),
                GroupState::Stable => match group.subscribed_topics() {
                    Some(topics) => group
                        .offsets
                        .iter()
                        .filter(|((topic, _), v)| {
                            !topics.contains(topic)
                                && now_ms.saturating_sub(v.commit_timestamp_ms) >= retention
                        })
                        .map(|(k, _)| k.clone())
                        .collect(),
                    None => Vec::new(),
                },
                _ => Vec::new(),
            };
            let mut entries: Vec<(RecordKey, Option<Bytes>)> = expired
                .iter()
                .map(|(topic, partition)| offset_tombstone(&group.id, topic, *partition))
                .collect();
            let now_dead = group.state == GroupState::Empty && group.offsets.len() == expired.len();
            if now_dead {
                entries.push((
                    RecordKey::Group {
                        group: group.id.clone(),
                    },
                    None,
                ));
            }
            if entries.is_empty() {
                continue;
            }
            if self.persist(&group.id, entries).is_err() {
                continue;
            }
            for key in &expired {
                group.offsets.remove(key);
            }
            tracing::info!(group = %group.id, expired = expired.len(), "expired committed offsets");
            if now_dead {
                group.set_state(GroupState::Dead, now_ms);
                dead.push(group.id.clone());
            }
        }
        for id in dead {
            groups.remove(&id);
        }
    }

    /// Answers every waiting request before shutdown.
    pub fn shutdown(&self) {
        let mut groups = self.lock();
        self.closed.store(true, Ordering::Relaxed);
        for group in groups.values_mut() {
            for member in group.members.values_mut() {
                member.fail_waiters(ResponseError::NotCoordinator);
            }
        }
    }
}

/// The record that deletes a committed offset.
fn offset_tombstone(group: &str, topic: &str, partition: i32) -> (RecordKey, Option<Bytes>) {
    let key = RecordKey::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    (key, None)
}

/// Applies one `__consumer_offsets` record while loading.
fn replay(
    groups: &mut HashMap<String, Group>,
    key: RecordKey,
    value: Option<Bytes>,
    now: Instant,
    now_ms: i64,
) {
    let group_id = key.group().to_string();
    match (key, value) {
        (
            RecordKey::Offset {
                topic, partition, ..
            },
            Some(value),
        ) => match OffsetValue::decode(value) {
            Ok(value) => {
                groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id, now_ms))
                    .offsets
                    .insert((topic, partition), value);
            }
            Err(error) => tracing::warn!(group = %group_id, %error, "skipping an offset record"),
        },
        (
            RecordKey::Offset {
                topic, partition, ..
            },
            None,
        ) => {
            if let Some(group) = groups.get_mut(&group_id) {
                group.offsets.remove(&(topic, partition));
            }
        }
        (RecordKey::Group { .. }, None) => {
            groups.remove(&group_id);
        }
        (RecordKey::Group { .. }, Some(value)) => match GroupValue::decode(value) {
            Ok(value) => {
                let group = groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id, now_ms));
                restore(group, value, now);
            }
            Err(error) => tracing::warn!(group = %group_id, %error, "skipping a group record"),
        },
    }
}

/// Restores a group from its latest metadata record: its members keep
/// their assignment and must heartbeat within their session timeout.
fn restore(group: &mut Group, value: GroupValue, now: Instant) {
    group.generation = value.generation;
    group.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
    group.protocol = value.protocol.clone();
    group.leader = value.leader;
    group.state_timestamp_ms = value.state_timestamp_ms;
    group.members.clear();
    group.static_members.clear();
    let protocol = value.protocol.unwrap_or_default();
    for (seq, member) in value.members.into_iter().enumerate() {
        if let Some(instance) = &member.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        group.members.insert(
            member.member_id.clone(),
            Member {
                id: member.member_id,
                instance_id: member.group_instance_id,
                client_id: member.client_id,
                client_host: member.client_host,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                session_timeout_ms: member.session_timeout_ms,
                protocols: vec![(protocol.clone(), member.subscription)],
                assignment: member.assignment,
                joined_seq: seq as u64,
                session_deadline: now + millis(member.session_timeout_ms),
                join_waiter: None,
                sync_waiter: None,
            },
        );
    }
    group.next_join_seq = group.members.len() as u64;
    group.state = if group.members.is_empty() {
        GroupState::Empty
    } else {
        GroupState::Stable
    };
}
