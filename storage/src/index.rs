//! The two sparse indexes of a segment, kept in memory as sorted `Vec`s and
//! mirrored in append-only files.
//!
//! - Offset index (`.index`): entries of (offset relative to the segment's
//!   base: u32, file position of the batch with that base offset: u32). An
//!   entry is added every `index.interval.bytes` of log, always for the first
//!   batch. Both fields strictly increase.
//! - Time index (`.timeindex`): entries of (largest timestamp so far in the
//!   segment: i64, relative base offset of the first batch that reached it:
//!   u32). Added at the same points as offset entries when the largest
//!   timestamp has grown, and once more when the segment is sealed. Since an
//!   entry is only added when the timestamp grows, every batch before the
//!   entry's batch has a smaller maxTimestamp than the entry's.
//!
//! All integers are big-endian.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::SEGMENT_INDEX_BYTES_MAX;
use crate::error::{IoContext, StorageError};

pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;
pub const OFFSET_INDEX_ENTRIES_MAX: usize = SEGMENT_INDEX_BYTES_MAX / OFFSET_INDEX_ENTRY_BYTES;
pub const TIME_INDEX_ENTRIES_MAX: usize = SEGMENT_INDEX_BYTES_MAX / TIME_INDEX_ENTRY_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Why an index file cannot be used as is (it is then rebuilt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexProblem {
    #[error("missing")]
    Missing,
    #[error("size {0} is not a whole number of entries")]
    PartialEntry(u64),
    #[error("{0} entries is more than the limit")]
    TooManyEntries(usize),
    #[error("entry {0} is out of order")]
    OutOfOrder(usize),
    #[error("entry {index} points at byte {position}, past the log's {log_size} bytes")]
    PastLogEnd {
        index: usize,
        position: u32,
        log_size: u64,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= OFFSET_INDEX_ENTRIES_MAX
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    pub fn push(&mut self, entry: OffsetEntry) {
        if let Some(last) = self.last() {
            assert!(
                entry.relative_offset > last.relative_offset && entry.position > last.position,
                "offset index entries must increase: {last:?} then {entry:?}"
            );
        }
        assert!(!self.is_full(), "offset index full");
        self.entries.push(entry);
    }

    /// The last entry at or before `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let after = self
            .entries
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        after.checked_sub(1).map(|at| self.entries[at])
    }

    /// Drops entries for batches at or past `position` (log truncation).
    pub fn truncate_to_position(&mut self, position: u64) {
        self.entries
            .retain(|entry| (entry.position as u64) < position);
    }

    pub fn encode(entries: &[OffsetEntry]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(entries.len() * OFFSET_INDEX_ENTRY_BYTES);
        for entry in entries {
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
            bytes.extend_from_slice(&entry.position.to_be_bytes());
        }
        bytes
    }

    /// Decodes an index file's bytes, checking that they can describe a log
    /// of `log_size` bytes.
    pub fn decode(bytes: &[u8], log_size: u64) -> Result<OffsetIndex, IndexProblem> {
        let count = whole_entries(bytes, OFFSET_INDEX_ENTRY_BYTES, OFFSET_INDEX_ENTRIES_MAX)?;
        let mut index = OffsetIndex {
            entries: Vec::with_capacity(count),
        };
        for (at, chunk) in bytes.chunks_exact(OFFSET_INDEX_ENTRY_BYTES).enumerate() {
            let entry = OffsetEntry {
                relative_offset: be_u32(&chunk[0..4]),
                position: be_u32(&chunk[4..8]),
            };
            if entry.position as u64 >= log_size {
                return Err(IndexProblem::PastLogEnd {
                    index: at,
                    position: entry.position,
                    log_size,
                });
            }
            if let Some(last) = index.last() {
                if entry.relative_offset <= last.relative_offset || entry.position <= last.position
                {
                    return Err(IndexProblem::OutOfOrder(at));
                }
            }
            index.entries.push(entry);
        }
        Ok(index)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= TIME_INDEX_ENTRIES_MAX
    }

    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    /// Whether an entry with `timestamp` would add information.
    pub fn accepts(&self, timestamp: i64) -> bool {
        !self.is_full() && self.last().is_none_or(|last| timestamp > last.timestamp)
    }

    pub fn push(&mut self, entry: TimeEntry) {
        if let Some(last) = self.last() {
            assert!(
                entry.timestamp > last.timestamp && entry.relative_offset >= last.relative_offset,
                "time index entries must increase: {last:?} then {entry:?}"
            );
        }
        assert!(!self.is_full(), "time index full");
        self.entries.push(entry);
    }

    /// The last entry whose timestamp is at or before `timestamp`.
    pub fn lookup(&self, timestamp: i64) -> Option<TimeEntry> {
        let after = self
            .entries
            .partition_point(|entry| entry.timestamp <= timestamp);
        after.checked_sub(1).map(|at| self.entries[at])
    }

    /// Drops entries pointing at or past `relative_offset` (log truncation).
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        self.entries
            .retain(|entry| entry.relative_offset < relative_offset);
    }

    pub fn encode(entries: &[TimeEntry]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(entries.len() * TIME_INDEX_ENTRY_BYTES);
        for entry in entries {
            bytes.extend_from_slice(&entry.timestamp.to_be_bytes());
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        bytes
    }

    /// Decodes a time index file's bytes. Whether the offsets lie inside the
    /// segment is checked by the caller, who knows the segment's last offset.
    pub fn decode(bytes: &[u8]) -> Result<TimeIndex, IndexProblem> {
        let count = whole_entries(bytes, TIME_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRIES_MAX)?;
        let mut index = TimeIndex {
            entries: Vec::with_capacity(count),
        };
        for (at, chunk) in bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES).enumerate() {
            let timestamp = i64::from_be_bytes(chunk[0..8].try_into().expect("8 bytes"));
            let entry = TimeEntry {
                timestamp,
                relative_offset: be_u32(&chunk[8..12]),
            };
            if let Some(last) = index.last() {
                if entry.timestamp <= last.timestamp || entry.relative_offset < last.relative_offset
                {
                    return Err(IndexProblem::OutOfOrder(at));
                }
            }
            index.entries.push(entry);
        }
        Ok(index)
    }
}

fn whole_entries(
    bytes: &[u8],
    entry_bytes: usize,
    entries_max: usize,
) -> Result<usize, IndexProblem> {
    if !bytes.len().is_multiple_of(entry_bytes) {
        return Err(IndexProblem::PartialEntry(bytes.len() as u64));
    }
    let count = bytes.len() / entry_bytes;
    if count > entries_max {
        return Err(IndexProblem::TooManyEntries(count));
    }
    Ok(count)
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("4 bytes"))
}

/// Reads a whole index file of `entry_bytes` entries, refusing files larger
/// than any valid index. I/O errors are errors; a missing or oversized file
/// is a problem that a rebuild fixes.
pub fn read_index_file(
    path: &Path,
    entry_bytes: usize,
) -> Result<Result<Vec<u8>, IndexProblem>, StorageError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(IndexProblem::Missing))
        }
        Err(error) => return Err(error).at(path),
    };
    let size = file.metadata().at(path)?.len();
    if size > SEGMENT_INDEX_BYTES_MAX as u64 {
        return Ok(Err(IndexProblem::TooManyEntries(
            (size / entry_bytes as u64) as usize,
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, size), &mut bytes).at(path)?;
    Ok(Ok(bytes))
}

/// The index files of the active segment, appended to. New entries are kept
/// in memory and written out (open, append, close) every
/// [`PENDING_BYTES_MAX`] bytes and on `sync`, so that a partition holds one
/// file descriptor (its active log) however many partitions there are. After
/// a crash, entries not yet written are rebuilt by recovery, which scans the
/// active segment anyway.
#[derive(Debug)]
pub struct IndexAppender {
    offset_path: PathBuf,
    offset_pending: Vec<u8>,
    time_path: PathBuf,
    time_pending: Vec<u8>,
}

/// Index bytes of the active segment held before they are written out.
pub const PENDING_BYTES_MAX: usize = 4096;

impl IndexAppender {
    pub fn new(offset_path: &Path, time_path: &Path) -> IndexAppender {
        IndexAppender {
            offset_path: offset_path.to_path_buf(),
            offset_pending: Vec::new(),
            time_path: time_path.to_path_buf(),
            time_pending: Vec::new(),
        }
    }

    pub fn append(
        &mut self,
        offsets: &[OffsetEntry],
        times: &[TimeEntry],
    ) -> Result<(), StorageError> {
        self.offset_pending
            .extend_from_slice(&OffsetIndex::encode(offsets));
        self.time_pending
            .extend_from_slice(&TimeIndex::encode(times));
        if self.offset_pending.len() + self.time_pending.len() >= PENDING_BYTES_MAX {
            self.write_pending(false)?;
        }
        Ok(())
    }

    /// Writes the pending entries out and fsyncs both files.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.write_pending(true)
    }

    /// Writes the pending entries out, without fsync.
    pub fn write_out(&mut self) -> Result<(), StorageError> {
        self.write_pending(false)
    }

    /// Forgets the pending entries: the caller rewrites the files whole.
    pub fn clear_pending(&mut self) {
        self.offset_pending.clear();
        self.time_pending.clear();
    }

    fn write_pending(&mut self, sync: bool) -> Result<(), StorageError> {
        for (path, pending) in [
            (&self.offset_path, &mut self.offset_pending),
            (&self.time_path, &mut self.time_pending),
        ] {
            if pending.is_empty() && !sync {
                continue;
            }
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .at(path)?;
            file.write_all(pending).at(path)?;
            pending.clear();
            if sync {
                file.sync_data().at(path)?;
            }
        }
        Ok(())
    }
}

/// Replaces an index file's contents (after a rebuild or a truncation).
pub fn write_index_file(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let mut file = File::create(path).at(path)?;
    file.write_all(bytes).at(path)?;
    file.sync_data().at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(relative_offset: u32, position: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset,
            position,
        }
    }

    fn time(timestamp: i64, relative_offset: u32) -> TimeEntry {
        TimeEntry {
            timestamp,
            relative_offset,
        }
    }

    #[test]
    fn offset_lookup_finds_the_entry_at_or_before() {
        let mut index = OffsetIndex::default();
        assert_eq!(index.lookup(5), None);
        index.push(offset(0, 0));
        index.push(offset(10, 4096));
        index.push(offset(25, 9000));
        assert_eq!(index.lookup(0), Some(offset(0, 0)));
        assert_eq!(index.lookup(9), Some(offset(0, 0)));
        assert_eq!(index.lookup(10), Some(offset(10, 4096)));
        assert_eq!(index.lookup(u32::MAX), Some(offset(25, 9000)));
        index.truncate_to_position(4096);
        assert_eq!(index.entries(), &[offset(0, 0)]);
    }

    #[test]
    fn time_lookup_finds_the_entry_at_or_before() {
        let mut index = TimeIndex::default();
        assert!(index.accepts(-1));
        index.push(time(100, 0));
        assert!(!index.accepts(100));
        index.push(time(250, 7));
        assert_eq!(index.lookup(99), None);
        assert_eq!(index.lookup(100), Some(time(100, 0)));
        assert_eq!(index.lookup(249), Some(time(100, 0)));
        assert_eq!(index.lookup(i64::MAX), Some(time(250, 7)));
        index.truncate_to_offset(7);
        assert_eq!(index.entries(), &[time(100, 0)]);
    }

    #[test]
    fn files_round_trip() {
        let offsets = [offset(0, 0), offset(3, 200), offset(9, 5000)];
        let decoded = OffsetIndex::decode(&OffsetIndex::encode(&offsets), 6000).unwrap();
        assert_eq!(decoded.entries(), &offsets);
        let times = [time(-1, 0), time(5, 3), time(1 << 40, 3)];
        let decoded = TimeIndex::decode(&TimeIndex::encode(&times)).unwrap();
        assert_eq!(decoded.entries(), &times);
    }

    #[test]
    fn bad_files_are_refused() {
        let good = OffsetIndex::encode(&[offset(0, 0), offset(3, 200)]);
        assert_eq!(
            OffsetIndex::decode(&good[..15], 1000),
            Err(IndexProblem::PartialEntry(15))
        );
        assert_eq!(
            OffsetIndex::decode(&good, 200),
            Err(IndexProblem::PastLogEnd {
                index: 1,
                position: 200,
                log_size: 200
            })
        );
        let backwards = OffsetIndex::encode(&[offset(3, 200), offset(2, 300)]);
        assert_eq!(
            OffsetIndex::decode(&backwards, 1000),
            Err(IndexProblem::OutOfOrder(1))
        );
        let same_position = OffsetIndex::encode(&[offset(1, 200), offset(2, 200)]);
        assert_eq!(
            OffsetIndex::decode(&same_position, 1000),
            Err(IndexProblem::OutOfOrder(1))
        );
        let too_many = vec![0u8; (OFFSET_INDEX_ENTRIES_MAX + 1) * OFFSET_INDEX_ENTRY_BYTES];
        assert!(matches!(
            OffsetIndex::decode(&too_many, 1000),
            Err(IndexProblem::TooManyEntries(_))
        ));

        let times = TimeIndex::encode(&[time(5, 1), time(5, 2)]);
        assert_eq!(TimeIndex::decode(&times), Err(IndexProblem::OutOfOrder(1)));
        assert_eq!(
            TimeIndex::decode(&times[..13]),
            Err(IndexProblem::PartialEntry(13))
        );
    }

    #[test]
    fn appender_and_reader_agree() {
        let dir = tempfile::tempdir().unwrap();
        let offset_path = dir.path().join("a.index");
        let time_path = dir.path().join("a.timeindex");
        assert_eq!(
            read_index_file(&offset_path, OFFSET_INDEX_ENTRY_BYTES).unwrap(),
            Err(IndexProblem::Missing)
        );
        let mut appender = IndexAppender::new(&offset_path, &time_path);
        appender.append(&[offset(0, 0)], &[time(7, 0)]).unwrap();
        appender.append(&[offset(4, 100)], &[]).unwrap();
        // Small appends wait in memory until a sync.
        assert_eq!(
            read_index_file(&offset_path, OFFSET_INDEX_ENTRY_BYTES).unwrap(),
            Err(IndexProblem::Missing)
        );
        appender.sync().unwrap();
        let bytes = read_index_file(&offset_path, OFFSET_INDEX_ENTRY_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(
            OffsetIndex::decode(&bytes, 101).unwrap().entries(),
            &[offset(0, 0), offset(4, 100)]
        );
        let bytes = read_index_file(&time_path, TIME_INDEX_ENTRY_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(TimeIndex::decode(&bytes).unwrap().entries(), &[time(7, 0)]);

        // Enough of them are written out without one.
        let many: Vec<_> = (1..=PENDING_BYTES_MAX as u32 / 8)
            .map(|i| offset(4 + i, 100 + i))
            .collect();
        appender.append(&many, &[]).unwrap();
        let bytes = read_index_file(&offset_path, OFFSET_INDEX_ENTRY_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(bytes.len(), (2 + many.len()) * OFFSET_INDEX_ENTRY_BYTES);

        std::fs::write(&offset_path, vec![0u8; SEGMENT_INDEX_BYTES_MAX + 8]).unwrap();
        assert!(matches!(
            read_index_file(&offset_path, OFFSET_INDEX_ENTRY_BYTES).unwrap(),
            Err(IndexProblem::TooManyEntries(_))
        ));
    }
}
