//! Small text files in the partition directory, each replaced atomically
//! (write a temporary file, fsync, rename, fsync the directory):
//!
//! - `recovery-point-checkpoint`: every batch below this offset is on disk
//!   (fsynced); recovery after a crash starts at the segment containing it.
//! - `log-start-offset-checkpoint`: the log start offset, which DeleteRecords
//!   can move into the middle of a segment.
//! - `leader-epoch-checkpoint`: see [`crate::epoch`].
//! - `cleaner-offset-checkpoint`: the first offset the log cleaner has not
//!   cleaned yet (see [`crate::cleaner`]); missing means the log start.
//! - `clean-shutdown`: an empty marker written by `close` after everything
//!   is fsynced; `open` trusts the segments when it finds it.
//!
//! Offset files hold a version line `0` and then the offset, one per line.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::CHECKPOINT_FILE_BYTES_MAX;
use crate::error::{IoContext, StorageError};

pub const RECOVERY_POINT_FILE: &str = "recovery-point-checkpoint";
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset-checkpoint";
pub const CLEANER_OFFSET_FILE: &str = "cleaner-offset-checkpoint";
/// The high watermark of a replicated partition, as last known.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark-checkpoint";
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
pub const TEMPORARY_SUFFIX: &str = ".tmp";
/// Files of a deleted segment, renamed under the log's lock and removed
/// after it (Kafka's `.deleted`); an open removes any left by a crash.
pub const DELETED_SUFFIX: &str = ".deleted";
const VERSION: &str = "0";

/// Replaces `dir/name` with `contents` atomically and durably.
pub fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> Result<(), StorageError> {
    replace(dir, name, contents, true)?;
    sync_dir(dir)
}

/// Replaces `dir/name` with `contents` atomically (write a temporary file,
/// rename) but not durably: nothing is fsynced. Returns the file's path.
pub fn write_replacing(dir: &Path, name: &str, contents: &[u8]) -> Result<PathBuf, StorageError> {
    replace(dir, name, contents, false)
}

/// Writes a temporary file (fsynced if `sync`) and renames it to `dir/name`.
fn replace(dir: &Path, name: &str, contents: &[u8], sync: bool) -> Result<PathBuf, StorageError> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}{TEMPORARY_SUFFIX}"));
    let mut file = File::create(&temporary).at(&temporary)?;
    file.write_all(contents).at(&temporary)?;
    if sync {
        file.sync_all().at(&temporary)?;
    }
    std::fs::rename(&temporary, &path).at(&path)?;
    Ok(path)
}

/// fsyncs the file at `path` if it exists (one removed meanwhile has
/// nothing left to keep).
pub fn sync_if_present(path: &Path) -> Result<(), StorageError> {
    match File::open(path) {
        Ok(file) => file.sync_all().at(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).at(path),
    }
}

/// Reads `dir/name`; `Ok(None)` if it is missing, or larger than any
/// checkpoint we write, or not text (with a warning): the caller then
/// rebuilds what the file would have said.
pub fn read_small_file(dir: &Path, name: &str) -> Result<Option<String>, StorageError> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).at(&path),
    };
    let mut bytes = Vec::new();
    file.take(CHECKPOINT_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .at(&path)?;
    if bytes.len() as u64 > CHECKPOINT_FILE_BYTES_MAX {
        tracing::warn!(path = %path.display(), "checkpoint file too large, ignored");
        return Ok(None);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(_) => {
            tracing::warn!(path = %path.display(), "checkpoint file is not text, ignored");
            Ok(None)
        }
    }
}

pub fn write_offset(dir: &Path, name: &str, offset: i64) -> Result<(), StorageError> {
    write_atomically(dir, name, &offset_contents(offset))
}

/// An offset file's contents.
pub fn offset_contents(offset: i64) -> Vec<u8> {
    format!("{VERSION}\n{offset}\n").into_bytes()
}

/// An offset checkpoint; `None` if missing or unreadable (with a warning).
pub fn read_offset(dir: &Path, name: &str) -> Result<Option<i64>, StorageError> {
    let Some(text) = read_small_file(dir, name)? else {
        return Ok(None);
    };
    let mut lines = text.lines();
    let parsed = match (
        lines.next(),
        lines.next().map(str::trim).map(str::parse::<i64>),
        lines.next(),
    ) {
        (Some(VERSION), Some(Ok(offset)), None) if offset >= 0 => Some(offset),
        _ => None,
    };
    if parsed.is_none() {
        tracing::warn!(dir = %dir.display(), name, "unreadable checkpoint ignored");
    }
    Ok(parsed)
}

/// A checkpoint file of an open log whose contents change under the log's
/// lock and may be written after it: [`CheckpointFile::set`] under the
/// lock, then [`CheckpointFile::write`] there or later on any thread.
/// Writes are one at a time and each writes the latest contents set, so a
/// late write never puts back what a later `set` replaced (a recovery point
/// lowered by a truncation stays lowered).
#[derive(Debug, Clone)]
pub struct CheckpointFile(Arc<CheckpointFileInner>);

#[derive(Debug)]
struct CheckpointFileInner {
    dir: PathBuf,
    name: &'static str,
    /// The latest contents set, and how many times `set` was called.
    latest: Mutex<(u64, Arc<[u8]>)>,
    /// The count of the contents on disk; held while writing.
    written: Mutex<u64>,
}

impl CheckpointFile {
    /// The file `dir/name`, which holds what it should now.
    pub fn new(dir: &Path, name: &'static str) -> CheckpointFile {
        CheckpointFile(Arc::new(CheckpointFileInner {
            dir: dir.to_path_buf(),
            name,
            latest: Mutex::new((0, Arc::from(Vec::new()))),
            written: Mutex::new(0),
        }))
    }

    pub fn set(&self, contents: Vec<u8>) {
        let mut latest = self.0.latest.lock();
        *latest = (latest.0 + 1, Arc::from(contents));
    }

    pub fn set_offset(&self, offset: i64) {
        self.set(offset_contents(offset));
    }

    /// Writes the latest contents set, atomically and durably, unless the
    /// file holds them already.
    pub fn write(&self) -> Result<(), StorageError> {
        let mut written = self.0.written.lock();
        let (count, contents) = self.0.latest.lock().clone();
        if *written != count {
            write_atomically(&self.0.dir, self.0.name, &contents)?;
            *written = count;
        }
        Ok(())
    }

    /// `set_offset`, then `write`.
    pub fn write_offset(&self, offset: i64) -> Result<(), StorageError> {
        self.set_offset(offset);
        self.write()
    }

    fn same_file(&self, other: &CheckpointFile) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What a log leaves to do after its lock is released, because it may wait
/// for the disk: checkpoint writes (the log's memory is already right), then
/// the removal of deleted segments' files (renamed with [`DELETED_SUFFIX`];
/// an open removes any a crash left). Dropped undone, the next open makes
/// up for it.
#[must_use]
#[derive(Debug, Default)]
pub struct AfterLock {
    checkpoints: Vec<CheckpointFile>,
    retired: Vec<PathBuf>,
}

impl AfterLock {
    pub fn is_empty(&self) -> bool {
        self.checkpoints.is_empty() && self.retired.is_empty()
    }

    pub fn write_later(&mut self, file: &CheckpointFile) {
        if !self.checkpoints.iter().any(|f| f.same_file(file)) {
            self.checkpoints.push(file.clone());
        }
    }

    pub fn remove_later(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        self.retired.extend(paths);
    }

    pub fn run(self) -> Result<(), StorageError> {
        for file in &self.checkpoints {
            file.write()?;
        }
        for path in &self.retired {
            remove_if_present(path)?;
        }
        Ok(())
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|handle| handle.sync_all()).at(dir)
}

pub fn remove_if_present(path: &Path) -> Result<bool, StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error).at(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_bad_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_offset(dir.path(), RECOVERY_POINT_FILE).unwrap(), None);
        write_offset(dir.path(), RECOVERY_POINT_FILE, 1234).unwrap();
        assert_eq!(
            read_offset(dir.path(), RECOVERY_POINT_FILE).unwrap(),
            Some(1234)
        );
        assert!(!dir
            .path()
            .join(format!("{RECOVERY_POINT_FILE}{TEMPORARY_SUFFIX}"))
            .exists());

        for garbage in [
            &b"0\n-5\n"[..],
            b"1\n5\n",
            b"0\n",
            b"\xff\xfe",
            b"0\n5\n6\n",
        ] {
            std::fs::write(dir.path().join(RECOVERY_POINT_FILE), garbage).unwrap();
            assert_eq!(
                read_offset(dir.path(), RECOVERY_POINT_FILE).unwrap(),
                None,
                "{garbage:?}"
            );
        }
        std::fs::write(
            dir.path().join(RECOVERY_POINT_FILE),
            vec![b'0'; CHECKPOINT_FILE_BYTES_MAX as usize + 1],
        )
        .unwrap();
        assert_eq!(read_offset(dir.path(), RECOVERY_POINT_FILE).unwrap(), None);
    }
}
