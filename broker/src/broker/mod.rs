//! The broker: the root that owns everything else — the cluster's topics
//! and their partitions as this broker applied them, the metadata store,
//! the group and transaction coordinators, the replica fetchers and the
//! connections to other brokers — and topic administration through the
//! store.
//!
//! Topics and partitions change only by applying a snapshot of the cluster
//! metadata (`cluster_view`): admin requests write to the metadata store,
//! then wait until the snapshot that shows their change is applied here.
//! Lookups take a short read lock on the topic map and then work on an
//! `Arc<Partition>` without it.
//!
//! Children: `cluster_view` (applying snapshots), `replication` (the ISR
//! and high-watermark checkpoint loops), `txn_markers` (writing
//! transaction markers to partition leaders).

pub mod cluster_view;
pub mod replication;
pub mod txn_markers;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use coordinator::{ClusterMetadata, MetadataStore, NewTopic, TopicMetadata};
use storage::LogConfig;
use tokio::sync::watch;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::data_dir::DataDir;
use crate::errors::TopicError;
use crate::group::GroupCoordinator;
use crate::internal_topics::OFFSETS_TOPIC;
use crate::partition::{LocalNode, Partition};
use crate::topic_config;
use crate::topics::{is_internal, validate_topic_name, Topic, Topics};

pub struct Broker {
    pub config: BrokerConfig,
    pub(crate) node: Arc<LocalNode>,
    pub(crate) store: Arc<dyn MetadataStore>,
    /// Held for its lock: no other broker process opens the directory meanwhile.
    _data_dir: DataDir,
    pub(crate) topics: RwLock<Topics>,
    /// Serializes topic administration on this broker.
    admin: tokio::sync::Mutex<()>,
    pub groups: GroupCoordinator,
    /// Hands out producer ids (InitProducerId).
    pub producer_ids: crate::txn::ProducerIds,
    pub transactions: crate::txn::TransactionCoordinator,
    /// Connections to the other brokers (markers, transaction verification).
    pub peers: crate::peers::Peers,
    /// This broker's followers' fetches from their leaders.
    pub(crate) fetchers: crate::replica_fetcher::ReplicaFetchers,
    /// The topic-config defaults: static broker configs with the dynamic
    /// ones applied.
    pub(crate) log_defaults: RwLock<LogConfig>,
    /// The revision of the last metadata snapshot applied to the partitions.
    pub(crate) applied: watch::Sender<i64>,
    /// The last snapshot applied; held while one is applied.
    pub(crate) last_applied: Mutex<Arc<ClusterMetadata>>,
    /// This broker's session epoch when the partitions' roles were last
    /// decided (changed only under `last_applied`'s lock).
    pub(crate) decided_at_epoch: Mutex<Option<i64>>,
    /// Who may do what (ACLs; allows everything when no authorizer is
    /// configured).
    pub(crate) authorizer: crate::authorizer::Authorizer,
    /// Counters for `/metrics` (the gauges are computed when scraped).
    pub(crate) metrics: crate::metrics::Metrics,
}

impl Broker {
    /// Locks the data directory, checks that it belongs to this cluster,
    /// and opens the logs of every replica the metadata gives this broker
    /// (running recovery).
    pub fn open(config: BrokerConfig, store: Arc<dyn MetadataStore>) -> anyhow::Result<Broker> {
        let data_dir = DataDir::lock(&config.log_dir)?;
        let snapshot = store.snapshot();
        data_dir.check_identity(&snapshot.cluster_id, config.node_id)?;
        crate::data_dir::remove_deleted_directories(&config.log_dir);
        let groups = GroupCoordinator::new(config.groups.clone());
        let connector = crate::peers::Connector::new(
            store.clone(),
            crate::tls::inter_broker_security(&config)?,
        );
        let fetchers = crate::replica_fetcher::ReplicaFetchers::new(
            config.node_id,
            connector.clone(),
            config.replication.replica_fetch,
        );
        let producer_ids = crate::txn::ProducerIds::new(store.clone());
        let transactions = crate::txn::TransactionCoordinator::new(config.transactions.clone());
        let broker = Broker {
            producer_ids,
            transactions,
            peers: crate::peers::Peers::new(connector),
            fetchers,
            node: Arc::new(LocalNode::new(config.node_id, store.clone())),
            authorizer: crate::authorizer::Authorizer::new(
                config.authorizer.clone(),
                store.clone(),
            ),
            log_defaults: RwLock::new(config.log.clone()),
            metrics: crate::metrics::Metrics::new(config.metrics_listener.is_some()),
            config,
            store,
            _data_dir: data_dir,
            topics: RwLock::new(Topics::default()),
            admin: tokio::sync::Mutex::new(()),
            groups,
            applied: watch::channel(0).0,
            decided_at_epoch: Mutex::new(None),
            last_applied: Mutex::new(Arc::new(ClusterMetadata {
                cluster_id: snapshot.cluster_id.clone(),
                revision: -1,
                ..ClusterMetadata::new_cluster()
            })),
        };
        if let Err(failures) = broker.apply(&snapshot) {
            anyhow::bail!("opening replicas failed: {}", failures.join("; "));
        }
        broker.remove_strays();
        tracing::info!(topics = snapshot.topics.len(), cluster_id = %snapshot.cluster_id, "opened logs");
        Ok(broker)
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The cluster metadata now (the store's snapshot; it may be a step
    /// ahead of what the partitions have applied).
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.store.snapshot()
    }

    pub fn cluster_id(&self) -> String {
        self.metadata().cluster_id.clone()
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// Whether this broker can prove its session (see [`MetadataStore::session_valid`]).
    pub fn session_valid(&self) -> bool {
        self.node.session_valid()
    }

    /// Makes the partitions show the store's snapshot as of now (after a
    /// change this broker made), applying it here unless the apply loop
    /// already has.
    pub fn wait_applied(&self) {
        let snapshot = self.metadata();
        if *self.applied.borrow() >= snapshot.revision {
            return;
        }
        if let Err(failures) = self.apply(&snapshot) {
            tracing::error!(failures = failures.len(), first = %failures[0], "some replicas could not be opened");
        }
    }

    /// Creates `__consumer_offsets` the first time a group needs it, as
    /// Kafka does, with `offsets.topic.replication.factor` replicas (fewer
    /// if fewer brokers are alive).
    pub async fn ensure_offsets_topic(&self) -> Result<(), TopicError> {
        let config = &self.config.groups;
        self.ensure_internal_topic(
            OFFSETS_TOPIC,
            config.offsets_topic_partitions,
            config.offsets_topic_replication_factor,
            config.offsets_topic_segment_bytes,
            None,
        )
        .await
    }

    /// Creates `__transaction_state` the first time a transactional
    /// producer needs it, with `transaction.state.log.replication.factor`
    /// replicas (fewer if fewer brokers are alive) and
    /// `transaction.state.log.min.isr` (capped by the replicas, so that a
    /// single broker can run transactions).
    pub async fn ensure_transaction_state_topic(&self) -> Result<(), TopicError> {
        let config = &self.config.transactions;
        self.ensure_internal_topic(
            crate::internal_topics::TRANSACTION_STATE_TOPIC,
            config.state_log_partitions,
            config.state_log_replication_factor,
            config.state_log_segment_bytes,
            Some(config.state_log_min_isr),
        )
        .await
    }

    /// Creates a compacted internal topic unless it exists.
    async fn ensure_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        segment_bytes: u64,
        min_insync_replicas: Option<usize>,
    ) -> Result<(), TopicError> {
        if self.topic(name).is_some() {
            return Ok(());
        }
        let live = self.metadata().brokers.len().max(1);
        let replication_factor = replication_factor.min(live as i16);
        let mut configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("compression.type".to_string(), "producer".to_string()),
            ("segment.bytes".to_string(), segment_bytes.to_string()),
        ]);
        if let Some(min) = min_insync_replicas {
            configs.insert(
                "min.insync.replicas".to_string(),
                min.min(replication_factor as usize).to_string(),
            );
        }
        match self
            .create_topic(name, partitions, replication_factor, None, configs, false)
            .await
        {
            Ok(_) => Ok(()),
            Err(TopicError::Metadata(coordinator::CoordinatorError::TopicExists(_))) => {
                self.wait_applied();
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Forgets, in every hosted partition, the producers silent for
    /// `producer.id.expiration.ms` that have no open transaction.
    pub fn expire_producers(&self, now_ms: i64) {
        let expiration_ms = self.config.transactions.producer_id_expiration_ms;
        let mut expired = 0;
        for partition in self.hosted_partitions() {
            expired += partition
                .with_log(|log| log.expire_producers(now_ms, expiration_ms))
                .unwrap_or(0);
        }
        if expired > 0 {
            tracing::info!(expired, "expired producer ids");
        }
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().by_name.get(name).cloned()
    }

    pub fn topic_by_id(&self, topic_id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().by_id.get(&topic_id).cloned()
    }

    pub fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().by_name.values().cloned().collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.topic(topic)?.partition(partition).cloned()
    }

    /// Every partition of which this broker holds a replica.
    pub fn hosted_partitions(&self) -> Vec<Arc<Partition>> {
        self.all_topics()
            .iter()
            .flat_map(|topic| topic.partitions.iter())
            .filter(|partition| partition.is_hosted())
            .cloned()
            .collect()
    }

    pub fn notify_appended(&self) {
        self.node.notify_appended();
    }

    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.node.subscribe_appends()
    }

    /// Creates a topic (or, with `validate_only`, checks that it could be).
    /// Returns once this broker's partitions show it.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignment: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<TopicMetadata>, TopicError> {
        validate_topic_name(name)?;
        if assignment.is_none() && partitions < 1 {
            return Err(TopicError::InvalidPartitions(format!(
                "Number of partitions must be at least 1, got {partitions}."
            )));
        }
        for (key, value) in &configs {
            topic_config::validate(key, value).map_err(TopicError::InvalidConfig)?;
        }
        let _admin = self.admin.lock().await;
        let request = NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            assignment,
            configs,
        };
        let topic = self.store.create_topic(request, validate_only).await?;
        if !validate_only {
            self.wait_applied();
            tracing::info!(topic = name, partitions = topic.partitions.len(), topic_id = %topic.topic_id, "created topic");
        }
        Ok(topic)
    }

    /// Creates a topic with the broker's defaults unless it exists; returns it either way.
    pub async fn auto_create_topic(&self, name: &str) -> Result<Arc<TopicMetadata>, TopicError> {
        let created = self
            .create_topic(
                name,
                self.config.num_partitions,
                self.config.default_replication_factor,
                None,
                BTreeMap::new(),
                false,
            )
            .await;
        match created {
            Err(TopicError::Metadata(coordinator::CoordinatorError::TopicExists(_))) => self
                .metadata()
                .topics
                .get(name)
                .cloned()
                .ok_or_else(|| TopicError::Unknown(name.to_string())),
            other => other,
        }
    }

    /// CreatePartitions: grows a topic to `count` partitions (or, with
    /// `validate_only`, checks that it could).
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<Arc<TopicMetadata>, TopicError> {
        if is_internal(name) {
            return Err(TopicError::InvalidPartitions(format!(
                "The partition count of the internal topic {name} cannot change."
            )));
        }
        let _admin = self.admin.lock().await;
        let grown = self
            .store
            .create_partitions(name, count, assignment, validate_only)
            .await?;
        if !validate_only {
            self.wait_applied();
            tracing::info!(topic = name, to = count, "added partitions");
        }
        Ok(grown)
    }

    /// Replaces a topic's config overrides (or, with `validate_only`, checks
    /// them). The new configs are durable before they apply, and they apply
    /// to every partition's log at once, without a restart.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        for (key, value) in &configs {
            topic_config::validate(key, value).map_err(TopicError::InvalidConfig)?;
        }
        let _admin = self.admin.lock().await;
        let Some(topic) = self.metadata().topics.get(name).cloned() else {
            return Err(TopicError::Unknown(name.to_string()));
        };
        if validate_only || configs == topic.configs {
            return Ok(());
        }
        self.store.set_topic_configs(name, configs).await?;
        self.wait_applied();
        tracing::info!(topic = name, "topic configs changed");
        Ok(())
    }

    /// Deletes a topic: metadata first (durable), then, as each broker
    /// applies that, its logs.
    pub async fn delete_topic(&self, name: &str) -> Result<Arc<TopicMetadata>, TopicError> {
        if is_internal(name) {
            return Err(TopicError::InvalidName(
                name.to_string(),
                "internal topics cannot be deleted",
            ));
        }
        let _admin = self.admin.lock().await;
        let deleted = self.store.delete_topic(name).await?;
        self.wait_applied();
        tracing::info!(topic = name, topic_id = %deleted.topic_id, "deleted topic");
        Ok(deleted)
    }

    /// Enforces retention on every partition.
    pub fn enforce_retention(&self) {
        let now = now_ms();
        for partition in self.hosted_partitions() {
            let enforced =
                partition.with_log(|log| (log.enforce_retention(now), log.take_after_lock()));
            // Checkpoints and the deleted segments' files are written and
            // removed after the lock is released: either may wait long for
            // the disk. This also does what other paths (DeleteRecords, the
            // cleaner, followers) left.
            let enforced = enforced.map(|(enforced, after_lock)| {
                partition.run_after_lock(after_lock);
                enforced
            });
            match enforced {
                Ok(Ok(0)) | Err(_) => {}
                Ok(Ok(deleted)) => {
                    tracing::info!(topic = %partition.topic, partition = partition.index, deleted, "retention deleted segments");
                }
                Ok(Err(error)) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, %error, "retention failed");
                }
            }
        }
    }

    /// The topic-config defaults in force now.
    pub fn log_defaults(&self) -> LogConfig {
        self.log_defaults.read().clone()
    }

    /// The dynamic broker configs of `resource` (`""`: cluster-wide defaults;
    /// a node id: that broker's).
    pub fn dynamic_broker_configs(&self, resource: &str) -> BTreeMap<String, String> {
        self.metadata()
            .broker_configs
            .get(resource)
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces the dynamic configs of `resource` (or, with `validate_only`,
    /// checks them). Only [`crate::config::DYNAMIC_BROKER_CONFIGS`] may be
    /// set; the new defaults apply to every topic's logs at once.
    pub async fn set_broker_configs(
        &self,
        resource: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let fixed: Vec<&str> = configs
            .keys()
            .map(String::as_str)
            .filter(|key| {
                !crate::config::DYNAMIC_BROKER_CONFIGS.contains(key)
                    && !crate::config::is_dynamic_security_config(key)
            })
            .collect();
        if !fixed.is_empty() {
            return Err(TopicError::NotDynamic(fixed.join(", ")));
        }
        let _admin = self.admin.lock().await;
        let node = self.config.node_id.to_string();
        let mut cluster = self.dynamic_broker_configs("");
        let mut own = self.dynamic_broker_configs(&node);
        if resource.is_empty() {
            cluster = configs.clone();
        } else {
            own = configs.clone();
        }
        self.config
            .log_with_dynamic(Some(&cluster), Some(&own))
            .map_err(|error| TopicError::InvalidConfig(format!("{error:#}")))?;
        if validate_only {
            return Ok(());
        }
        self.store.set_broker_configs(resource, configs).await?;
        self.wait_applied();
        tracing::info!(resource, "dynamic broker configs changed");
        Ok(())
    }

    /// One pass of the log cleaner over every compacted partition.
    pub fn clean_logs(&self) {
        let now = now_ms();
        for partition in self.hosted_partitions() {
            match partition.with_log(|log| log.clean(now)) {
                Ok(Ok(stats)) if stats.segments_cleaned > 0 => tracing::info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    segments = stats.segments_cleaned,
                    bytes_before = stats.bytes_before,
                    bytes_after = stats.bytes_after,
                    records_removed = stats.records_removed,
                    tombstones_removed = stats.tombstones_removed,
                    "compacted"
                ),
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(error)) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, %error, "compaction failed");
                }
            }
        }
    }

    /// Stops fetching, then flushes and closes every log, leaving
    /// clean-shutdown markers (and the high watermarks).
    pub fn close(&self) {
        self.fetchers.shutdown();
        for partition in self.hosted_partitions() {
            if partition.state().replicas.len() > 1 {
                let _ = partition.with_log(|log| log.checkpoint_high_watermark());
            }
            if let Some(log) = partition.take_log() {
                if let Err(error) = log.close() {
                    tracing::error!(topic = %partition.topic, partition = partition.index, %error, "closing log failed");
                }
            }
        }
    }
}
