//! The etcd key layout, under a prefix (`etcd.prefix`, default `/kbroker`):
//!
//! ```text
//! <p>/cluster_id                    the cluster id; written once, by whoever comes first
//! <p>/brokers/<node id>             a live broker's registration (JSON), under its session lease
//! <p>/controller/<lease, hex>       controller candidates (etcd's election API); the oldest leads
//! <p>/topics/<name>                 topic id, replica assignment, config overrides (JSON)
//! <p>/partitions/<topic id>/<n>     leader, leader epoch, partition epoch, replicas, ISR (JSON);
//!                                   absent until the first change: a new partition's state
//!                                   follows from the assignment
//! <p>/broker-configs/<resource>     dynamic broker configs (JSON); `cluster` is resource ""
//! <p>/producer-ids                  {"next": N}: producer ids below N were handed out
//! <p>/scram/<mechanism>/<user>      a user's SCRAM credential (salt, iterations, keys; JSON)
//! <p>/acls/<binding, base64url>     one ACL (JSON); the key is its JSON, so one ACL is one key
//! ```

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::security::AclBinding;

/// Resource name of the cluster-wide dynamic broker configs in its key.
const CLUSTER_RESOURCE: &str = "cluster";

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    ClusterId,
    Broker(i32),
    ControllerCandidate,
    Topic(String),
    Partition(Uuid, i32),
    BrokerConfigs(String),
    /// (mechanism, user)
    Scram(String, String),
    Acl,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Everything of this cluster: the range a broker reads and watches.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn cluster_id(&self) -> String {
        format!("{}/cluster_id", self.prefix)
    }

    pub fn broker(&self, node_id: i32) -> String {
        format!("{}/brokers/{node_id}", self.prefix)
    }

    /// The election's name; candidates' keys are `<name>/<lease hex>`.
    pub fn controller_election(&self) -> String {
        format!("{}/controller", self.prefix)
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}/topics/{name}", self.prefix)
    }

    pub fn partition(&self, topic_id: Uuid, partition: i32) -> String {
        format!(
            "{}/partitions/{}/{partition}",
            self.prefix,
            topic_id.simple()
        )
    }

    pub fn partitions_of(&self, topic_id: Uuid) -> String {
        format!("{}/partitions/{}/", self.prefix, topic_id.simple())
    }

    /// The producer id allocator (not part of the snapshot).
    pub fn producer_ids(&self) -> String {
        format!("{}/producer-ids", self.prefix)
    }

    pub fn broker_configs(&self, resource: &str) -> String {
        let resource = if resource.is_empty() {
            CLUSTER_RESOURCE
        } else {
            resource
        };
        format!("{}/broker-configs/{resource}", self.prefix)
    }

    pub fn scram(&self, mechanism: &str, user: &str) -> String {
        format!("{}/scram/{mechanism}/{user}", self.prefix)
    }

    /// The key of one ACL: its JSON in URL-safe base64, so that creating
    /// an ACL twice writes one key and deleting it names that key.
    pub fn acl(&self, acl: &AclBinding) -> String {
        let json = serde_json::to_vec(acl).expect("an ACL serializes");
        format!("{}/acls/{}", self.prefix, URL_SAFE_NO_PAD.encode(json))
    }

    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        if rest == "cluster_id" {
            return Some(Key::ClusterId);
        }
        let (kind, rest) = rest.split_once('/')?;
        match kind {
            "brokers" => rest.parse().ok().map(Key::Broker),
            "controller" => Some(Key::ControllerCandidate),
            "topics" if !rest.is_empty() => Some(Key::Topic(rest.to_string())),
            "partitions" => {
                let (topic_id, partition) = rest.split_once('/')?;
                Some(Key::Partition(
                    Uuid::try_parse(topic_id).ok()?,
                    partition.parse().ok()?,
                ))
            }
            "broker-configs" => Some(Key::BrokerConfigs(if rest == CLUSTER_RESOURCE {
                String::new()
            } else {
                rest.to_string()
            })),
            "scram" => {
                let (mechanism, user) = rest.split_once('/')?;
                Some(Key::Scram(mechanism.to_string(), user.to_string()))
            }
            "acls" => Some(Key::Acl),
            _ => None,
        }
    }
}

/// The value at `<p>/topics/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub topic_id: Uuid,
    /// The replicas of each partition, as assigned at creation.
    pub assignment: Vec<Vec<i32>>,
    /// For each partition, the metadata revision its assignment was
    /// planned at: every replica's broker epoch was at most this, so one
    /// registered under a later epoch restarted since. Until a partition's
    /// state is first written, its ISR members are in sync as of this.
    /// Missing (records written before this was kept): the topic key's
    /// create revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assigned_at: Vec<i64>,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// The value at `<p>/producer-ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdsRecord {
    pub next: i64,
}

/// The value at `<p>/partitions/<topic id>/<n>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// See [`crate::PartitionMetadata::isr_epochs`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub isr_epochs: BTreeMap<i32, i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let keys = Keys::new("/kbroker/");
        let id = Uuid::new_v4();
        for (key, parsed) in [
            (keys.cluster_id(), Key::ClusterId),
            (keys.broker(3), Key::Broker(3)),
            (
                format!("{}/694d7a", keys.controller_election()),
                Key::ControllerCandidate,
            ),
            (keys.topic("orders.v1"), Key::Topic("orders.v1".into())),
            (keys.partition(id, 7), Key::Partition(id, 7)),
            (keys.broker_configs(""), Key::BrokerConfigs(String::new())),
            (keys.broker_configs("2"), Key::BrokerConfigs("2".into())),
            (
                keys.scram("SCRAM-SHA-256", "a/b"),
                Key::Scram("SCRAM-SHA-256".into(), "a/b".into()),
            ),
        ] {
            assert_eq!(keys.parse(&key), Some(parsed), "{key}");
        }
        assert_eq!(keys.parse("/kbroker2/topics/x"), None);
        assert_eq!(keys.parse("/kbroker/brokers/x"), None);
    }
}
