//! Committed offsets: OffsetCommit (answered once the ISR has the record),
//! transactional commits settled by their markers, OffsetFetch,
//! OffsetDelete, and their retention.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::records::{OffsetValue, RecordKey};
use super::state::*;
use super::wire::*;
use super::{Appended, GroupCoordinator};
use crate::errors::KafkaResult;
use crate::internal_topics::partition_for;

/// How long an OffsetCommit waits for the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms` default).
const OFFSET_COMMIT_TIMEOUT: Duration = Duration::from_millis(5000);

/// The record that deletes a committed offset.
pub(super) fn offset_tombstone(
    group: &str,
    topic: &str,
    partition: i32,
) -> (RecordKey, Option<Bytes>) {
    let key = RecordKey::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    (key, None)
}

impl GroupCoordinator {
    /// Commits offsets; returns one outcome per offset of the request.
    pub async fn commit(&self, request: CommitRequest, now_ms: i64) -> Vec<KafkaResult> {
        let (mut results, appended) = self.commit_locally(request, now_ms);
        if let Some(appended) = appended {
            let deadline = tokio::time::Instant::now() + OFFSET_COMMIT_TIMEOUT;
            let replicated = appended
                .partition
                .wait_replicated(appended.end_offset, appended.leader_epoch, 1, deadline)
                .await;
            if let Err(error) = replicated {
                // Kafka's storeOffsets: leadership lost is NOT_COORDINATOR,
                // replicas too few or too slow COORDINATOR_NOT_AVAILABLE.
                let error = if error == ResponseError::NotLeaderOrFollower {
                    ResponseError::NotCoordinator
                } else {
                    ResponseError::CoordinatorNotAvailable
                };
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(error);
                }
            }
        }
        results
    }

    /// The commit in memory and in the local log; what is left is to wait
    /// for the in-sync replicas to have it.
    pub(super) fn commit_locally(
        &self,
        request: CommitRequest,
        now_ms: i64,
    ) -> (Vec<KafkaResult>, Option<Appended>) {
        let all = |error: ResponseError| (vec![Err(error); request.offsets.len()], None);
        if request.group_id.is_empty() {
            return all(ResponseError::InvalidGroupId);
        }
        if let Err(error) = self.check_coordinates(&request.group_id) {
            return all(error);
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
                results.push(Err(ResponseError::OffsetMetadataTooLarge));
                continue;
            }
            results.push(Ok(()));
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
            Err(error) => {
                for (i, _) in &accepted {
                    results[*i] = Err(error);
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

    /// Every committed offset of the groups this broker coordinates, as
    /// (group, topic, partition, offset): what consumer lag is measured
    /// from.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.lock();
        groups
            .iter()
            .flat_map(|(group_id, group)| {
                group
                    .offsets
                    .iter()
                    .map(move |((topic, partition), value)| {
                        (group_id.clone(), topic.clone(), *partition, value.offset)
                    })
            })
            .collect()
    }

    /// OffsetDelete: returns the top-level error and one error per partition.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> (KafkaResult, Vec<KafkaResult>) {
        if let Err(error) = self.check_coordinates(group_id) {
            return (Err(error), Vec::new());
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return (Err(ResponseError::GroupIdNotFound), Vec::new());
        };
        let subscribed = match group.state {
            GroupState::Empty => Vec::new(),
            GroupState::Dead => return (Err(ResponseError::GroupIdNotFound), Vec::new()),
            _ => match group.subscribed_topics() {
                Some(topics) => topics,
                None => return (Err(ResponseError::NonEmptyGroup), Vec::new()),
            },
        };
        let mut errors = Vec::with_capacity(partitions.len());
        let mut entries = Vec::new();
        let mut doomed = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.contains(topic) {
                errors.push(Err(ResponseError::GroupSubscribedToTopic));
                continue;
            }
            errors.push(Ok(()));
            if group.offsets.contains_key(&(topic.clone(), *partition)) {
                entries.push(offset_tombstone(group_id, topic, *partition));
                doomed.push((topic.clone(), *partition));
            }
        }
        if let Err(error) = self.persist(group_id, entries) {
            return (Err(error), Vec::new());
        }
        for key in doomed {
            group.offsets.remove(&key);
        }
        (Ok(()), errors)
    }

    // -------------------------------------------------------- administration

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
}
