//! The pure state of one group: its members and Kafka's classic state
//! machine (Empty → PreparingRebalance → CompletingRebalance → Stable, and
//! Dead), protocol selection, rebalance timeouts, static members' fencing.
//! No I/O and no clock of its own: `now` is passed in.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

use super::records::{GroupValue, MemberValue, OffsetValue};
use super::wire::*;
use crate::config::GroupConfig;

/// Client ids longer than this are cut in generated member ids, which must
/// fit a Kafka string (at most 32767 bytes) with room to spare.
pub(super) const MEMBER_ID_CLIENT_PREFIX_MAX: usize = 1024;

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

pub(super) struct Member {
    pub(super) id: String,
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) rebalance_timeout_ms: i32,
    pub(super) session_timeout_ms: i32,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    /// Order of joining: the first one becomes leader when one is needed.
    pub(super) joined_seq: u64,
    pub(super) session_deadline: Instant,
    pub(super) join_waiter: Option<oneshot::Sender<JoinResponse>>,
    pub(super) sync_waiter: Option<oneshot::Sender<SyncResponse>>,
}

impl Member {
    pub(super) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    pub(super) fn heartbeat(&mut self, now: Instant) {
        self.session_deadline = now + millis(self.session_timeout_ms);
    }

    /// Members waiting for JoinGroup or SyncGroup answers are alive.
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.join_waiter.is_none() && self.sync_waiter.is_none() && now >= self.session_deadline
    }

    pub(super) fn fail_waiters(&mut self, error: ResponseError) {
        if let Some(waiter) = self.join_waiter.take() {
            let _ = waiter.send(JoinResponse::error(error, &self.id));
        }
        if let Some(waiter) = self.sync_waiter.take() {
            let _ = waiter.send(SyncResponse::error(error));
        }
    }
}

pub(super) struct Group {
    pub(super) id: String,
    pub(super) state: GroupState,
    pub(super) state_timestamp_ms: i64,
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    /// group.instance.id → member id of the static members.
    pub(super) static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or time out.
    pub(super) pending: HashMap<String, Instant>,
    pub(super) next_join_seq: u64,
    pub(super) rebalance_deadline: Option<Instant>,
    /// While the first members of an empty group gather (group.initial.rebalance.delay.ms).
    pub(super) initial_delay_until: Option<Instant>,
    pub(super) sync_deadline: Option<Instant>,
    pub(super) offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Transactional offset commits (TxnOffsetCommit) by producer id, until
    /// the producer's transaction ends: a commit marker makes them the
    /// committed offsets, an abort marker drops them.
    pub(super) pending_txn: HashMap<i64, BTreeMap<(String, i32), OffsetValue>>,
}

impl Group {
    pub(super) fn new(id: &str, now_ms: i64) -> Group {
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

    pub(super) fn set_state(&mut self, state: GroupState, now_ms: i64) {
        if self.state != state {
            tracing::debug!(group = %self.id, from = self.state.name(), to = state.name(), generation = self.generation, "group state");
        }
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// Protocols every member supports (all of `extra`'s when the group is empty).
    pub(super) fn candidate_protocols(&self, extra: Option<&[(String, Bytes)]>) -> Vec<String> {
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
    pub(super) fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
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
    pub(super) fn select_protocol(&self) -> Option<String> {
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

    pub(super) fn max_rebalance_timeout(&self) -> Duration {
        millis(
            self.members
                .values()
                .map(|m| m.rebalance_timeout_ms)
                .max()
                .unwrap_or(0),
        )
    }

    /// Starts a rebalance: members must rejoin before it completes.
    pub(super) fn prepare_rebalance(
        &mut self,
        config: &GroupConfig,
        now: Instant,
        now_ms: i64,
        reason: &str,
    ) {
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
    pub(super) fn rebalance_or_check(
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

    pub(super) fn response_for(&self, member: &Member, with_members: bool) -> JoinResponse {
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
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member.id.clone(),
            skip_assignment: false,
            members,
        }
    }

    pub(super) fn remove_member(&mut self, member_id: &str, error: ResponseError) -> bool {
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

    pub(super) fn to_value(&self) -> GroupValue {
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
    pub(super) fn fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|instance| self.static_members.get(instance))
            .is_some_and(|known| known != member_id)
    }

    /// The topics a member of a `consumer` group subscribes to.
    pub(super) fn subscribed_topics(&self) -> Option<Vec<String>> {
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
pub(super) fn consumer_subscription_topics(metadata: &mut Bytes) -> Option<Vec<String>> {
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

pub(super) fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GroupConfig {
        GroupConfig {
            offsets_topic_replication_factor: 1,
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_size: 10,
            offsets_topic_partitions: 1,
            offsets_topic_segment_bytes: 1 << 20,
            offsets_retention_ms: 60_000,
            offsets_retention_check_interval_ms: 1000,
            offset_metadata_max_bytes: 4096,
        }
    }

    fn member(id: &str, seq: u64, protocols: &[&str], now: Instant) -> Member {
        Member {
            id: id.to_string(),
            instance_id: None,
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            rebalance_timeout_ms: 10_000 + seq as i32,
            session_timeout_ms: 6000,
            protocols: protocols
                .iter()
                .map(|name| ((*name).to_string(), Bytes::from(format!("{id}:{name}"))))
                .collect(),
            assignment: Bytes::new(),
            joined_seq: seq,
            session_deadline: now + Duration::from_millis(6000),
            join_waiter: None,
            sync_waiter: None,
        }
    }

    fn group_of(members: Vec<Member>, now_ms: i64) -> Group {
        let mut group = Group::new("g", now_ms);
        group.protocol_type = Some("consumer".to_string());
        for member in members {
            group.members.insert(member.id.clone(), member);
        }
        group
    }

    #[test]
    fn the_protocol_every_member_supports_with_most_first_votes_wins() {
        let now = Instant::now();
        let group = group_of(
            vec![
                member("a", 0, &["range", "roundrobin", "sticky"], now),
                member("b", 1, &["roundrobin", "range"], now),
                member("c", 2, &["roundrobin", "sticky", "range"], now),
            ],
            0,
        );
        // "sticky" is not supported by b; of range and roundrobin, a votes
        // range, b and c roundrobin.
        assert_eq!(group.candidate_protocols(None), ["range", "roundrobin"]);
        assert_eq!(group.select_protocol().as_deref(), Some("roundrobin"));
        // A tie goes to the candidate listed first by the first member.
        let tie = group_of(
            vec![
                member("a", 0, &["range", "roundrobin"], now),
                member("b", 1, &["roundrobin", "range"], now),
            ],
            0,
        );
        assert_eq!(tie.select_protocol().as_deref(), Some("range"));
    }

    #[test]
    fn a_joining_member_must_share_the_type_and_a_protocol() {
        let now = Instant::now();
        let protocols = |names: &[&str]| -> Vec<(String, Bytes)> {
            names
                .iter()
                .map(|n| ((*n).to_string(), Bytes::new()))
                .collect()
        };
        let empty = Group::new("g", 0);
        assert!(empty.supports("consumer", &protocols(&["anything"])));
        assert!(!empty.supports("", &protocols(&["range"])));
        assert!(!empty.supports("consumer", &[]));
        let group = group_of(vec![member("a", 0, &["range"], now)], 0);
        assert!(group.supports("consumer", &protocols(&["sticky", "range"])));
        assert!(!group.supports("consumer", &protocols(&["sticky"])));
        assert!(!group.supports("connect", &protocols(&["range"])));
    }

    #[test]
    fn a_rebalance_from_empty_waits_the_initial_delay_capped_by_the_rebalance_timeout() {
        let now = Instant::now();
        let mut group = group_of(vec![member("a", 0, &["range"], now)], 0);
        group.rebalance_or_check(&config(), now, 5, "join");
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(group.state_timestamp_ms, 5);
        assert_eq!(
            group.rebalance_deadline,
            Some(now + Duration::from_millis(10_000))
        );
        assert_eq!(
            group.initial_delay_until,
            Some(now + Duration::from_millis(3000))
        );
        // Under way: a second reason changes nothing.
        group.rebalance_or_check(&config(), now + Duration::from_secs(1), 6, "again");
        assert_eq!(
            group.rebalance_deadline,
            Some(now + Duration::from_millis(10_000))
        );
        assert_eq!(group.state_timestamp_ms, 5);

        let mut short = group_of(vec![member("a", 0, &["range"], now)], 0);
        short.members.get_mut("a").unwrap().rebalance_timeout_ms = 1000;
        short.prepare_rebalance(&config(), now, 0, "join");
        assert_eq!(
            short.initial_delay_until,
            Some(now + Duration::from_millis(1000))
        );
    }

    #[test]
    fn a_rebalance_during_sync_fails_the_waiters_and_drops_assignments() {
        let now = Instant::now();
        let mut group = group_of(
            vec![
                member("a", 0, &["range"], now),
                member("b", 1, &["range"], now),
            ],
            0,
        );
        group.set_state(GroupState::CompletingRebalance, 0);
        let (sender, mut waiting) = oneshot::channel();
        group.members.get_mut("b").unwrap().sync_waiter = Some(sender);
        group.members.get_mut("a").unwrap().assignment = Bytes::from_static(b"p0");
        group.rebalance_or_check(&config(), now, 1, "member left");
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(
            waiting.try_recv().unwrap().error,
            Some(ResponseError::RebalanceInProgress)
        );
        assert!(group.members["a"].assignment.is_empty());
        assert_eq!(
            group.initial_delay_until, None,
            "the initial delay is for empty groups only"
        );
    }

    #[test]
    fn removing_a_member_clears_its_static_id_and_leadership_and_answers_its_waiters() {
        let now = Instant::now();
        let mut leader = member("a", 0, &["range"], now);
        leader.instance_id = Some("instance-1".to_string());
        let (sender, mut waiting) = oneshot::channel();
        leader.join_waiter = Some(sender);
        let mut group = group_of(vec![leader, member("b", 1, &["range"], now)], 0);
        group
            .static_members
            .insert("instance-1".to_string(), "a".to_string());
        group.leader = Some("a".to_string());
        assert!(group.fenced(Some("instance-1"), "other-id"));
        assert!(!group.fenced(Some("instance-1"), "a"));
        assert!(!group.fenced(None, "anything"));

        assert!(group.remove_member("a", ResponseError::UnknownMemberId));
        assert!(!group.remove_member("a", ResponseError::UnknownMemberId));
        assert_eq!(group.leader, None);
        assert!(group.static_members.is_empty());
        assert!(!group.fenced(Some("instance-1"), "other-id"));
        let answer = waiting.try_recv().unwrap();
        assert_eq!(answer.error, Some(ResponseError::UnknownMemberId));
        assert_eq!(answer.member_id, "a");
    }

    #[test]
    fn a_member_waiting_for_an_answer_never_expires() {
        let now = Instant::now();
        let mut member = member("a", 0, &["range"], now);
        let later = now + Duration::from_millis(6000);
        assert!(!member.expired(later - Duration::from_millis(1)));
        assert!(member.expired(later));
        let (sender, _waiting) = oneshot::channel();
        member.join_waiter = Some(sender);
        assert!(!member.expired(later + Duration::from_secs(60)));
        member.join_waiter = None;
        member.heartbeat(later);
        assert!(!member.expired(later + Duration::from_millis(5999)));
    }

    #[test]
    fn the_stored_value_lists_members_in_join_order_with_the_chosen_protocols_metadata() {
        let now = Instant::now();
        let mut group = group_of(
            vec![
                member("z-joined-first", 0, &["range", "sticky"], now),
                member("a-joined-second", 1, &["sticky", "range"], now),
            ],
            7,
        );
        group.generation = 3;
        group.protocol = Some("sticky".to_string());
        group.leader = Some("z-joined-first".to_string());
        let value = group.to_value();
        assert_eq!(value.generation, 3);
        assert_eq!(value.protocol.as_deref(), Some("sticky"));
        let ids: Vec<&str> = value.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(ids, ["z-joined-first", "a-joined-second"]);
        assert_eq!(
            value.members[0].subscription,
            Bytes::from("z-joined-first:sticky")
        );
        let joined = group.response_for(&group.members["a-joined-second"], true);
        assert_eq!(joined.leader, "z-joined-first");
        assert_eq!(joined.members.len(), 2);
        assert_eq!(joined.members[0].member_id, "z-joined-first");
        assert!(group
            .response_for(&group.members["a-joined-second"], false)
            .members
            .is_empty());
    }

    #[test]
    fn consumer_subscriptions_are_read_from_the_chosen_protocol() {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let now = Instant::now();
        let mut encoded = bytes::BytesMut::new();
        encoded.extend_from_slice(&1i16.to_be_bytes());
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("orders")])
            .encode(&mut encoded, 1)
            .unwrap();
        let mut subscriber = member("a", 0, &[], now);
        subscriber.protocols = vec![("range".to_string(), encoded.freeze())];
        let mut group = group_of(vec![subscriber], 0);
        assert_eq!(group.subscribed_topics(), None, "no protocol chosen yet");
        group.protocol = Some("range".to_string());
        assert_eq!(group.subscribed_topics(), Some(vec!["orders".to_string()]));
        group.protocol_type = Some("connect".to_string());
        assert_eq!(group.subscribed_topics(), None);
        assert_eq!(
            consumer_subscription_topics(&mut Bytes::from_static(b"\x00")),
            None
        );
    }
}
