//! The broker's state: its topics, their partitions and each partition's log.
//!
//! Topic creation and deletion are serialized by one async lock; lookups
//! take a short read lock on the topic map and then work on an
//! `Arc<Partition>` without it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use coordinator::{MetadataStore, TopicMetadata};
use storage::{AppendInfo, LogConfig, PartitionLog, RollSync, StorageError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::topic_config;

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic name {0:?} is invalid: {1}")]
    InvalidName(String, &'static str),
    #[error("topic {0} already exists")]
    Exists(String),
    #[error("unknown topic {0}")]
    Unknown(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("replication factor {0} is larger than the 1 available broker")]
    InvalidReplicationFactor(i16),
    /// A broker config that cannot change at run time.
    #[error("Cannot update these configs dynamically: {0}")]
    NotDynamic(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(#[from] coordinator::CoordinatorError),
}

/// One partition this broker leads, and its log.
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    /// The broker that leads it (this one, until replication).
    pub leader: i32,
    pub leader_epoch: i32,
    /// `None` once the partition is closed (shutdown or deletion).
    log: Mutex<Option<PartitionLog>>,
}

/// The partition was closed while a request was using it.
#[derive(Debug, thiserror::Error)]
#[error("partition {topic}-{partition} is closed")]
pub struct PartitionClosed {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl Partition {
    /// Runs `action` on the log. Logs are touched with blocking file I/O
    /// that is short (page cache writes, positional reads), so this runs
    /// on the calling task.
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

    /// Appends producer batches at this partition's leader epoch. When the
    /// append rolled a segment, the sealed segment is fsynced on a blocking
    /// thread, without the log's lock, and the recovery point moves after.
    pub fn append(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
    ) -> Result<Result<AppendInfo, StorageError>, PartitionClosed> {
        let (appended, sync) = self.with_log(|log| {
            let appended = log.append(records, self.leader_epoch, now_ms);
            (appended, log.take_roll_sync())
        })?;
        // The log's lock is released: the sync may take it again.
        match sync {
            Ok(Some(sync)) => self.spawn_roll_sync(sync),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(topic = %self.topic, partition = self.index, %error, "preparing the fsync of a rolled segment failed; the next flush does it")
            }
        }
        Ok(appended)
    }

    fn spawn_roll_sync(self: &Arc<Self>, sync: RollSync) {
        let partition = self.clone();
        let run = move || {
            if let Err(error) = sync.run() {
                // The segments stay unflushed; the next flush (or close) retries.
                tracing::error!(topic = %partition.topic, partition = partition.index, %error, "fsync of a rolled segment failed");
                return;
            }
            let completed = partition.with_log(|log| log.complete_roll_sync(sync.up_to));
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

    fn take_log(&self) -> Option<PartitionLog> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

pub struct Topic {
    pub name: Arc<str>,
    pub topic_id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    /// Applies `configs` (the topic's overrides) over `defaults` to every
    /// open log of the topic.
    fn apply_log_config(&self, defaults: &LogConfig, configs: &BTreeMap<String, String>) {
        let log_config = topic_config::log_config(defaults, configs);
        for partition in &self.partitions {
            let _ = partition.with_log(|log| log.set_config(log_config.clone()));
        }
    }
}

#[derive(Default)]
struct Topics {
    by_name: BTreeMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    store: Box<dyn MetadataStore>,
    topics: RwLock<Topics>,
    /// Serializes topic creation and deletion.
    admin: tokio::sync::Mutex<()>,
    /// Bumped after every append, so that waiting fetches re-check.
    appended: watch::Sender<u64>,
    pub groups: GroupCoordinator,
    /// The topic-config defaults: static broker configs with the dynamic
    /// ones applied (see [`Broker::set_broker_configs`]).
    log_defaults: RwLock<LogConfig>,
}

impl Broker {
    /// Opens every partition log the metadata names (running recovery).
    pub fn open(config: BrokerConfig, store: Box<dyn MetadataStore>) -> Result<Broker, TopicError> {
        std::fs::create_dir_all(&config.log_dir).map_err(StorageError::from)?;
        remove_deleted_directories(&config.log_dir);
        let snapshot = store.snapshot();
        let log_defaults = config
            .log_with_dynamic(
                snapshot.broker_configs.get(""),
                snapshot.broker_configs.get(&config.node_id.to_string()),
            )
            .unwrap_or_else(|error| {
                tracing::error!(%error, "ignoring stored dynamic broker configs that are no longer valid");
                config.log.clone()
            });
        let mut topics = Topics::default();
        for metadata in snapshot.topics.values() {
            let topic = open_topic(&config.log_dir, &log_defaults, metadata)?;
            topics.by_id.insert(topic.topic_id, topic.clone());
            topics.by_name.insert(metadata.name.clone(), topic);
        }
        tracing::info!(topics = topics.by_name.len(), cluster_id = %snapshot.cluster_id, "opened logs");
        let (appended, _) = watch::channel(0);
        let groups = GroupCoordinator::new(config.groups.clone());
        if let Some(offsets) = topics.by_name.get(OFFSETS_TOPIC) {
            groups.load(offsets.clone(), std::time::Instant::now(), now_ms());
        }
        Ok(Broker {
            config,
            cluster_id: snapshot.cluster_id,
            store,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            appended,
            groups,
            log_defaults: RwLock::new(log_defaults),
        })
    }

    /// Creates `__consumer_offsets` the first time a group needs it, as Kafka does.
    pub async fn ensure_offsets_topic(&self) -> Result<(), TopicError> {
        if self.groups.offsets_topic().is_some() {
            return Ok(());
        }
        let config = &self.config.groups;
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("compression.type".to_string(), "producer".to_string()),
            (
                "segment.bytes".to_string(),
                config.offsets_topic_segment_bytes.to_string(),
            ),
        ]);
        let topic = match self
            .create_topic(
                OFFSETS_TOPIC,
                config.offsets_topic_partitions,
                1,
                configs,
                false,
            )
            .await
        {
            Ok(topic) => topic,
            Err(TopicError::Exists(_)) => self
                .topic(OFFSETS_TOPIC)
                .ok_or_else(|| TopicError::Unknown(OFFSETS_TOPIC.to_string()))?,
            Err(error) => return Err(error),
        };
        self.groups.set_offsets_topic(topic);
        Ok(())
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
        let topic = self.topic(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|index| topic.partitions.get(index).cloned())
    }

    pub fn notify_appended(&self) {
        self.appended
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Creates a topic (or, with `validate_only`, checks that it could be).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_topic_name(name)?;
        if partitions < 1 {
            return Err(TopicError::InvalidPartitions(format!(
                "Number of partitions must be at least 1, got {partitions}."
            )));
        }
        if replication_factor != 1 {
            return Err(TopicError::InvalidReplicationFactor(replication_factor));
        }
        for (key, value) in &configs {
            topic_config::validate(key, value).map_err(TopicError::InvalidConfig)?;
        }
        let _admin = self.admin.lock().await;
        if self.topic(name).is_some() {
            return Err(TopicError::Exists(name.to_string()));
        }
        let metadata = TopicMetadata::new(name, partitions, self.config.node_id, configs);
        if validate_only {
            return Ok(Arc::new(Topic {
                name: name.into(),
                topic_id: metadata.topic_id,
                partitions: Vec::new(),
                configs: metadata.configs,
            }));
        }
        // Directories of a topic that is not in the metadata are leftovers of
        // a crash during an earlier create or delete: their data is not ours.
        for partition in 0..partitions {
            let dir = partition_dir(&self.config.log_dir, name, partition);
            if dir.exists() {
                tracing::warn!(dir = %dir.display(), "removing leftover directory of a topic that does not exist");
                std::fs::remove_dir_all(&dir).map_err(StorageError::from)?;
            }
        }
        let topic = open_topic(&self.config.log_dir, &self.log_defaults(), &metadata)?;
        self.store.create_topic(metadata)?;
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        topics.by_id.insert(topic.topic_id, topic.clone());
        topics.by_name.insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, topic_id = %topic.topic_id, "created topic");
        Ok(topic)
    }

    /// Creates a topic with the broker's defaults unless it exists; returns it either way.
    pub async fn auto_create_topic(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        match self
            .create_topic(
                name,
                self.config.num_partitions,
                self.config.default_replication_factor,
                BTreeMap::new(),
                false,
            )
            .await
        {
            Err(TopicError::Exists(_)) => self
                .topic(name)
                .ok_or_else(|| TopicError::Unknown(name.to_string())),
            other => other,
        }
    }

    /// CreatePartitions: grows a topic to `count` partitions (or, with
    /// `validate_only`, checks that it could). New partitions start empty,
    /// led by this broker at epoch 0.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        if is_internal(name) {
            return Err(TopicError::InvalidPartitions(format!(
                "The partition count of the internal topic {name} cannot change."
            )));
        }
        let _admin = self.admin.lock().await;
        let Some(topic) = self.topic(name) else {
            return Err(TopicError::Unknown(name.to_string()));
        };
        let current = topic.partitions.len() as i32;
        if count < current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {count}."
            )));
        }
        if count == current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic already has {current} partitions."
            )));
        }
        if validate_only {
            return Ok(topic);
        }
        let mut metadata = self
            .store
            .snapshot()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let log_config = topic_config::log_config(&self.log_defaults(), &topic.configs);
        let now = now_ms();
        let mut partitions = topic.partitions.clone();
        for index in current..count {
            let dir = partition_dir(&self.config.log_dir, name, index);
            if dir.exists() {
                tracing::warn!(dir = %dir.display(), "removing leftover directory of a partition that does not exist");
                std::fs::remove_dir_all(&dir).map_err(StorageError::from)?;
            }
            let log = PartitionLog::open(&dir, log_config.clone(), now)?;
            metadata.partitions.push(coordinator::PartitionMetadata {
                partition: index,
                leader: self.config.node_id,
                leader_epoch: 0,
                replicas: vec![self.config.node_id],
                isr: vec![self.config.node_id],
            });
            partitions.push(Arc::new(Partition {
                topic: topic.name.clone(),
                topic_id: topic.topic_id,
                index,
                leader: self.config.node_id,
                leader_epoch: 0,
                log: Mutex::new(Some(log)),
            }));
        }
        self.store.update_topic(metadata)?;
        let grown = Arc::new(Topic {
            name: topic.name.clone(),
            topic_id: topic.topic_id,
            partitions,
            configs: topic.configs.clone(),
        });
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        topics.by_id.insert(grown.topic_id, grown.clone());
        topics.by_name.insert(name.to_string(), grown.clone());
        tracing::info!(topic = name, from = current, to = count, "added partitions");
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
        let Some(topic) = self.topic(name) else {
            return Err(TopicError::Unknown(name.to_string()));
        };
        if validate_only || configs == topic.configs {
            return Ok(());
        }
        let mut metadata = self
            .store
            .snapshot()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        metadata.configs = configs.clone();
        self.store.update_topic(metadata)?;
        topic.apply_log_config(&self.log_defaults(), &configs);
        let changed = Arc::new(Topic {
            name: topic.name.clone(),
            topic_id: topic.topic_id,
            partitions: topic.partitions.clone(),
            configs,
        });
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        topics.by_id.insert(changed.topic_id, changed.clone());
        topics.by_name.insert(name.to_string(), changed);
        tracing::info!(topic = name, "topic configs changed");
        Ok(())
    }

    /// Deletes a topic: metadata first (durable), then its logs.
    pub async fn delete_topic(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        if is_internal(name) {
            return Err(TopicError::InvalidName(
                name.to_string(),
                "internal topics cannot be deleted",
            ));
        }
        let _admin = self.admin.lock().await;
        let Some(topic) = self.topic(name) else {
            return Err(TopicError::Unknown(name.to_string()));
        };
        self.store.delete_topic(name)?;
        {
            let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
            topics.by_name.remove(name);
            topics.by_id.remove(&topic.topic_id);
        }
        for partition in &topic.partitions {
            drop(partition.take_log());
            let dir = partition_dir(&self.config.log_dir, name, partition.index);
            let doomed = self.config.log_dir.join(format!(
                "{name}-{}.{}-delete",
                partition.index,
                topic.topic_id.simple()
            ));
            if let Err(error) =
                std::fs::rename(&dir, &doomed).and_then(|_| std::fs::remove_dir_all(&doomed))
            {
                tracing::warn!(dir = %dir.display(), %error, "could not remove a deleted partition's directory");
            }
        }
        tracing::info!(topic = name, topic_id = %topic.topic_id, "deleted topic");
        Ok(topic)
    }

    /// Enforces retention on every partition.
    pub fn enforce_retention(&self) {
        let now = now_ms();
        for topic in self.all_topics() {
            for partition in &topic.partitions {
                match partition.with_log(|log| log.enforce_retention(now)) {
                    Ok(Ok(0)) | Err(_) => {}
                    Ok(Ok(deleted)) => {
                        tracing::info!(topic = %topic.name, partition = partition.index, deleted, "retention deleted segments")
                    }
                    Ok(Err(error)) => {
                        tracing::error!(topic = %topic.name, partition = partition.index, %error, "retention failed")
                    }
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
        self.store
            .snapshot()
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
        let defaults = self
            .config
            .log_with_dynamic(Some(&cluster), Some(&own))
            .map_err(|error| TopicError::InvalidConfig(format!("{error:#}")))?;
        if validate_only {
            return Ok(());
        }
        self.store.set_broker_configs(resource, configs)?;
        *self.log_defaults.write().unwrap_or_else(|p| p.into_inner()) = defaults.clone();
        for topic in self.all_topics() {
            topic.apply_log_config(&defaults, &topic.configs);
        }
        tracing::info!(resource, "dynamic broker configs changed");
        Ok(())
    }

    /// One pass of the log cleaner over every compacted partition.
    pub fn clean_logs(&self) {
        let now = now_ms();
        for topic in self.all_topics() {
            for partition in &topic.partitions {
                match partition.with_log(|log| log.clean(now)) {
                    Ok(Ok(stats)) if stats.segments_cleaned > 0 => tracing::info!(
                        topic = %topic.name,
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
                        tracing::error!(topic = %topic.name, partition = partition.index, %error, "compaction failed")
                    }
                }
            }
        }
    }

    /// Flushes and closes every log, leaving clean-shutdown markers.
    pub fn close(&self) {
        for topic in self.all_topics() {
            for partition in &topic.partitions {
                if let Some(log) = partition.take_log() {
                    if let Err(error) = log.close() {
                        tracing::error!(topic = %topic.name, partition = partition.index, %error, "closing log failed");
                    }
                }
            }
        }
    }
}

fn open_topic(
    log_dir: &Path,
    log_defaults: &LogConfig,
    metadata: &TopicMetadata,
) -> Result<Arc<Topic>, TopicError> {
    let name: Arc<str> = metadata.name.as_str().into();
    let log_config = topic_config::log_config(log_defaults, &metadata.configs);
    let now = now_ms();
    let partitions = metadata
        .partitions
        .iter()
        .map(|partition| {
            let dir = partition_dir(log_dir, &metadata.name, partition.partition);
            let log = PartitionLog::open(&dir, log_config.clone(), now)?;
            Ok(Arc::new(Partition {
                topic: name.clone(),
                topic_id: metadata.topic_id,
                index: partition.partition,
                leader: partition.leader,
                leader_epoch: partition.leader_epoch,
                log: Mutex::new(Some(log)),
            }))
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok(Arc::new(Topic {
        name,
        topic_id: metadata.topic_id,
        partitions,
        configs: metadata.configs.clone(),
    }))
}

/// Topics the broker keeps for itself: clients may read but not write or delete them.
pub fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

/// `<log.dir>/<topic>-<partition>`, as Kafka lays it out.
pub fn partition_dir(log_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    log_dir.join(format!("{topic}-{partition}"))
}

fn remove_deleted_directories(log_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with("-delete") {
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), %error, "could not remove a deleted partition's directory");
            }
        }
    }
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
