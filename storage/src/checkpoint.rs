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
use std::path::Path;

use crate::config::CHECKPOINT_FILE_BYTES_MAX;
use crate::error::{IoContext, StorageError};

pub const RECOVERY_POINT_FILE: &str = "recovery-point-checkpoint";
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset-checkpoint";
pub const CLEANER_OFFSET_FILE: &str = "cleaner-offset-checkpoint";
/// The high watermark of a replicated partition, as last known.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark-checkpoint";
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
pub const TEMPORARY_SUFFIX: &str = ".tmp";
const VERSION: &str = "0";

/// Replaces `dir/name` with `contents` atomically and durably.
pub fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> Result<(), StorageError> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}{TEMPORARY_SUFFIX}"));
    let mut file = File::create(&temporary).at(&temporary)?;
    file.write_all(contents).at(&temporary)?;
    file.sync_all().at(&temporary)?;
    std::fs::rename(&temporary, &path).at(&path)?;
    sync_dir(dir)
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
    write_atomically(dir, name, format!("{VERSION}\n{offset}\n").as_bytes())
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
