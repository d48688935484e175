//! Cluster metadata: the live brokers, the controller, topics with their
//! stable ids, partitions with their leaders, leader epochs, replicas and
//! ISR, and configs. The only crate that talks to etcd.
//!
//! Layout:
//! - [`model`]: the metadata every broker sees ([`ClusterMetadata`]).
//! - [`MetadataStore`]: where it lives, with two implementations the broker
//!   cannot tell apart: [`standalone::StandaloneStore`] (a file in the data
//!   directory, one broker, no etcd: the quick start) and
//!   [`etcd::EtcdStore`] (cluster mode, when `etcd.endpoints` is set).
//! - [`security`]: SCRAM credentials and ACLs as stored.
//! - [`placement`]: where the replicas of new topics and partitions go.
//! - [`election`]: the leader election rules.
//! - [`etcd::controller`]: the controller of a cluster on etcd — elected
//!   through etcd's election API, it moves leadership when brokers die or
//!   return and runs preferred-leader elections; its writes are fenced by
//!   its election.
//!
//! Layers: `model`, `election`, `placement` (pure) below `standalone` and
//! `etcd`; `scripts/module-graph.py` checks that no import goes back up.

pub mod election;
pub mod etcd;
pub mod model;
pub mod placement;
pub mod security;
pub mod standalone;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

pub use election::ElectionError;
pub use model::{
    BrokerRegistration, ClusterMetadata, Controller, ElectionType, Endpoint, IsrChange, NewTopic,
    PartitionMetadata, TopicMetadata, NO_LEADER,
};
pub use security::{AclBinding, ScramChange, ScramCredential};
pub use standalone::StandaloneStore;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("Topic '{0}' already exists.")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("this broker is not the controller")]
    NotController,
    /// A change based on a partition state that has moved on (a newer leader
    /// epoch or partition epoch), or from a broker that is not its leader.
    #[error("refused: {0}")]
    Fenced(String),
    /// etcd could not be reached, or this broker's session is gone.
    #[error("cluster metadata unavailable: {0}")]
    Unavailable(String),
    #[error("metadata file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("metadata file {path} is not valid: {reason}")]
    Corrupt { path: String, reason: String },
}

/// What ElectLeaders did to each partition.
pub type ElectionResults = Vec<((String, i32), Result<(), ElectionError>)>;

/// Where cluster metadata lives.
///
/// Reads come from a snapshot kept current by the store (in cluster mode,
/// fed by etcd watches); every change is durable in the store when the
/// method returns, and the snapshot already shows it.
#[async_trait]
pub trait MetadataStore: Send + Sync {
    /// The metadata now.
    fn snapshot(&self) -> Arc<ClusterMetadata>;
    /// Every new snapshot, as it arrives.
    fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>>;
    /// Whether this broker can still prove its session (no successful
    /// keep-alive for longer than the session timeout minus a margin, on a
    /// monotonic clock, and it is not). A broker without one must not act
    /// as a leader: another may have been elected.
    fn session_valid(&self) -> bool;
    /// The epoch of the session this broker is registered in now: the
    /// etcd revision that created its registration (0 in standalone mode);
    /// `None` while it is not registered.
    fn broker_epoch(&self) -> Option<i64> {
        Some(0)
    }
    /// Every change of [`Self::broker_epoch`]; `None` where it never
    /// changes (standalone).
    fn subscribe_broker_epoch(&self) -> Option<watch::Receiver<Option<i64>>> {
        None
    }
    /// Unclean leader elections this broker made as controller (a replica
    /// outside the ISR made leader); none where nothing is elected
    /// (standalone).
    fn unclean_leader_elections(&self) -> u64 {
        0
    }
    /// Joins the cluster: registers this broker, which from now on counts
    /// as alive, and stands for controller. Called once its logs are open.
    async fn join(&self) -> Result<(), CoordinatorError>;
    /// Leaves the cluster: resigns as controller and ends the session, so
    /// that other brokers take over at once rather than after a timeout.
    async fn leave(&self);
    /// Starts a controlled shutdown: this broker stays registered, but the
    /// controller moves its leadership to other in-sync replicas and takes
    /// it out of the ISRs ([`BrokerRegistration::shutting_down`]). Nothing
    /// to do where nothing is replicated (standalone).
    async fn begin_controlled_shutdown(&self) -> Result<(), CoordinatorError> {
        Ok(())
    }

    /// Creates a topic (or, with `validate_only`, checks that it could be),
    /// its replicas placed on live brokers.
    async fn create_topic(
        &self,
        request: NewTopic,
        validate_only: bool,
    ) -> Result<Arc<TopicMetadata>, CoordinatorError>;
    /// Grows a topic to `count` partitions.
    async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<Arc<TopicMetadata>, CoordinatorError>;
    /// Deletes a topic by name and returns what it was.
    async fn delete_topic(&self, name: &str) -> Result<Arc<TopicMetadata>, CoordinatorError>;
    /// Replaces a topic's config overrides.
    async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), CoordinatorError>;
    /// Replaces the dynamic configs of `resource`: `""` for the cluster-wide
    /// defaults, a node id for one broker. An empty map removes them.
    async fn set_broker_configs(
        &self,
        resource: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), CoordinatorError>;
    /// ElectLeaders: on the given partitions, or on all when `None`. Only
    /// the controller elects ([`CoordinatorError::NotController`] elsewhere).
    async fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<ElectionResults, CoordinatorError>;
    /// A leader changes its partition's ISR; returns the new state.
    async fn alter_isr(&self, change: IsrChange) -> Result<PartitionMetadata, CoordinatorError>;
    /// A block of `count` producer ids that no broker of the cluster was
    /// given before (idempotent and transactional producers): returns the
    /// first. Durable before it returns, so a restart never hands one out twice.
    async fn allocate_producer_ids(&self, count: i64) -> Result<i64, CoordinatorError>;
    /// Creates, replaces and deletes SCRAM credentials (checked by the
    /// caller against the snapshot: a deletion of nothing is a no-op here).
    async fn alter_scram_credentials(
        &self,
        changes: Vec<ScramChange>,
    ) -> Result<(), CoordinatorError>;
    /// Adds ACLs (one already there stays, once).
    async fn create_acls(&self, acls: Vec<AclBinding>) -> Result<(), CoordinatorError>;
    /// Removes exactly these ACLs (those absent are ignored).
    async fn delete_acls(&self, acls: Vec<AclBinding>) -> Result<(), CoordinatorError>;
}

/// Checks an ISR change against the current state of the partition: it
/// must come from the leader at the current epochs, and the new ISR must
/// be replicas including the leader. Returns the state to write.
pub fn check_isr_change(
    metadata: &ClusterMetadata,
    node_id: i32,
    change: &IsrChange,
) -> Result<PartitionMetadata, CoordinatorError> {
    let topic = metadata
        .topics
        .get(&change.topic)
        .filter(|topic| topic.topic_id == change.topic_id)
        .ok_or_else(|| CoordinatorError::UnknownTopic(change.topic.clone()))?;
    let current = usize::try_from(change.partition)
        .ok()
        .and_then(|index| topic.partitions.get(index))
        .ok_or_else(|| CoordinatorError::UnknownTopic(change.topic.clone()))?;
    if current.leader != node_id
        || current.leader_epoch != change.leader_epoch
        || current.partition_epoch != change.partition_epoch
    {
        return Err(CoordinatorError::Fenced(format!(
            "{}-{}: broker {node_id} at leader epoch {} / partition epoch {}, but the leader is {} at {} / {}",
            change.topic,
            change.partition,
            change.leader_epoch,
            change.partition_epoch,
            current.leader,
            current.leader_epoch,
            current.partition_epoch
        )));
    }
    if !change.isr.contains(&node_id) || change.isr.iter().any(|id| !current.replicas.contains(id))
    {
        return Err(CoordinatorError::Fenced(format!(
            "ISR {:?} must contain the leader and only replicas {:?}",
            change.isr, current.replicas
        )));
    }
    // A joining replica must be alive in the session it caught up in
    // (KIP-903's INELIGIBLE_REPLICA): not a dead follower whose last fetch
    // happened to be caught up, nor one that restarted since.
    for id in change.isr.iter().filter(|id| !current.isr.contains(id)) {
        let registered = metadata.brokers.get(id).map(|broker| broker.epoch);
        let caught_up_in = change.joining_epochs.get(id).copied().or(registered);
        if registered.is_none() || registered != caught_up_in {
            return Err(CoordinatorError::Fenced(format!(
                "{}-{}: replica {id} may not join the ISR: registered at {registered:?}, caught up at {caught_up_in:?}",
                change.topic, change.partition
            )));
        }
    }
    if let Some(me) = metadata.brokers.get(&node_id) {
        if current.restarted_since_in_sync(node_id, me.epoch) {
            return Err(CoordinatorError::Fenced(format!(
                "{}-{}: broker {node_id} restarted since it was elected; it leads again once elected anew",
                change.topic, change.partition
            )));
        }
    }
    Ok(PartitionMetadata {
        isr: change.isr.clone(),
        partition_epoch: current.partition_epoch + 1,
        ..current.clone()
    }
    .with_isr_epochs(current, &metadata.brokers, &change.joining_epochs))
}
