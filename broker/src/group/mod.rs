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
//!
//! Files by concept: `wire` (what handlers pass in and get back), `state`
//! (one group's pure state machine, unit-tested alone), `membership`
//! (join, sync, heartbeat, leave, timers), `offsets` (commits, fetches,
//! deletes, retention), `load` (replaying a `__consumer_offsets`
//! partition), `records` (its record formats); this file holds the
//! coordinator itself, writing to `__consumer_offsets`, and the listing,
//! describing and deleting of groups.

mod load;
mod membership;
mod offsets;
pub mod records;
mod state;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use crate::config::GroupConfig;
use crate::errors::AppendError;
use crate::errors::KafkaResult;
use crate::internal_topics::{internal_batch, partition_for};
use crate::partition::Partition;
use crate::topics::Topic;
use offsets::offset_tombstone;
use records::RecordKey;
pub use state::GroupState;
use state::{Group, Member};
pub use wire::*;

/// Where a change was appended to `__consumer_offsets`.
struct Appended {
    partition: Arc<Partition>,
    end_offset: i64,
    leader_epoch: i32,
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
    /// The partitions of `__consumer_offsets` being loaded: their groups
    /// are told COORDINATOR_LOAD_IN_PROGRESS (retriable, without looking
    /// for another coordinator) until the load is done.
    loading: Mutex<std::collections::BTreeSet<i32>>,
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
            loading: Mutex::new(std::collections::BTreeSet::new()),
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

    fn partition_count(&self) -> Option<i32> {
        self.offsets_topic()
            .map(|topic| topic.partitions.len() as i32)
    }

    /// Whether this broker coordinates `group_id`: it leads the group's
    /// partition of `__consumer_offsets` (FindCoordinator points there).
    pub fn coordinates(&self, group_id: &str) -> bool {
        self.check_coordinates(group_id).is_ok()
    }

    /// [`Self::coordinates`], with Kafka's answer when it does not:
    /// COORDINATOR_LOAD_IN_PROGRESS while the group's partition loads,
    /// NOT_COORDINATOR otherwise.
    fn check_coordinates(&self, group_id: &str) -> KafkaResult {
        let Some(count) = self.partition_count() else {
            return Err(ResponseError::NotCoordinator);
        };
        let index = partition_for(group_id, count);
        if self.owned.lock().contains(&index) {
            Ok(())
        } else if self.loading.lock().contains(&index) {
            Err(ResponseError::CoordinatorLoadInProgress)
        } else {
            Err(ResponseError::NotCoordinator)
        }
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
    ) -> Result<Option<Appended>, ResponseError> {
        self.persist_for(group, entries, None)
    }

    /// [`Self::persist`]; with `producer`, as a transactional batch of that
    /// producer (TxnOffsetCommit), whose epoch the log checks.
    fn persist_for(
        &self,
        group: &str,
        entries: Vec<(RecordKey, Option<Bytes>)>,
        producer: Option<(i64, i16)>,
    ) -> Result<Option<Appended>, ResponseError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let Some(topic) = self.offsets_topic() else {
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        let index = partition_for(group, topic.partitions.len() as i32);
        let Some(partition) = topic.partitions.get(index as usize) else {
            return Err(ResponseError::CoordinatorNotAvailable);
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
                return Err(ResponseError::UnknownServerError);
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
                Err(ResponseError::InvalidCommitOffsetSize)
            }
            Ok(Err(AppendError::Storage(storage::StorageError::InvalidProducerEpoch(message)))) => {
                tracing::info!(group, %message, "transactional offset commit fenced");
                Err(ResponseError::InvalidProducerEpoch)
            }
            Ok(Err(error)) => {
                tracing::error!(group, %error, "appending to __consumer_offsets failed");
                Err(ResponseError::CoordinatorNotAvailable)
            }
            Err(_) => Err(ResponseError::NotCoordinator),
        }
    }

    fn persist_group(&self, group: &Group) -> Result<(), ResponseError> {
        let key = RecordKey::Group {
            group: group.id.clone(),
        };
        self.persist(&group.id, vec![(key, Some(group.to_value().encode()))])
            .map(|_| ())
    }

    // ---------------------------------------------------------------- join

    pub fn describe(&self, group_id: &str) -> GroupDescription {
        if let Err(error) = self.check_coordinates(group_id) {
            return GroupDescription {
                error: Some(error),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        }
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return GroupDescription {
                error: None,
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
            error: None,
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
    pub fn delete_group(&self, group_id: &str) -> KafkaResult {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        self.check_coordinates(group_id)?;
        let mut groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        match group.state {
            GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
            GroupState::Empty => {}
            _ => return Err(ResponseError::NonEmptyGroup),
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
        self.persist(group_id, entries)?;
        groups.remove(group_id);
        tracing::info!(group = group_id, "deleted group");
        Ok(())
    }

    // ---------------------------------------------------------------- time

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
