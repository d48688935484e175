//! Metadata in a JSON file in the data directory, for a broker without etcd.
//! The cluster is this one broker: it is alive, the controller, and the
//! leader of every partition.
//!
//! Every mutation writes the whole file to a temporary name, fsyncs it,
//! renames it over the old one and fsyncs the directory, so a crash leaves
//! either the old or the new metadata, never a mix.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::model::{
    BrokerRegistration, ClusterMetadata, Controller, ElectionType, IsrChange, NewTopic,
    PartitionMetadata, TopicMetadata,
};
use crate::security::{self, AclBinding, ScramChange};
use crate::{election, placement, CoordinatorError, ElectionError, ElectionResults, MetadataStore};

pub const METADATA_FILE_NAME: &str = "cluster-metadata.json";
/// A metadata file larger than this is refused rather than read.
pub const METADATA_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

pub struct StandaloneStore {
    path: PathBuf,
    node_id: i32,
    /// Serializes mutations (read, change, write, publish).
    writing: Mutex<()>,
    metadata: watch::Sender<Arc<ClusterMetadata>>,
}

impl StandaloneStore {
    /// Opens the store in `dir`, creating a new cluster if there is no file.
    pub fn open(dir: &Path, broker: BrokerRegistration) -> Result<Self, CoordinatorError> {
        let path = dir.join(METADATA_FILE_NAME);
        let io_error = |source| CoordinatorError::Io {
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_error)?;
        let mut metadata: ClusterMetadata = match fs::metadata(&path) {
            Ok(stat) if stat.len() > METADATA_FILE_BYTES_MAX => {
                return Err(CoordinatorError::Corrupt {
                    path: path.display().to_string(),
                    reason: format!(
                        "{} bytes is over the {METADATA_FILE_BYTES_MAX} byte limit",
                        stat.len()
                    ),
                })
            }
            Ok(_) => {
                let text = fs::read(&path).map_err(io_error)?;
                serde_json::from_slice(&text).map_err(|error| CoordinatorError::Corrupt {
                    path: path.display().to_string(),
                    reason: error.to_string(),
                })?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let metadata = ClusterMetadata::new_cluster();
                write_atomically(&path, &metadata)?;
                tracing::info!(cluster_id = %metadata.cluster_id, path = %path.display(), "created new cluster metadata");
                metadata
            }
            Err(error) => return Err(io_error(error)),
        };
        let node_id = broker.node_id;
        metadata.brokers = BTreeMap::from([(node_id, broker)]);
        metadata.controller = Some(Controller { node_id, epoch: 1 });
        metadata.revision = 1;
        Ok(StandaloneStore {
            path,
            node_id,
            writing: Mutex::new(()),
            metadata: watch::channel(Arc::new(metadata)).0,
        })
    }

    /// Applies `change` to a copy of the metadata, writes it durably, then
    /// publishes it.
    fn mutate<T>(
        &self,
        change: impl FnOnce(&mut ClusterMetadata) -> Result<T, CoordinatorError>,
    ) -> Result<T, CoordinatorError> {
        let _writing = self.writing.lock();
        let mut next = ClusterMetadata::clone(&self.metadata.borrow());
        let result = change(&mut next)?;
        write_atomically(&self.path, &next)?;
        next.revision += 1;
        self.metadata.send_replace(Arc::new(next));
        Ok(result)
    }

    fn topic(&self, name: &str) -> Result<Arc<TopicMetadata>, CoordinatorError> {
        self.snapshot()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| CoordinatorError::UnknownTopic(name.to_string()))
    }
}

#[async_trait]
impl MetadataStore for StandaloneStore {
    async fn allocate_producer_ids(&self, count: i64) -> Result<i64, CoordinatorError> {
        self.mutate(|metadata| {
            let first = metadata.next_producer_id;
            metadata.next_producer_id = first.checked_add(count).ok_or_else(|| {
                CoordinatorError::Unavailable("producer ids are exhausted".into())
            })?;
            Ok(first)
        })
    }

    async fn alter_scram_credentials(
        &self,
        changes: Vec<ScramChange>,
    ) -> Result<(), CoordinatorError> {
        self.mutate(|metadata| {
            security::apply_scram_changes(&mut metadata.scram_credentials, changes);
            Ok(())
        })
    }

    async fn create_acls(&self, acls: Vec<AclBinding>) -> Result<(), CoordinatorError> {
        self.mutate(|metadata| {
            metadata.acls.extend(acls);
            Ok(())
        })
    }

    async fn delete_acls(&self, acls: Vec<AclBinding>) -> Result<(), CoordinatorError> {
        self.mutate(|metadata| {
            for acl in &acls {
                metadata.acls.remove(acl);
            }
            Ok(())
        })
    }

    fn snapshot(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.metadata.subscribe()
    }

    fn session_valid(&self) -> bool {
        true
    }

    async fn join(&self) -> Result<(), CoordinatorError> {
        Ok(())
    }

    async fn leave(&self) {}

    async fn create_topic(
        &self,
        request: NewTopic,
        validate_only: bool,
    ) -> Result<Arc<TopicMetadata>, CoordinatorError> {
        if validate_only {
            return placement::plan_topic(&self.snapshot(), &request, 0).map(Arc::new);
        }
        self.mutate(|metadata| {
            let topic = Arc::new(placement::plan_topic(metadata, &request, 0)?);
            metadata.topics.insert(topic.name.clone(), topic.clone());
            Ok(topic)
        })
    }

    async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<Arc<TopicMetadata>, CoordinatorError> {
        let plan = |metadata: &ClusterMetadata| {
            let topic = metadata
                .topics
                .get(name)
                .ok_or_else(|| CoordinatorError::UnknownTopic(name.to_string()))?;
            placement::plan_partitions(metadata, topic, count, assignment.as_deref(), 0)
                .map(Arc::new)
        };
        if validate_only {
            return plan(&self.snapshot());
        }
        self.mutate(|metadata| {
            let grown = plan(metadata)?;
            metadata.topics.insert(name.to_string(), grown.clone());
            Ok(grown)
        })
    }

    async fn delete_topic(&self, name: &str) -> Result<Arc<TopicMetadata>, CoordinatorError> {
        self.mutate(|metadata| {
            metadata
                .topics
                .remove(name)
                .ok_or_else(|| CoordinatorError::UnknownTopic(name.to_string()))
        })
    }

    async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), CoordinatorError> {
        self.topic(name)?;
        self.mutate(|metadata| {
            let topic = metadata
                .topics
                .get_mut(name)
                .ok_or_else(|| CoordinatorError::UnknownTopic(name.to_string()))?;
            Arc::make_mut(topic).configs = configs;
            Ok(())
        })
    }

    async fn set_broker_configs(
        &self,
        resource: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), CoordinatorError> {
        self.mutate(|metadata| {
            if configs.is_empty() {
                metadata.broker_configs.remove(resource);
            } else {
                metadata
                    .broker_configs
                    .insert(resource.to_string(), configs);
            }
            Ok(())
        })
    }

    async fn elect_leaders(
        &self,
        election_type: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<ElectionResults, CoordinatorError> {
        // One broker leads everything: an election can only find that out.
        let metadata = self.snapshot();
        let partitions = partitions.unwrap_or_else(|| metadata.all_partitions());
        let is_alive = |id| metadata.is_alive(id);
        Ok(partitions
            .into_iter()
            .map(|(topic, index)| {
                let outcome = match metadata.partition(&topic, index) {
                    None => Err(ElectionError::UnknownPartition),
                    Some(partition) => {
                        election::on_request(partition, election_type, is_alive).map(|_| ())
                    }
                };
                ((topic, index), outcome)
            })
            .collect())
    }

    async fn alter_isr(&self, change: IsrChange) -> Result<PartitionMetadata, CoordinatorError> {
        self.mutate(|metadata| {
            let next = crate::check_isr_change(metadata, self.node_id, &change)?;
            let topic = metadata
                .topics
                .get_mut(&change.topic)
                .ok_or_else(|| CoordinatorError::UnknownTopic(change.topic.clone()))?;
            Arc::make_mut(topic).partitions[change.partition as usize] = next.clone();
            Ok(next)
        })
    }
}

fn write_atomically(path: &Path, metadata: &ClusterMetadata) -> Result<(), CoordinatorError> {
    let io_error = |source| CoordinatorError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = serde_json::to_vec_pretty(metadata).expect("metadata serializes");
    let temporary = path.with_extension("json.tmp");
    let mut file = File::create(&temporary).map_err(io_error)?;
    file.write_all(&text).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    fs::rename(&temporary, path).map_err(io_error)?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn broker() -> BrokerRegistration {
        BrokerRegistration {
            node_id: 1,
            rack: None,
            endpoints: Vec::new(),
            inter_broker_listener: String::new(),
            shutting_down: false,
            epoch: 0,
        }
    }

    fn new_topic(name: &str) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions: 3,
            replication_factor: 1,
            assignment: None,
            configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
        }
    }

    #[tokio::test]
    async fn topics_survive_reopen_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let store = StandaloneStore::open(dir.path(), broker()).unwrap();
        let topic = store
            .create_topic(new_topic("orders"), false)
            .await
            .unwrap();
        assert!(topic
            .partitions
            .iter()
            .all(|p| p.leader == 1 && p.isr == [1]));
        assert!(matches!(
            store.create_topic(new_topic("orders"), false).await,
            Err(CoordinatorError::TopicExists(_))
        ));
        let cluster_id = store.snapshot().cluster_id.clone();
        drop(store);

        let store = StandaloneStore::open(dir.path(), broker()).unwrap();
        let snapshot = store.snapshot();
        assert_eq!(snapshot.cluster_id, cluster_id);
        assert_eq!(snapshot.topics["orders"], topic);
        assert_eq!(snapshot.controller_id(), Some(1));
        store.delete_topic("orders").await.unwrap();
        assert!(matches!(
            store.delete_topic("orders").await,
            Err(CoordinatorError::UnknownTopic(_))
        ));
        drop(store);
        assert!(StandaloneStore::open(dir.path(), broker())
            .unwrap()
            .snapshot()
            .topics
            .is_empty());
    }

    #[tokio::test]
    async fn one_broker_cannot_hold_two_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let store = StandaloneStore::open(dir.path(), broker()).unwrap();
        let request = NewTopic {
            replication_factor: 2,
            ..new_topic("t")
        };
        assert!(matches!(
            store.create_topic(request, false).await,
            Err(CoordinatorError::InvalidReplicationFactor(_))
        ));
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(METADATA_FILE_NAME), b"{not json").unwrap();
        assert!(matches!(
            StandaloneStore::open(dir.path(), broker()),
            Err(CoordinatorError::Corrupt { .. })
        ));
    }
}
