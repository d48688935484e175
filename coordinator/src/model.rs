//! The shape of cluster metadata, shared by every store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Kafka's cluster id: 22 characters of URL-safe base64 of a random UUID.
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMetadata>,
    /// Dynamic broker configs (Kafka names): under `""` the cluster-wide
    /// defaults, under a node id that broker's own.
    #[serde(default)]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
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
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl ClusterMetadata {
    pub fn new_cluster() -> Self {
        ClusterMetadata {
            cluster_id: new_cluster_id(),
            topics: BTreeMap::new(),
            broker_configs: BTreeMap::new(),
        }
    }

    pub fn topic_by_id(&self, topic_id: Uuid) -> Option<&TopicMetadata> {
        self.topics
            .values()
            .find(|topic| topic.topic_id == topic_id)
    }
}

impl TopicMetadata {
    /// A new topic with a fresh id, every partition led by `node_id` at epoch 0.
    pub fn new(
        name: &str,
        partition_count: i32,
        node_id: i32,
        configs: BTreeMap<String, String>,
    ) -> Self {
        let partitions = (0..partition_count)
            .map(|partition| PartitionMetadata {
                partition,
                leader: node_id,
                leader_epoch: 0,
                replicas: vec![node_id],
                isr: vec![node_id],
            })
            .collect();
        TopicMetadata {
            name: name.to_string(),
            topic_id: new_topic_id(),
            partitions,
            configs,
        }
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

fn new_cluster_id() -> String {
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
mod tests {
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
    fn new_topic_has_one_replica_per_partition() {
        let topic = TopicMetadata::new("t", 3, 1, BTreeMap::new());
        assert_eq!(topic.partitions.len(), 3);
        assert!(topic
            .partitions
            .iter()
            .all(|p| p.leader == 1 && p.replicas == vec![1]));
        assert_ne!(topic.topic_id, Uuid::nil());
    }
}
