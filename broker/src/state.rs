//! The broker's state: the cluster's topics and, for each partition, this
//! broker's view of its state (leader, epochs, replicas, ISR) and — where
//! this broker holds a replica — its log.
//!
//! Topics and partitions change only by applying a snapshot of the cluster
//! metadata (`cluster_view`): admin requests write to the metadata store,
//! then wait until the snapshot that shows their change is applied here.
//! Lookups take a short read lock on the topic map and then work on an
//! `Arc<Partition>` without it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use coordinator::{ClusterMetadata, MetadataStore, NewTopic, PartitionMetadata, TopicMetadata};
use storage::{AppendInfo, LogConfig, PartitionLog, RollSync, StorageError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::data_dir::DataDir;
use crate::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::topic_config;

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic name {0:?} is invalid: {1}")]
    InvalidName(String, &'static str),
    #[error("unknown topic {0}")]
    Unknown(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidPartitions(String),
    /// A broker config that cannot change at run time.
    #[error("Cannot update these configs dynamically: {0}")]
    NotDynamic(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(#[from] coordinator::CoordinatorError),
}

/// This broker, as its partitions see it: which node it is, and whether
/// it may act as a leader now (it can prove its session).
pub struct LocalNode {
    pub node_id: i32,
    store: Arc<dyn MetadataStore>,
    /// Bumped after every append and every move of a high watermark, so
    /// that waiting fetches re-check.
    appended: watch::Sender<u64>,
}

impl LocalNode {
    pub fn session_valid(&self) -> bool {
        self.store.session_valid()
    }

    /// Whether this broker may act as the leader of a partition in
    /// `state`: named its leader, and in the session the state names it
    /// in sync in. After a restart (or a lost session) it waits to be
    /// elected anew, its log possibly short of what it had acknowledged;
    /// not registered (yet, or again), it does not lead at all.
    pub fn named_leader(&self, state: &PartitionMetadata) -> bool {
        state.leader == self.node_id
            && self
                .store
                .broker_epoch()
                .is_some_and(|epoch| !state.restarted_since_in_sync(self.node_id, epoch))
    }

    /// This broker's registration epoch as its metadata shows it.
    pub fn broker_epoch(&self) -> Option<i64> {
        self.store.broker_epoch()
    }

    pub fn notify_appended(&self) {
        self.appended
            .send_modify(|count| *count = count.wrapping_add(1));
    }
}

/// One partition of a topic: its state as last applied and, if this
/// broker holds a replica, its log.
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    node: Arc<LocalNode>,
    state: RwLock<PartitionMetadata>,
    /// `None` where this broker holds no replica, and once the partition
    /// is closed (shutdown or deletion).
    log: Mutex<Option<PartitionLog>>,
    /// What the leader knows of its followers (see `replication`).
    progress: Mutex<crate::replication::LeaderProgress>,
    /// Bumped when the high watermark or the state changes, for requests
    /// that wait on them (acks=all).
    changes: watch::Sender<u64>,
}

/// The partition was closed while a request was using it, or this broker
/// holds no replica of it.
#[derive(Debug, thiserror::Error)]
#[error("partition {topic}-{partition} is closed")]
pub struct PartitionClosed {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// Why a leader did not append.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the ISR has {isr} replicas, fewer than min.insync.replicas={required}")]
    NotEnoughReplicas { isr: usize, required: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// This broker cannot act as the partition's leader now; `leader` and
/// `leader_epoch` are who does, as far as it knows (for KIP-951).
#[derive(Debug, Clone, thiserror::Error)]
#[error("this broker does not lead {topic}-{partition} (leader {leader}, epoch {leader_epoch})")]
pub struct NotLeader {
    pub topic: Arc<str>,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
}

impl Partition {
    pub(crate) fn new(
        topic: Arc<str>,
        topic_id: Uuid,
        node: Arc<LocalNode>,
        state: PartitionMetadata,
        log: Option<PartitionLog>,
    ) -> Partition {
        Partition {
            topic,
            topic_id,
            index: state.partition,
            node,
            state: RwLock::new(state),
            log: Mutex::new(log),
            progress: Mutex::new(Default::default()),
            changes: watch::channel(0).0,
        }
    }

    pub(crate) fn progress(&self) -> std::sync::MutexGuard<'_, crate::replication::LeaderProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn node(&self) -> &LocalNode {
        &self.node
    }

    pub(crate) fn notify_changed(&self) {
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The partition's state as this broker last applied it.
    pub fn state(&self) -> PartitionMetadata {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .leader_epoch
    }

    pub(crate) fn set_state(&self, state: PartitionMetadata) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        self.notify_changed();
    }

    /// Whether this broker holds an open replica of the partition.
    pub fn is_hosted(&self) -> bool {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some()
    }

    /// Runs `action` on this broker's replica of the log. Logs are touched
    /// with blocking file I/O that is short (page cache writes, positional
    /// reads), so this runs on the calling task.
    pub fn with_log<T>(
        &self,
        action: impl FnOnce(&mut PartitionLog) -> T,
    ) -> Result<T, PartitionClosed> {
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match log.as_mut() {
            Some(log) => Ok(action(log)),
            None => Err(PartitionClosed {
                topic: self.topic.clone(),
                partition: self.index,
            }),
        }
    }

    /// Runs `action` on the log if this broker leads the partition now: it
    /// is the leader in the state applied last, it can prove its session,
    /// and its replica is open. The state cannot change while `action`
    /// runs, so what it does happens at that leader epoch.
    pub fn lead<T>(
        &self,
        action: impl FnOnce(&mut PartitionLog, &PartitionMetadata) -> T,
    ) -> Result<T, NotLeader> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let not_leader = || NotLeader {
            topic: self.topic.clone(),
            partition: self.index,
            leader: state.leader,
            leader_epoch: state.leader_epoch,
        };
        if !self.node.named_leader(&state) || !self.node.session_valid() {
            return Err(not_leader());
        }
        self.with_log(|log| action(log, &state))
            .map_err(|_| not_leader())
    }

    /// Runs `action` on the log if this broker still follows `leader` at
    /// `leader_epoch` — the state cannot change while it runs — so that an
    /// answer to a fetch sent to a former leader, or before this broker
    /// became leader itself, never touches the log.
    pub fn as_follower<T>(
        &self,
        leader: i32,
        leader_epoch: i32,
        action: impl FnOnce(&mut PartitionLog) -> T,
    ) -> Option<T> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if state.leader != leader
            || state.leader_epoch != leader_epoch
            || state.leader == self.node.node_id
        {
            return None;
        }
        self.with_log(action).ok()
    }

    /// Appends producer batches as the leader, at its leader epoch, and
    /// moves the high watermark if the ISR allows (at once when the leader
    /// is the whole ISR). With `min_insync_replicas` (acks=all) the append
    /// is refused while the ISR is smaller (NOT_ENOUGH_REPLICAS). When the
    /// append rolled a segment, the sealed segment is fsynced on a blocking
    /// thread, without the log's lock, and the recovery point moves after.
    /// Returns the append and the leader epoch it happened at.
    pub fn append(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
        min_insync_replicas: Option<usize>,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        self.append_verified(records, now_ms, min_insync_replicas, None)
    }

    /// [`Self::append`]; `verified` is the guard of a transaction verified
    /// with its coordinator, for a transactional batch that starts its
    /// transaction in this partition.
    pub fn append_verified(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
        min_insync_replicas: Option<usize>,
        verified: Option<u64>,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        self.append_with(min_insync_replicas, |log, leader_epoch| match verified {
            None => log.append_as_leader(records, leader_epoch, now_ms),
            Some(guard) => log.append_as_leader_verified(records, leader_epoch, now_ms, guard),
        })
    }

    /// [`Self::append`] of batches a coordinator writes for a producer
    /// (transactional offset commits): only the producer's epoch is checked.
    pub fn append_as_coordinator(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        self.append_with(None, |log, leader_epoch| {
            log.append_as_coordinator(records, leader_epoch, now_ms)
        })
    }

    /// Appends a transaction marker (WriteTxnMarkers) as the leader.
    pub fn append_marker(
        self: &Arc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        marker: storage::Marker,
        now_ms: i64,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        self.append_with(None, |log, leader_epoch| {
            log.append_marker(producer_id, producer_epoch, marker, leader_epoch, now_ms)
        })
    }

    fn append_with(
        self: &Arc<Self>,
        min_insync_replicas: Option<usize>,
        append: impl FnOnce(&mut PartitionLog, i32) -> Result<AppendInfo, StorageError>,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        let (appended, sync) = self.lead(|log, state| {
            if min_insync_replicas.is_some_and(|min| state.isr.len() < min) {
                return (
                    Err(AppendError::NotEnoughReplicas {
                        isr: state.isr.len(),
                        required: min_insync_replicas.unwrap_or(0),
                    }),
                    Ok(None),
                );
            }
            let appended = append(log, state.leader_epoch);
            if appended.is_ok() {
                self.advance_high_watermark(log, state);
            }
            (
                appended
                    .map(|info| (info, state.leader_epoch))
                    .map_err(AppendError::Storage),
                log.take_roll_sync(),
            )
        })?;
        if appended.is_ok() {
            // Waiting fetches (consumers, and followers, which replicate
            // it: acks=all and internal writes wait for them) look again.
            self.node.notify_appended();
        }
        // The log's lock is released: the sync may take it again.
        self.start_roll_sync(sync);
        Ok(appended)
    }

    /// Runs what [`PartitionLog::take_roll_sync`] returned on a blocking
    /// thread, once the log's lock is released.
    pub(crate) fn start_roll_sync(self: &Arc<Self>, sync: Result<Option<RollSync>, StorageError>) {
        match sync {
            Ok(Some(sync)) => self.spawn_roll_sync(sync),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(topic = %self.topic, partition = self.index, %error, "preparing the fsync of a rolled segment failed; the next flush does it")
            }
        }
    }

    /// Runs what [`PartitionLog::take_after_lock`] returned, here: call it
    /// after the log's lock is released, on a thread that may block.
    pub(crate) fn run_after_lock(&self, after_lock: storage::checkpoint::AfterLock) {
        if let Err(error) = after_lock.run() {
            tracing::warn!(topic = %self.topic, partition = self.index, %error, "writing checkpoints or removing deleted segments failed; the next open does it");
        }
    }

    fn spawn_roll_sync(self: &Arc<Self>, sync: RollSync) {
        let partition = self.clone();
        let run = move || {
            if let Err(error) = sync.run() {
                // The segments stay unflushed; the next flush (or close) retries.
                tracing::error!(topic = %partition.topic, partition = partition.index, %error, "fsync of a rolled segment failed");
                return;
            }
            let completed = partition.with_log(|log| {
                let completed = log.complete_roll_sync(sync.up_to);
                (completed, log.take_after_lock())
            });
            let completed =
                completed.map(|(completed, after_lock)| completed.and(after_lock.run()));
            if let Ok(Err(error)) = completed {
                tracing::error!(topic = %partition.topic, partition = partition.index, %error, "moving the recovery point failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(run);
            }
            // No runtime (a tool or test calling in directly): do it here.
            Err(_) => run(),
        }
    }

    pub(crate) fn put_log(&self, log: PartitionLog) {
        *self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(log);
    }

    pub(crate) fn take_log(&self) -> Option<PartitionLog> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

pub struct Topic {
    pub name: Arc<str>,
    pub topic_id: Uuid,
    /// Every partition of the topic, by index (hosted here or not).
    pub partitions: Vec<Arc<Partition>>,
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    /// Applies `configs` (the topic's overrides) over `defaults` to every
    /// open log of the topic.
    pub(crate) fn apply_log_config(
        &self,
        defaults: &LogConfig,
        configs: &BTreeMap<String, String>,
    ) {
        let log_config = topic_config::log_config(defaults, configs);
        for partition in &self.partitions {
            let _ = partition.with_log(|log| log.set_config(log_config.clone()));
        }
    }

    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.partitions.get(index))
    }
}

#[derive(Default)]
pub(crate) struct Topics {
    pub by_name: BTreeMap<String, Arc<Topic>>,
    pub by_id: HashMap<Uuid, Arc<Topic>>,
}

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
        let fetchers = crate::replica_fetcher::ReplicaFetchers::new(
            config.node_id,
            store.clone(),
            config.replica_fetch,
        );
        let producer_ids = crate::txn::ProducerIds::new(store.clone());
        let transactions = crate::txn::TransactionCoordinator::new(config.transactions.clone());
        let broker = Broker {
            producer_ids,
            transactions,
            peers: Default::default(),
            fetchers,
            node: Arc::new(LocalNode {
                node_id: config.node_id,
                store: store.clone(),
                appended: watch::channel(0).0,
            }),
            log_defaults: RwLock::new(config.log.clone()),
            config,
            store,
            _data_dir: data_dir,
            topics: RwLock::new(Topics::default()),
            admin: tokio::sync::Mutex::new(()),
            groups,
            applied: watch::channel(0).0,
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
    pub async fn wait_applied(&self) {
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
            crate::txn::TRANSACTION_STATE_TOPIC,
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
                self.wait_applied().await;
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
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .get(name)
            .cloned()
    }

    pub fn topic_by_id(&self, topic_id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .get(&topic_id)
            .cloned()
    }

    pub fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .values()
            .cloned()
            .collect()
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
        self.node.appended.subscribe()
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
            self.wait_applied().await;
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
            self.wait_applied().await;
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
        self.wait_applied().await;
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
        self.wait_applied().await;
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
                    tracing::info!(topic = %partition.topic, partition = partition.index, deleted, "retention deleted segments")
                }
                Ok(Err(error)) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, %error, "retention failed")
                }
            }
        }
    }

    /// The topic-config defaults in force now.
    pub fn log_defaults(&self) -> LogConfig {
        self.log_defaults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
            .filter(|key| !crate::config::DYNAMIC_BROKER_CONFIGS.contains(key))
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
        self.wait_applied().await;
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
                    tracing::error!(topic = %partition.topic, partition = partition.index, %error, "compaction failed")
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

/// Topics the broker keeps for itself: clients may read but not write or delete them.
pub fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == crate::txn::TRANSACTION_STATE_TOPIC
}

/// Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| Err(TopicError::InvalidName(name.to_string(), reason));
    if name.is_empty() {
        return invalid("the empty string is not allowed");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("contains a character other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_A-2").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "bad/name", "space name", "ümlaut"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
