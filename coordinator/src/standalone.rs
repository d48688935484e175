//! Metadata in a JSON file in the data directory, for a broker without etcd.
//!
//! Every mutation writes the whole file to a temporary name, fsyncs it,
//! renames it over the old one and fsyncs the directory, so a crash leaves
//! either the old or the new metadata, never a mix.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::model::{ClusterMetadata, TopicMetadata};
use crate::{CoordinatorError, MetadataStore};

pub const METADATA_FILE_NAME: &str = "cluster-metadata.json";
/// A metadata file larger than this is refused rather than read.
pub const METADATA_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

pub struct StandaloneStore {
    path: PathBuf,
    metadata: Mutex<ClusterMetadata>,
}

impl StandaloneStore {
    /// Opens the store in `dir`, creating a new cluster if there is no file.
    pub fn open(dir: &Path) -> Result<Self, CoordinatorError> {
        let path = dir.join(METADATA_FILE_NAME);
        let io_error = |source| CoordinatorError::Io {
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_error)?;
        let metadata = match fs::metadata(&path) {
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
        Ok(StandaloneStore {
            path,
            metadata: Mutex::new(metadata),
        })
    }

    fn mutate<T>(
        &self,
        change: impl FnOnce(&mut ClusterMetadata) -> Result<T, CoordinatorError>,
    ) -> Result<T, CoordinatorError> {
        let mut current = self
            .metadata
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = current.clone();
        let result = change(&mut next)?;
        write_atomically(&self.path, &next)?;
        *current = next;
        Ok(result)
    }
}

impl MetadataStore for StandaloneStore {
    fn snapshot(&self) -> ClusterMetadata {
        self.metadata
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn create_topic(&self, topic: TopicMetadata) -> Result<(), CoordinatorError> {
        self.mutate(|metadata| {
            if metadata.topics.contains_key(&topic.name) {
                return Err(CoordinatorError::TopicExists(topic.name.clone()));
            }
            metadata.topics.insert(topic.name.clone(), topic);
            Ok(())
        })
    }

    fn delete_topic(&self, name: &str) -> Result<TopicMetadata, CoordinatorError> {
        self.mutate(|metadata| {
            metadata
                .topics
                .remove(name)
                .ok_or_else(|| CoordinatorError::UnknownTopic(name.to_string()))
        })
    }

    fn set_broker_configs(
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

    fn update_topic(&self, topic: TopicMetadata) -> Result<(), CoordinatorError> {
        self.mutate(|metadata| match metadata.topics.get_mut(&topic.name) {
            Some(current) if current.topic_id == topic.topic_id => {
                *current = topic;
                Ok(())
            }
            _ => Err(CoordinatorError::UnknownTopic(topic.name.clone())),
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

    #[test]
    fn topics_survive_reopen_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let store = StandaloneStore::open(dir.path()).unwrap();
        let topic = TopicMetadata::new(
            "orders",
            3,
            1,
            BTreeMap::from([("retention.ms".into(), "1000".into())]),
        );
        store.create_topic(topic.clone()).unwrap();
        assert!(matches!(
            store.create_topic(topic.clone()),
            Err(CoordinatorError::TopicExists(_))
        ));
        let cluster_id = store.snapshot().cluster_id;
        drop(store);

        let store = StandaloneStore::open(dir.path()).unwrap();
        let snapshot = store.snapshot();
        assert_eq!(snapshot.cluster_id, cluster_id);
        assert_eq!(snapshot.topics["orders"], topic);
        store.delete_topic("orders").unwrap();
        assert!(matches!(
            store.delete_topic("orders"),
            Err(CoordinatorError::UnknownTopic(_))
        ));
        drop(store);
        assert!(StandaloneStore::open(dir.path())
            .unwrap()
            .snapshot()
            .topics
            .is_empty());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(METADATA_FILE_NAME), b"{not json").unwrap();
        assert!(matches!(
            StandaloneStore::open(dir.path()),
            Err(CoordinatorError::Corrupt { .. })
        ));
    }
}
