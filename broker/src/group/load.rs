//! Loading a partition of `__consumer_offsets` when this broker becomes its
//! leader (replaying its records into groups and offsets), and forgetting
//! its groups when it stops leading it.

use std::collections::HashMap;

use kafka_protocol::records::Record;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::records::{GroupValue, OffsetValue, RecordKey};
use super::state::*;
use super::GroupCoordinator;
use crate::internal_topics::{partition_for, read_records};
use crate::partition::Partition;

impl GroupCoordinator {
    /// Replays one partition of `__consumer_offsets` (in offset order),
    /// which this broker now leads: from now on it coordinates the groups
    /// of that partition.
    ///
    /// The partition is read a chunk at a time (the log's lock held only
    /// while one is read) into groups of its own, without the lock of
    /// every group: the other partitions' groups are served meanwhile.
    /// Nothing writes the partition's groups while it loads (this broker
    /// does not coordinate them yet) but transaction markers: the last
    /// records, appended while the rest loaded, are read under the groups
    /// lock, so a marker's `complete_txn` either finds its groups loaded or
    /// came before its marker was read. Meanwhile the partition's groups
    /// are told COORDINATOR_LOAD_IN_PROGRESS.
    pub fn load_partition(&self, partition: &Partition, now: Instant, now_ms: i64) {
        self.loading.lock().insert(partition.index);
        let loaded = self.load(partition, now, now_ms);
        self.loading.lock().remove(&partition.index);
        let Some((loaded, count)) = loaded else {
            return;
        };
        tracing::info!(
            partition = partition.index,
            records = loaded,
            groups = count,
            "loaded group metadata and offsets"
        );
    }

    /// The load; `None` if the partition closed meanwhile.
    fn load(&self, partition: &Partition, now: Instant, now_ms: i64) -> Option<(usize, usize)> {
        let mut loading = Loading::new(now, now_ms);
        let next = read_records(partition, 0, |record| loading.apply(record))?;
        let mut groups = self.lock();
        read_records(partition, next, |record| loading.apply(record))?;
        let loaded = loading.finish(&mut groups);
        self.owned.lock().insert(partition.index);
        Some(loaded)
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

/// One partition's groups as they load, apart from the coordinator's.
struct Loading {
    groups: HashMap<String, Group>,
    /// Transactional offset commits wait for their producer's marker.
    open: HashMap<i64, Vec<(RecordKey, Option<Bytes>)>>,
    records: usize,
    now: Instant,
    now_ms: i64,
}

impl Loading {
    fn new(now: Instant, now_ms: i64) -> Loading {
        Loading {
            groups: HashMap::new(),
            open: HashMap::new(),
            records: 0,
            now,
            now_ms,
        }
    }

    fn apply(&mut self, record: Record) {
        self.records += 1;
        let Some(key) = record.key else { return };
        if record.control {
            // A marker ends the producer's transaction; another control
            // record (none is known) is skipped like an abort.
            let commit = storage::Marker::from_record(&key, record.value.as_deref())
                .is_some_and(|marker| marker.commit);
            for (key, value) in self.open.remove(&record.producer_id).unwrap_or_default() {
                if commit {
                    replay(&mut self.groups, key, value, self.now, self.now_ms);
                }
            }
            return;
        }
        let key = match RecordKey::decode(key) {
            Ok(key) => key,
            Err(error) => {
                tracing::warn!(%error, "skipping a record of __consumer_offsets");
                return;
            }
        };
        if record.transactional {
            self.open
                .entry(record.producer_id)
                .or_default()
                .push((key, record.value));
        } else {
            replay(&mut self.groups, key, record.value, self.now, self.now_ms);
        }
    }

    /// Puts the loaded groups, with the transactional commits still open,
    /// among the coordinator's `groups`. Returns the records read and the
    /// groups loaded.
    fn finish(mut self, groups: &mut HashMap<String, Group>) -> (usize, usize) {
        for (producer_id, entries) in self.open {
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
                    self.groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, self.now_ms))
                        .pending_txn
                        .entry(producer_id)
                        .or_default()
                        .insert((topic, partition), value);
                }
            }
        }
        let count = self.groups.len();
        groups.extend(self.groups);
        (self.records, count)
    }
}
