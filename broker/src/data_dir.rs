//! The data directory (`log.dirs`): which cluster and broker it belongs to,
//! a lock so that two brokers never share it, which topic incarnation each
//! partition directory holds, and the removal of directories no replica
//! of this broker needs any more.
//!
//! ```text
//! .lock                      flock(2)ed while a broker runs on the directory
//! meta.properties            cluster.id and node.id, as Kafka writes them
//! <topic>-<n>/partition.metadata   the topic id of the data in the directory
//! <topic>-<n>.<id>-delete/   a directory being deleted (finished at start-up)
//! ```

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use uuid::Uuid;

const LOCK_FILE_NAME: &str = ".lock";
const META_FILE_NAME: &str = "meta.properties";
const PARTITION_METADATA_FILE_NAME: &str = "partition.metadata";

/// The data directory, locked for this process.
pub(crate) struct DataDir {
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl DataDir {
    /// Creates the directory if needed and locks it; fails if another
    /// process holds it.
    pub(crate) fn lock(path: &Path) -> anyhow::Result<DataDir> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let lock_path = path.join(LOCK_FILE_NAME);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map(|locked| DataDir {
                path: path.to_path_buf(),
                _lock: locked,
            })
            .map_err(|(_, errno)| {
                anyhow::anyhow!(
                    "{} is in use by another broker process ({errno})",
                    path.display()
                )
            })
    }

    /// Checks that the directory belongs to this cluster and this node id,
    /// as Kafka does with `meta.properties`, and records them on first use:
    /// a broker pointed at another cluster's data must not start (it would
    /// treat that data as strays and delete it).
    pub(crate) fn check_identity(&self, cluster_id: &str, node_id: i32) -> anyhow::Result<()> {
        let meta = self.path.join(META_FILE_NAME);
        match std::fs::read_to_string(&meta) {
            Ok(text) => {
                let properties = crate::config::parse_properties(&text);
                if let Some(found) = properties.get("cluster.id") {
                    if found != cluster_id {
                        bail!(
                            "the data in {} belongs to cluster {found}, not to {cluster_id} (the cluster this broker joined); refusing to start",
                            self.path.display()
                        );
                    }
                }
                if let Some(found) = properties.get("node.id") {
                    if found != &node_id.to_string() {
                        bail!(
                            "the data in {} belongs to node.id {found}, not {node_id}; refusing to start",
                            self.path.display()
                        );
                    }
                }
                Ok(())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
                storage::checkpoint::write_atomically(&self.path, META_FILE_NAME, text.as_bytes())
                    .with_context(|| format!("writing {}", meta.display()))
            }
            Err(error) => Err(error).with_context(|| format!("reading {}", meta.display())),
        }
    }
}

/// `<log.dir>/<topic>-<partition>`, as Kafka lays it out.
pub(crate) fn partition_dir(log_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    log_dir.join(format!("{topic}-{partition}"))
}

/// Makes `dir` hold `topic_id`'s data: a directory of another incarnation
/// of the topic (deleted and created again while this broker was away) is
/// removed; one without a record (written by an older version) is adopted.
/// Returns whether the directory starts out new (empty).
pub(crate) fn claim_partition_dir(dir: &Path, topic_id: Uuid) -> std::io::Result<bool> {
    let record = dir.join(PARTITION_METADATA_FILE_NAME);
    let fresh = match std::fs::read_to_string(&record) {
        Ok(text) => {
            let recorded = text
                .lines()
                .find_map(|line| line.strip_prefix("topic_id: "))
                .and_then(|id| Uuid::try_parse(id.trim()).ok());
            if recorded == Some(topic_id) {
                return Ok(false);
            }
            tracing::warn!(dir = %dir.display(), ?recorded, %topic_id, "the directory holds another incarnation of the topic; removing it");
            remove_dir(dir)?;
            true
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => !dir.exists(),
        Err(error) => return Err(error),
    };
    std::fs::create_dir_all(dir)?;
    let text = format!("version: 0\ntopic_id: {topic_id}\n");
    storage::checkpoint::write_atomically(dir, PARTITION_METADATA_FILE_NAME, text.as_bytes())
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(fresh)
}

/// Removes a partition directory: renamed first (so that a crash leaves a
/// `-delete` directory that start-up finishes), then deleted.
pub(crate) fn remove_dir(dir: &Path) -> std::io::Result<()> {
    let Some(name) = dir.file_name() else {
        return Ok(());
    };
    let doomed = dir.with_file_name(format!(
        "{}.{}-delete",
        name.to_string_lossy(),
        Uuid::new_v4().simple()
    ));
    match std::fs::rename(dir, &doomed) {
        Ok(()) => std::fs::remove_dir_all(&doomed),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Finishes deletions that a crash interrupted.
pub(crate) fn remove_deleted_directories(log_dir: &Path) {
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

/// Removes partition directories that are not in `hosted` (topic,
/// partition): topics deleted, or replicas moved away, while this broker
/// was down.
pub(crate) fn remove_strays(log_dir: &Path, hosted: &BTreeSet<(String, i32)>) {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(partition) = partition.parse::<i32>() else {
            continue;
        };
        if crate::topics::validate_topic_name(topic).is_err()
            || hosted.contains(&(topic.to_string(), partition))
        {
            continue;
        }
        tracing::warn!(dir = %entry.path().display(), "removing the directory of a partition this broker does not host");
        if let Err(error) = remove_dir(&entry.path()) {
            tracing::warn!(dir = %entry.path().display(), %error, "could not remove a stray partition directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_belongs_to_one_cluster_and_one_process() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DataDir::lock(temp.path()).unwrap();
        assert!(DataDir::lock(temp.path()).is_err(), "locked twice");
        dir.check_identity("cluster-a", 1).unwrap();
        dir.check_identity("cluster-a", 1).unwrap();
        assert!(dir.check_identity("cluster-b", 1).is_err());
        assert!(dir.check_identity("cluster-a", 2).is_err());
        drop(dir);
        assert!(DataDir::lock(temp.path()).is_ok());
    }

    #[test]
    fn partition_dirs_of_another_incarnation_are_replaced() {
        let temp = tempfile::tempdir().unwrap();
        let dir = partition_dir(temp.path(), "t", 0);
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(claim_partition_dir(&dir, old).unwrap(), "new");
        std::fs::write(dir.join("00000000000000000000.log"), b"old data").unwrap();
        assert!(!claim_partition_dir(&dir, old).unwrap(), "kept");
        assert!(dir.join("00000000000000000000.log").exists());
        assert!(claim_partition_dir(&dir, new).unwrap(), "replaced");
        assert!(!dir.join("00000000000000000000.log").exists());
        // A directory without a record is adopted.
        let legacy = partition_dir(temp.path(), "t", 1);
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join("00000000000000000000.log"), b"data").unwrap();
        assert!(!claim_partition_dir(&legacy, new).unwrap(), "adopted");
        assert!(legacy.join("00000000000000000000.log").exists());
    }

    #[test]
    fn strays_go_and_hosted_partitions_stay() {
        let temp = tempfile::tempdir().unwrap();
        for name in [
            "kept-0",
            "gone-3",
            "not a partition",
            "__consumer_offsets-7",
        ] {
            std::fs::create_dir_all(temp.path().join(name)).unwrap();
        }
        let hosted = BTreeSet::from([
            ("kept".to_string(), 0),
            ("__consumer_offsets".to_string(), 7),
        ]);
        remove_strays(temp.path(), &hosted);
        let mut left: Vec<String> = std::fs::read_dir(temp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["__consumer_offsets-7", "kept-0", "not a partition"]);
    }
}
