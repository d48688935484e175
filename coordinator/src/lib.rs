//! Cluster metadata: which topics exist, their stable ids, partition
//! counts, leader epochs and configs.
//!
//! Today there is one implementation, [`standalone::StandaloneStore`], which
//! keeps the metadata in a file in the broker's data directory (the quick
//! start needs no etcd). The cluster issue adds an etcd-backed store behind
//! the same [`MetadataStore`] interface; only this crate talks to etcd.

pub mod model;
pub mod standalone;

use std::collections::BTreeMap;

pub use model::{ClusterMetadata, PartitionMetadata, TopicMetadata};
pub use standalone::StandaloneStore;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("metadata file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("metadata file {path} is not valid: {reason}")]
    Corrupt { path: String, reason: String },
}

/// Where cluster metadata lives. Mutations are durable when they return.
pub trait MetadataStore: Send + Sync {
    /// A snapshot of the current metadata.
    fn snapshot(&self) -> ClusterMetadata;
    /// Creates a topic; fails if the name is taken.
    fn create_topic(&self, topic: TopicMetadata) -> Result<(), CoordinatorError>;
    /// Deletes a topic by name and returns what it was.
    fn delete_topic(&self, name: &str) -> Result<TopicMetadata, CoordinatorError>;
    /// Replaces a topic's metadata (same name and id): more partitions, new configs.
    fn update_topic(&self, topic: TopicMetadata) -> Result<(), CoordinatorError>;
    /// Replaces the dynamic configs of `resource`: `""` for the cluster-wide
    /// defaults, a node id for one broker. An empty map removes them.
    fn set_broker_configs(
        &self,
        resource: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), CoordinatorError>;
}
