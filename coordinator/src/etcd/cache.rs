//! The broker's copy of the cluster's keys, kept by one initial read and a
//! watch from the revision after it (see `watch.rs`), and the
//! [`ClusterMetadata`] snapshot derived from it.
//!
//! Next to each key the cache keeps the revisions etcd gave it: a change is
//! written with a compare on the revision the change was computed from, so
//! that it is refused if anything wrote the key in between.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::keys::{Key, Keys, PartitionRecord, TopicRecord};
use crate::model::{
    BrokerRegistration, ClusterMetadata, Controller, PartitionMetadata, TopicMetadata,
};
use crate::security::{self, AclBinding, ScramChange, ScramCredential};

/// etcd's revisions of a key: when it was created and last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRevision {
    pub create: i64,
    pub modified: i64,
}

#[derive(Debug)]
pub struct Cache {
    keys: Keys,
    cluster_id: String,
    brokers: BTreeMap<i32, BrokerRegistration>,
    /// Controller candidates by creation revision: the oldest is the controller.
    candidates: BTreeMap<i64, (String, i32)>,
    topics: BTreeMap<String, (TopicRecord, KeyRevision)>,
    topic_names: HashMap<Uuid, String>,
    partitions: HashMap<Uuid, BTreeMap<i32, (PartitionRecord, KeyRevision)>>,
    broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    scram_credentials: BTreeMap<String, BTreeMap<String, ScramCredential>>,
    /// ACLs by key.
    acls: BTreeMap<String, AclBinding>,
    /// Topics whose derived metadata is out of date.
    dirty: BTreeSet<String>,
    revision: i64,
    current: Arc<ClusterMetadata>,
}

impl Cache {
    pub fn new(keys: Keys) -> Cache {
        Cache {
            keys,
            cluster_id: String::new(),
            brokers: BTreeMap::new(),
            candidates: BTreeMap::new(),
            topics: BTreeMap::new(),
            topic_names: HashMap::new(),
            partitions: HashMap::new(),
            broker_configs: BTreeMap::new(),
            scram_credentials: BTreeMap::new(),
            acls: BTreeMap::new(),
            dirty: BTreeSet::new(),
            revision: 0,
            current: Arc::new(ClusterMetadata {
                cluster_id: String::new(),
                ..ClusterMetadata::new_cluster()
            }),
        }
    }

    /// Forgets everything, for a full re-read.
    pub fn clear(&mut self) {
        *self = Cache::new(self.keys.clone());
    }

    pub fn current(&self) -> &Arc<ClusterMetadata> {
        &self.current
    }

    pub fn topic_revision(&self, name: &str) -> Option<KeyRevision> {
        self.topics.get(name).map(|(_, revision)| *revision)
    }

    pub fn topic_record(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name).map(|(record, _)| record)
    }

    pub fn partition_revision(&self, topic_id: Uuid, partition: i32) -> Option<KeyRevision> {
        self.partitions
            .get(&topic_id)?
            .get(&partition)
            .map(|(_, revision)| *revision)
    }

    /// A key written (created or modified) at `revision`.
    pub fn put(&mut self, key: &str, value: &[u8], revision: KeyRevision) {
        self.revision = self.revision.max(revision.modified);
        let Some(parsed) = self.keys.parse(key) else {
            return;
        };
        let ignore = |error: &dyn std::fmt::Display| {
            tracing::warn!(key, %error, "ignoring an etcd value that does not parse");
        };
        match parsed {
            Key::ClusterId => match std::str::from_utf8(value) {
                Ok(id) => self.cluster_id = id.to_string(),
                Err(error) => ignore(&error),
            },
            Key::Broker(node_id) => match serde_json::from_slice::<BrokerRegistration>(value) {
                Ok(mut broker) if broker.node_id == node_id => {
                    broker.epoch = revision.create;
                    self.brokers.insert(node_id, broker);
                }
                Ok(_) => ignore(&"node id differs from the key's"),
                Err(error) => ignore(&error),
            },
            Key::ControllerCandidate => {
                match std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<i32>().ok())
                {
                    Some(node_id) => {
                        self.candidates.retain(|_, (k, _)| k != key);
                        self.candidates
                            .insert(revision.create, (key.to_string(), node_id));
                    }
                    None => ignore(&"not a node id"),
                }
            }
            Key::Topic(name) => match serde_json::from_slice::<TopicRecord>(value) {
                Ok(record) => {
                    if let Some((old, _)) = self.topics.get(&name) {
                        if old.topic_id != record.topic_id {
                            self.topic_names.remove(&old.topic_id);
                        }
                    }
                    self.topic_names.insert(record.topic_id, name.clone());
                    self.topics.insert(name.clone(), (record, revision));
                    self.dirty.insert(name);
                }
                Err(error) => ignore(&error),
            },
            Key::Partition(topic_id, partition) => {
                match serde_json::from_slice::<PartitionRecord>(value) {
                    Ok(record) => {
                        self.partitions
                            .entry(topic_id)
                            .or_default()
                            .insert(partition, (record, revision));
                        self.mark_topic(topic_id);
                    }
                    Err(error) => ignore(&error),
                }
            }
            Key::BrokerConfigs(resource) => {
                match serde_json::from_slice::<BTreeMap<String, String>>(value) {
                    Ok(configs) => {
                        self.broker_configs.insert(resource, configs);
                    }
                    Err(error) => ignore(&error),
                }
            }
            Key::Scram(mechanism, user) => {
                match serde_json::from_slice::<ScramCredential>(value) {
                    Ok(credential) => {
                        self.scram_credentials
                            .entry(user)
                            .or_default()
                            .insert(mechanism, credential);
                    }
                    // The error names no byte of the value.
                    Err(_) => ignore(&"not a SCRAM credential"),
                }
            }
            Key::Acl => match serde_json::from_slice::<AclBinding>(value) {
                Ok(acl) => {
                    self.acls.insert(key.to_string(), acl);
                }
                Err(error) => ignore(&error),
            },
        }
    }

    /// A key deleted at `revision`.
    pub fn delete(&mut self, key: &str, revision: i64) {
        self.revision = self.revision.max(revision);
        match self.keys.parse(key) {
            Some(Key::ClusterId) | None => {}
            Some(Key::Broker(node_id)) => {
                self.brokers.remove(&node_id);
            }
            Some(Key::ControllerCandidate) => self.candidates.retain(|_, (k, _)| k != key),
            Some(Key::Topic(name)) => {
                if let Some((record, _)) = self.topics.remove(&name) {
                    self.topic_names.remove(&record.topic_id);
                    self.partitions.remove(&record.topic_id);
                }
                self.dirty.insert(name);
            }
            Some(Key::Partition(topic_id, partition)) => {
                if let Some(partitions) = self.partitions.get_mut(&topic_id) {
                    partitions.remove(&partition);
                }
                self.mark_topic(topic_id);
            }
            Some(Key::BrokerConfigs(resource)) => {
                self.broker_configs.remove(&resource);
            }
            Some(Key::Scram(mechanism, user)) => {
                security::apply_scram_changes(
                    &mut self.scram_credentials,
                    vec![ScramChange {
                        user,
                        mechanism,
                        credential: None,
                    }],
                );
            }
            Some(Key::Acl) => {
                self.acls.remove(key);
            }
        }
    }

    /// Everything read up to `revision` (an initial read) has been put.
    pub fn read_up_to(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }

    fn mark_topic(&mut self, topic_id: Uuid) {
        if let Some(name) = self.topic_names.get(&topic_id) {
            self.dirty.insert(name.clone());
        }
    }

    /// The snapshot as of everything put and deleted so far. Only topics
    /// that changed are derived again.
    pub fn publish(&mut self) -> Arc<ClusterMetadata> {
        let mut topics = self.current.topics.clone();
        for name in std::mem::take(&mut self.dirty) {
            match self.topics.get(&name) {
                Some((record, _)) => {
                    topics.insert(name.clone(), Arc::new(self.derive_topic(&name, record)));
                }
                None => {
                    topics.remove(&name);
                }
            }
        }
        let controller = self
            .candidates
            .iter()
            .next()
            .map(|(epoch, (_, node_id))| Controller {
                node_id: *node_id,
                epoch: *epoch,
            });
        self.current = Arc::new(ClusterMetadata {
            cluster_id: self.cluster_id.clone(),
            topics,
            broker_configs: self.broker_configs.clone(),
            brokers: self.brokers.clone(),
            controller,
            revision: self.revision,
            next_producer_id: 0,
            scram_credentials: self.scram_credentials.clone(),
            acls: self.acls.values().cloned().collect(),
        });
        self.current.clone()
    }

    /// A topic's metadata: each partition's written state, or the state a
    /// new partition has by its assignment.
    fn derive_topic(&self, name: &str, record: &TopicRecord) -> TopicMetadata {
        let states = self.partitions.get(&record.topic_id);
        let created = self
            .topic_revision(name)
            .map_or(0, |revision| revision.create);
        let partitions = record
            .assignment
            .iter()
            .enumerate()
            .map(|(index, replicas)| {
                let index = index as i32;
                match states.and_then(|states| states.get(&index)) {
                    Some((state, _)) => PartitionMetadata {
                        partition: index,
                        leader: state.leader,
                        leader_epoch: state.leader_epoch,
                        partition_epoch: state.partition_epoch,
                        replicas: state.replicas.clone(),
                        isr: state.isr.clone(),
                        isr_epochs: state.isr_epochs.clone(),
                    },
                    None => {
                        let mut state = PartitionMetadata::new(index, replicas.clone());
                        let since = record
                            .assigned_at
                            .get(index as usize)
                            .copied()
                            .unwrap_or(created);
                        state.isr_epochs = state.isr.iter().map(|id| (*id, since)).collect();
                        state
                    }
                }
            })
            .collect();
        TopicMetadata {
            name: name.to_string(),
            topic_id: record.topic_id,
            partitions,
            configs: record.configs.clone(),
        }
    }
}

impl From<&PartitionMetadata> for PartitionRecord {
    fn from(partition: &PartitionMetadata) -> Self {
        PartitionRecord {
            leader: partition.leader,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            replicas: partition.replicas.clone(),
            isr: partition.isr.clone(),
            isr_epochs: partition.isr_epochs.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(create: i64, modified: i64) -> KeyRevision {
        KeyRevision { create, modified }
    }

    #[test]
    fn snapshots_follow_puts_and_deletes() {
        let keys = Keys::new("/k");
        let mut cache = Cache::new(keys.clone());
        let topic_id = Uuid::new_v4();
        let record = TopicRecord {
            topic_id,
            assignment: vec![vec![1, 2], vec![2, 1]],
            assigned_at: Vec::new(),
            configs: BTreeMap::new(),
        };
        cache.put(&keys.cluster_id(), b"abc", revision(1, 1));
        cache.put(
            &keys.topic("t"),
            &serde_json::to_vec(&record).unwrap(),
            revision(2, 2),
        );
        cache.put(
            &format!("{}/1a", keys.controller_election()),
            b"2",
            revision(5, 5),
        );
        cache.put(
            &format!("{}/0f", keys.controller_election()),
            b"1",
            revision(3, 3),
        );
        let snapshot = cache.publish();
        assert_eq!(snapshot.cluster_id, "abc");
        assert_eq!(snapshot.revision, 5);
        assert_eq!(
            snapshot.controller.unwrap().node_id,
            1,
            "the oldest candidate"
        );
        let topic = &snapshot.topics["t"];
        assert_eq!(topic.partitions[1].leader, 2, "derived from the assignment");
        assert_eq!(
            topic.partitions[1].isr_epochs,
            BTreeMap::from([(1, 2), (2, 2)]),
            "in sync as of the topic's creation"
        );

        let moved = PartitionRecord {
            leader: 1,
            leader_epoch: 1,
            partition_epoch: 1,
            replicas: vec![2, 1],
            isr: vec![1],
            isr_epochs: BTreeMap::from([(1, 4)]),
        };
        cache.put(
            &keys.partition(topic_id, 1),
            &serde_json::to_vec(&moved).unwrap(),
            revision(6, 6),
        );
        cache.delete(&format!("{}/0f", keys.controller_election()), 7);
        let snapshot = cache.publish();
        assert_eq!(snapshot.topics["t"].partitions[1].leader, 1);
        assert_eq!(snapshot.topics["t"].partitions[1].isr, vec![1]);
        assert_eq!(
            snapshot.topics["t"].partitions[1].isr_epochs,
            BTreeMap::from([(1, 4)])
        );
        assert_eq!(snapshot.controller.unwrap().node_id, 2);
        assert_eq!(cache.partition_revision(topic_id, 1), Some(revision(6, 6)));

        cache.delete(&keys.topic("t"), 8);
        let snapshot = cache.publish();
        assert!(snapshot.topics.is_empty());
        assert_eq!(cache.partition_revision(topic_id, 1), None);
    }
}
