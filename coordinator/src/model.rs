//! The shape of cluster metadata, shared by every store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::security::{AclBinding, ScramCredential};

/// `leader` of a partition that has none (Kafka's -1).
pub const NO_LEADER: i32 = -1;

/// What every broker knows of the cluster: a snapshot, replaced as a whole
/// when anything changes (topics are shared between snapshots by `Arc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Kafka's cluster id: 22 characters of URL-safe base64 of a random UUID.
    pub cluster_id: String,
    pub topics: BTreeMap<String, Arc<TopicMetadata>>,
    /// Dynamic broker configs (Kafka names): under `""` the cluster-wide
    /// defaults, under a node id that broker's own.
    #[serde(default)]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The live brokers: registered, with a session that has not expired.
    #[serde(skip)]
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    #[serde(skip)]
    pub controller: Option<Controller>,
    /// Grows with every change (etcd's revision in cluster mode).
    #[serde(skip)]
    pub revision: i64,
    /// Standalone mode: the first producer id not yet handed out (in
    /// cluster mode it is kept in an etcd key of its own).
    #[serde(default)]
    pub next_producer_id: i64,
    /// SCRAM credentials: by user, then by mechanism (`SCRAM-SHA-256`,
    /// `SCRAM-SHA-512`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram_credentials: BTreeMap<String, BTreeMap<String, ScramCredential>>,
    /// Every ACL of the cluster.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acls: BTreeSet<AclBinding>,
}

/// A live broker as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: i32,
    #[serde(default)]
    pub rack: Option<String>,
    /// Its advertised listeners, by listener name.
    pub endpoints: Vec<Endpoint>,
    /// Which listener other brokers use to reach it.
    #[serde(default)]
    pub inter_broker_listener: String,
    /// It is shutting down in a controlled way (Kafka's controlled
    /// shutdown): the controller moves its leadership to other in-sync
    /// replicas and takes it out of the ISRs, as for a dead broker, but a
    /// partition it alone can lead stays with it until it is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shutting_down: bool,
    /// Distinguishes this broker's sessions: the etcd revision that created
    /// the registration (0 in standalone mode). A broker that lost its
    /// session and registered again has a larger epoch.
    #[serde(skip)]
    pub epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
}

impl BrokerRegistration {
    /// The endpoint of `listener`, where clients that came in through the
    /// listener of that name should connect.
    pub fn endpoint(&self, listener: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.listener == listener)
    }

    /// Where other brokers reach this one.
    pub fn inter_broker_endpoint(&self) -> Option<&Endpoint> {
        self.endpoint(&self.inter_broker_listener)
            .or_else(|| self.endpoints.first())
    }
}

/// The elected controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controller {
    pub node_id: i32,
    /// Grows with every election: the etcd revision of the winning campaign.
    pub epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    /// Stable for the topic's life; a re-created topic gets a new id.
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionMetadata>,
    /// Topic-level config overrides (Kafka names, e.g. `retention.ms`).
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// [`NO_LEADER`] when no replica may lead.
    pub leader: i32,
    /// Grows with every change of leader; stamped on the batches a leader
    /// writes, and the fencing token of everything a leader does.
    pub leader_epoch: i32,
    /// Grows with every change of this state (leader or ISR), as KRaft's
    /// partition epoch: a change based on an older state is refused.
    #[serde(default)]
    pub partition_epoch: i32,
    /// The assigned replicas; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// The in-sync replicas, the leader among them.
    pub isr: Vec<i32>,
    /// The broker epoch (session) each ISR member was in sync in, as of
    /// the last change of this state (KIP-903): a member registered since
    /// under a newer epoch restarted or lost its session, and may have
    /// lost what it had. Kept in the store, so that every controller, and
    /// the member itself, knows it. A member without an entry is trusted
    /// (state written before this was recorded); empty in standalone mode.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub isr_epochs: BTreeMap<i32, i64>,
}

impl PartitionMetadata {
    /// The state of a new partition: led by its first replica, every replica in sync.
    pub fn new(partition: i32, replicas: Vec<i32>) -> PartitionMetadata {
        PartitionMetadata {
            partition,
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            leader_epoch: 0,
            partition_epoch: 0,
            isr: replicas.clone(),
            replicas,
            isr_epochs: BTreeMap::new(),
        }
    }

    /// Whether ISR member `node_id`, now registered at `broker_epoch`, has
    /// restarted (or lost its session) since it was last known in sync.
    pub fn restarted_since_in_sync(&self, node_id: i32, broker_epoch: i64) -> bool {
        self.isr_epochs
            .get(&node_id)
            .is_some_and(|since| broker_epoch > *since)
    }

    /// `self`, a change of `previous`, with the ISR members' epochs
    /// written down: a member kept keeps the epoch it was in sync in; a
    /// newly elected leader, and a member that joins, are in sync in the
    /// epoch they are registered at now (`joining` first: the epoch a
    /// joining follower caught up in, as its fetches named it).
    pub fn with_isr_epochs(
        mut self,
        previous: &PartitionMetadata,
        brokers: &BTreeMap<i32, BrokerRegistration>,
        joining: &BTreeMap<i32, i64>,
    ) -> PartitionMetadata {
        let elected = self.leader != previous.leader;
        self.isr_epochs = self
            .isr
            .iter()
            .filter_map(|id| {
                let kept = previous
                    .isr
                    .contains(id)
                    .then(|| previous.isr_epochs.get(id))
                    .flatten()
                    .filter(|_| !(elected && *id == self.leader));
                let epoch = kept
                    .or_else(|| joining.get(id))
                    .or_else(|| brokers.get(id).map(|broker| &broker.epoch))?;
                Some((*id, *epoch))
            })
            .collect();
        self
    }

    pub fn preferred_leader(&self) -> Option<i32> {
        self.replicas.first().copied()
    }
}

/// CreateTopics' request, once the broker has checked the name and configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Replicas per partition, given by the client instead of a count and
    /// a replication factor.
    pub assignment: Option<Vec<Vec<i32>>>,
    pub configs: BTreeMap<String, String>,
}

/// ElectLeaders' election type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Move leadership to the first replica, if it is alive and in sync.
    Preferred,
    /// Elect a live replica outside the ISR when no ISR member is alive.
    Unclean,
}

/// A leader's request to change its partition's ISR (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    /// The leader epoch and partition epoch the leader knows: the change is
    /// refused if the partition has moved on.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
    /// The broker epoch in which each replica the change adds caught up,
    /// as its replica fetches named it (KIP-903).
    pub joining_epochs: BTreeMap<i32, i64>,
}

impl ClusterMetadata {
    /// Every (topic, partition) of the cluster.
    pub fn all_partitions(&self) -> Vec<(String, i32)> {
        self.topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|partition| (topic.name.clone(), partition.partition))
            })
            .collect()
    }

    pub fn new_cluster() -> Self {
        ClusterMetadata {
            cluster_id: new_cluster_id(),
            topics: BTreeMap::new(),
            broker_configs: BTreeMap::new(),
            brokers: BTreeMap::new(),
            controller: None,
            revision: 0,
            next_producer_id: 0,
            scram_credentials: BTreeMap::new(),
            acls: BTreeSet::new(),
        }
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMetadata>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: Uuid) -> Option<&Arc<TopicMetadata>> {
        self.topics
            .values()
            .find(|topic| topic.topic_id == topic_id)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionMetadata> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }

    pub fn is_alive(&self, node_id: i32) -> bool {
        self.brokers.contains_key(&node_id)
    }

    /// Whether `node_id` may stay in (or lead from) `partition`'s ISR:
    /// alive, and — while the partition has a leader — in the session it
    /// was in sync in. A broker that restarted quickly, before its old
    /// session expired, counts as having died: it leaves the ISR, and
    /// leads only once elected anew. Of a partition left without a
    /// leader, a returning ISR member is the best there is, and may lead.
    pub fn is_eligible(&self, partition: &PartitionMetadata, node_id: i32) -> bool {
        match self.brokers.get(&node_id) {
            None => false,
            Some(broker) if broker.shutting_down => false,
            Some(broker) => {
                partition.leader == NO_LEADER
                    || !partition.restarted_since_in_sync(node_id, broker.epoch)
            }
        }
    }

    pub fn controller_id(&self) -> Option<i32> {
        self.controller.map(|controller| controller.node_id)
    }
}

/// A random topic id. Kafka never hands out the nil id or the one it reserves
/// for metadata (all zeros but the last bit), so neither do we.
pub fn new_topic_id() -> Uuid {
    loop {
        let id = Uuid::new_v4();
        if id.as_u128() > 1 {
            return id;
        }
    }
}

pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = Uuid::new_v4().as_u128();
    // 128 bits in 6-bit groups: 22 characters, as Kafka's Uuid.toString() gives.
    (0..22)
        .map(|_| {
            let c = ALPHABET[(bits & 63) as usize] as char;
            bits >>= 6;
            c
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = ClusterMetadata::new_cluster().cluster_id;
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn a_new_partition_is_led_by_its_first_replica() {
        let partition = PartitionMetadata::new(3, vec![2, 1, 3]);
        assert_eq!(partition.leader, 2);
        assert_eq!(partition.isr, vec![2, 1, 3]);
        assert_eq!(partition.leader_epoch, 0);
        assert_eq!(partition.preferred_leader(), Some(2));
    }

    /// Metadata with brokers registered at the given epochs.
    pub(crate) fn registered(epochs: &[(i32, i64)]) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::new_cluster();
        for (node_id, epoch) in epochs {
            metadata.brokers.insert(
                *node_id,
                BrokerRegistration {
                    node_id: *node_id,
                    rack: None,
                    endpoints: Vec::new(),
                    inter_broker_listener: String::new(),
                    shutting_down: false,
                    epoch: *epoch,
                },
            );
        }
        metadata
    }

    #[test]
    fn a_broker_registered_anew_since_it_was_in_sync_is_not_eligible() {
        let mut partition = PartitionMetadata::new(0, vec![1, 2, 3]);
        partition.isr_epochs = BTreeMap::from([(1, 10), (2, 11), (3, 12)]);
        // Broker 1 restarted (epoch 20), 3 is gone, 2 is as it was.
        let metadata = registered(&[(1, 20), (2, 11)]);
        assert!(!metadata.is_eligible(&partition, 1), "restarted");
        assert!(metadata.is_eligible(&partition, 2));
        assert!(!metadata.is_eligible(&partition, 3), "dead");
        // Once the partition is offline, a returning member may lead it.
        partition.leader = NO_LEADER;
        assert!(metadata.is_eligible(&partition, 1));
        // A member the state has no epoch for is trusted.
        partition.leader = 2;
        partition.isr_epochs.remove(&1);
        assert!(metadata.is_eligible(&partition, 1));
    }

    #[test]
    fn isr_epochs_are_kept_for_members_that_stay_and_taken_anew_for_the_elected() {
        let mut previous = PartitionMetadata::new(0, vec![1, 2, 3]);
        previous.isr = vec![1, 2];
        previous.isr_epochs = BTreeMap::from([(1, 10), (2, 11)]);
        let brokers = registered(&[(1, 20), (2, 21), (3, 22)]).brokers;
        // The leader stays, 3 joins having caught up in epoch 15: 2 keeps
        // its epoch even though it has re-registered meanwhile.
        let joined = PartitionMetadata {
            isr: vec![1, 2, 3],
            ..previous.clone()
        }
        .with_isr_epochs(&previous, &brokers, &BTreeMap::from([(3, 15)]));
        assert_eq!(
            joined.isr_epochs,
            BTreeMap::from([(1, 10), (2, 11), (3, 15)])
        );
        // 2 is elected: in sync in the session it is registered in now.
        let elected = PartitionMetadata {
            leader: 2,
            leader_epoch: 1,
            isr: vec![2],
            ..previous.clone()
        }
        .with_isr_epochs(&previous, &brokers, &BTreeMap::new());
        assert_eq!(elected.isr_epochs, BTreeMap::from([(2, 21)]));
    }
}
