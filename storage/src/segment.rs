//! One segment: a log file of whole v2 batches plus its two indexes, all
//! named by the segment's base offset (`00000000000000000042.log`,
//! `.index`, `.timeindex`).
//!
//! A segment comes back from disk in one of two ways:
//! - [`Segment::open_trusted`] (after a clean shutdown, or below the recovery
//!   point): the index files are checked for sanity and the batches after
//!   the last offset-index entry are scanned (headers only) to find the
//!   segment's end. Any doubt falls back to recovery.
//! - [`Segment::recover`]: every batch is scanned with its CRC; the file is
//!   truncated at the first torn or corrupt batch and both indexes are
//!   rebuilt.
//!
//! Only the active segment (the last one) holds its index files open for
//! appending; sealed segments keep their log file open for reads.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use protocol::batch::{BatchError, BatchHeader, BATCH_HEADER_BYTES};

use crate::checkpoint::DELETED_SUFFIX;
use crate::config::{LOOKUP_CHUNK_BYTES, RECOVERY_CHUNK_BYTES};
use crate::error::{IoContext, StorageError};
use crate::index::{
    read_index_file, write_index_file, IndexAppender, OffsetEntry, OffsetIndex, TimeEntry,
    TimeIndex, OFFSET_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES,
};
use crate::records::find_record;
use crate::scan::{BatchScanner, Scanned};

pub const LOG_SUFFIX: &str = ".log";
pub const OFFSET_INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Digits of a segment file name: the base offset, zero-padded.
pub const SEGMENT_NAME_DIGITS: usize = 20;

pub fn segment_file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:0SEGMENT_NAME_DIGITS$}{suffix}")
}

/// `(base offset, suffix)` of a segment file name.
pub fn parse_segment_file_name(name: &str) -> Option<(i64, &str)> {
    let digits = name.get(..SEGMENT_NAME_DIGITS)?;
    let suffix = &name[SEGMENT_NAME_DIGITS..];
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let base_offset = digits.parse::<i64>().ok()?;
    [LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX]
        .contains(&suffix)
        .then_some((base_offset, suffix))
}

/// A batch about to be written: its header, already given its offset, leader
/// epoch and maybe LogAppendTime, kept apart from its untouched records so
/// that the records are never copied.
#[derive(Debug, Clone)]
pub struct PreparedBatch {
    pub header_bytes: [u8; BATCH_HEADER_BYTES],
    pub header: BatchHeader,
    pub records: Bytes,
}

/// The largest batch maxTimestamp in a segment and the base offset of the
/// first batch that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxTimestamp {
    pub timestamp: i64,
    pub offset: i64,
}

#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    offset_index_path: PathBuf,
    time_index_path: PathBuf,
    log: File,
    /// Bytes of whole batches in the log file.
    size: u64,
    /// Last offset + 1 of the last batch, or the base offset when empty.
    next_offset: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    max_timestamp: Option<MaxTimestamp>,
    /// Bytes since (and including) the batch of the last index entry.
    bytes_since_index_entry: u64,
    /// When the first batch was appended (segment.ms rolls by it); from the
    /// first batch's timestamp for segments read back from disk.
    first_batch_time_ms: Option<i64>,
    /// Open index files, for the active segment only.
    appender: Option<IndexAppender>,
    /// Written since the last fsync.
    unflushed: bool,
}

/// Where a scan of a segment stopped early, and why.
struct ScanStop {
    position: u64,
    reason: String,
}

impl Segment {
    fn paths(dir: &Path, base_offset: i64) -> [PathBuf; 3] {
        [LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX]
            .map(|suffix| dir.join(segment_file_name(base_offset, suffix)))
    }

    fn with_file(dir: &Path, base_offset: i64, log: File) -> Segment {
        let [log_path, offset_index_path, time_index_path] = Self::paths(dir, base_offset);
        Segment {
            base_offset,
            log_path,
            offset_index_path,
            time_index_path,
            log,
            size: 0,
            next_offset: base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: None,
            bytes_since_index_entry: 0,
            first_batch_time_ms: None,
            appender: None,
            unflushed: false,
        }
    }

    fn open_log(path: &Path, create: bool) -> Result<File, StorageError> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .open(path)
            .at(path)
    }

    /// A new, empty segment; replaces any files already named so.
    pub fn create(dir: &Path, base_offset: i64) -> Result<Segment, StorageError> {
        assert!(base_offset >= 0, "segment base offset {base_offset}");
        let [log_path, offset_index_path, time_index_path] = Self::paths(dir, base_offset);
        let log = Self::open_log(&log_path, true)?;
        log.set_len(0).at(&log_path)?;
        // Empty, and fsynced with the segment (a missing or short index is
        // rebuilt by recovery): an fsync here would stall the roll behind
        // the writeback of everything before it.
        for path in [&offset_index_path, &time_index_path] {
            File::create(path).at(path)?;
        }
        Ok(Self::with_file(dir, base_offset, log))
    }

    /// Opens a segment whose files are trusted to be complete, checking what
    /// can be checked cheaply; falls back to [`Segment::recover`]. Returns
    /// the segment and the bytes recovery cut off.
    pub fn open_trusted(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(Segment, u64), StorageError> {
        let [log_path, ..] = Self::paths(dir, base_offset);
        let log = Self::open_log(&log_path, false)?;
        let mut segment = Self::with_file(dir, base_offset, log);
        segment.size = segment.log.metadata().at(&log_path)?.len();
        match segment.load_indexes()? {
            Ok(()) => {
                segment.first_batch_time_ms = segment.first_batch_time(now_ms)?;
                Ok((segment, 0))
            }
            Err(problem) => {
                tracing::warn!(segment = %log_path.display(), %problem, "rebuilding the segment's indexes");
                drop(segment);
                Self::recover(dir, base_offset, index_interval_bytes, now_ms)
            }
        }
    }

    /// Loads and checks both index files and finds the end of the log from
    /// the last offset-index entry. The outer error is I/O; the inner one a
    /// reason to rebuild.
    fn load_indexes(&mut self) -> Result<Result<(), String>, StorageError> {
        let offset_bytes = match read_index_file(&self.offset_index_path, OFFSET_INDEX_ENTRY_BYTES)?
        {
            Ok(bytes) => bytes,
            Err(problem) => return Ok(Err(format!("offset index {problem}"))),
        };
        let time_bytes = match read_index_file(&self.time_index_path, TIME_INDEX_ENTRY_BYTES)? {
            Ok(bytes) => bytes,
            Err(problem) => return Ok(Err(format!("time index {problem}"))),
        };
        let decoded = OffsetIndex::decode(&offset_bytes, self.size)
            .and_then(|offsets| Ok((offsets, TimeIndex::decode(&time_bytes)?)));
        let (offset_index, time_index) = match decoded {
            Ok(indexes) => indexes,
            Err(problem) => return Ok(Err(format!("index {problem}"))),
        };
        let Some(last_entry) = offset_index.last() else {
            return Ok(match (self.size, time_index.last()) {
                (0, None) => Ok(()),
                (0, Some(_)) => Err("time entries for an empty log".into()),
                _ => Err("no index entry for the first batch".into()),
            });
        };
        // The batches after the last entry: headers only, as the files are trusted.
        let mut scanner = BatchScanner::new(
            &self.log,
            &self.log_path,
            last_entry.position as u64,
            self.size,
            RECOVERY_CHUNK_BYTES,
            false,
        );
        let mut tail_max: Option<MaxTimestamp> = None;
        let mut expected_base = self.base_offset + last_entry.relative_offset as i64;
        let mut first = true;
        loop {
            match scanner.next_batch()? {
                Scanned::Batch { header, .. } => {
                    let in_order = if first {
                        header.base_offset == expected_base
                    } else {
                        header.base_offset >= expected_base
                    };
                    if !in_order || self.relative(header.last_offset()).is_none() {
                        return Ok(Err(format!(
                            "batch at offset {} is out of place",
                            header.base_offset
                        )));
                    }
                    first = false;
                    expected_base = header.next_offset();
                    if tail_max.is_none_or(|max| header.max_timestamp > max.timestamp) {
                        tail_max = Some(MaxTimestamp {
                            timestamp: header.max_timestamp,
                            offset: header.base_offset,
                        });
                    }
                }
                Scanned::End => break,
                Scanned::Invalid { position, reason } => {
                    return Ok(Err(format!("at byte {position}: {reason}")))
                }
            }
        }
        let next_offset = expected_base;
        if time_index.last().is_none() {
            // The first batch always gets a time entry.
            return Ok(Err("no time index entry for the first batch".into()));
        }
        if time_index
            .last()
            .is_some_and(|entry| self.base_offset + entry.relative_offset as i64 >= next_offset)
        {
            return Ok(Err("time index points past the log".into()));
        }
        let indexed_max = time_index.last().map(|entry| MaxTimestamp {
            timestamp: entry.timestamp,
            offset: self.base_offset + entry.relative_offset as i64,
        });
        self.max_timestamp = match (indexed_max, tail_max) {
            (Some(indexed), Some(tail)) if tail.timestamp > indexed.timestamp => Some(tail),
            (Some(indexed), Some(tail))
                if tail.timestamp == indexed.timestamp && tail.offset < indexed.offset =>
            {
                Some(tail)
            }
            (Some(indexed), _) => Some(indexed),
            (None, tail) => tail,
        };
        self.next_offset = next_offset;
        self.bytes_since_index_entry = self.size - last_entry.position as u64;
        self.offset_index = offset_index;
        self.time_index = time_index;
        Ok(Ok(()))
    }

    /// Re-validates every batch (CRC included), truncates the log at the
    /// first torn or corrupt one and rebuilds both indexes. Returns the
    /// segment and the bytes cut off.
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(Segment, u64), StorageError> {
        let [log_path, ..] = Self::paths(dir, base_offset);
        let log = Self::open_log(&log_path, true)?;
        let mut segment = Self::with_file(dir, base_offset, log);
        let file_size = segment.log.metadata().at(&log_path)?.len();
        segment.size = file_size;
        let stop = segment.rebuild_from_log(index_interval_bytes, true)?;
        if let Some(stop) = &stop {
            tracing::warn!(
                segment = %log_path.display(),
                position = stop.position,
                dropped_bytes = file_size - stop.position,
                reason = %stop.reason,
                "truncating the segment at the first invalid batch"
            );
            segment.log.set_len(stop.position).at(&log_path)?;
        }
        segment.add_final_time_entry();
        segment.write_indexes()?;
        segment.log.sync_all().at(&log_path)?;
        segment.first_batch_time_ms = segment.first_batch_time(now_ms)?;
        let cut_bytes = file_size - segment.size;
        Ok((segment, cut_bytes))
    }

    /// Resets the in-memory state and scans `[0, size)`, rebuilding it.
    /// Stops at the first invalid batch, leaving `size` there.
    fn rebuild_from_log(
        &mut self,
        index_interval_bytes: u32,
        verify_crc: bool,
    ) -> Result<Option<ScanStop>, StorageError> {
        let end = self.size;
        self.size = 0;
        self.next_offset = self.base_offset;
        self.offset_index = OffsetIndex::default();
        self.time_index = TimeIndex::default();
        self.max_timestamp = None;
        self.bytes_since_index_entry = 0;
        let log = self.log.try_clone().at(&self.log_path)?;
        let log_path = self.log_path.clone();
        let mut scanner =
            BatchScanner::new(&log, &log_path, 0, end, RECOVERY_CHUNK_BYTES, verify_crc);
        loop {
            match scanner.next_batch()? {
                Scanned::Batch { position, header } => {
                    if let Err(reason) = self.check_placement(&header) {
                        return Ok(Some(ScanStop { position, reason }));
                    }
                    self.track_batch(position, &header, index_interval_bytes);
                }
                Scanned::End => return Ok(None),
                Scanned::Invalid { position, reason } => {
                    return Ok(Some(ScanStop {
                        position,
                        reason: reason.to_string(),
                    }))
                }
            }
        }
    }

    /// Whether `header` can be the next batch of this segment.
    fn check_placement(&self, header: &BatchHeader) -> Result<(), String> {
        if header.base_offset < self.next_offset {
            return Err(format!(
                "batch offset {} goes back before {}",
                header.base_offset, self.next_offset
            ));
        }
        if self.relative(header.last_offset()).is_none() {
            return Err(format!(
                "batch offset {} does not fit segment {}",
                header.last_offset(),
                self.base_offset
            ));
        }
        if self.size + header.total_size() as u64 > u32::MAX as u64 {
            return Err("segment larger than 4 GiB".into());
        }
        Ok(())
    }

    /// `offset` relative to the base offset, if it fits an index entry.
    pub fn relative(&self, offset: i64) -> Option<u32> {
        offset
            .checked_sub(self.base_offset)
            .and_then(|relative| u32::try_from(relative).ok())
    }

    /// Accounts for a batch now in the log at `position`: size, next
    /// offset, largest timestamp, and index entries every
    /// `index_interval_bytes`. Returns the entries added.
    fn track_batch(
        &mut self,
        position: u64,
        header: &BatchHeader,
        index_interval_bytes: u32,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        assert_eq!(position, self.size, "batches are tracked in file order");
        let relative_offset = self
            .relative(header.base_offset)
            .expect("batch checked to fit the segment");
        let position_u32 = u32::try_from(position).expect("segment positions fit u32");
        if self
            .max_timestamp
            .is_none_or(|max| header.max_timestamp > max.timestamp)
        {
            self.max_timestamp = Some(MaxTimestamp {
                timestamp: header.max_timestamp,
                offset: header.base_offset,
            });
        }
        let mut added = (None, None);
        let due = self.offset_index.is_empty()
            || self.bytes_since_index_entry >= index_interval_bytes as u64;
        if due && !self.offset_index.is_full() {
            let entry = OffsetEntry {
                relative_offset,
                position: position_u32,
            };
            self.offset_index.push(entry);
            self.bytes_since_index_entry = 0;
            added.0 = Some(entry);
            added.1 = self.add_final_time_entry();
        }
        self.bytes_since_index_entry += header.total_size() as u64;
        self.size = position + header.total_size() as u64;
        self.next_offset = header.next_offset();
        added
    }

    /// A time index entry for the largest timestamp so far, if it is new.
    fn add_final_time_entry(&mut self) -> Option<TimeEntry> {
        let max = self.max_timestamp?;
        if !self.time_index.accepts(max.timestamp) {
            return None;
        }
        let entry = TimeEntry {
            timestamp: max.timestamp,
            relative_offset: self.relative(max.offset)?,
        };
        self.time_index.push(entry);
        Some(entry)
    }

    fn write_indexes(&self) -> Result<(), StorageError> {
        write_index_file(
            &self.offset_index_path,
            &OffsetIndex::encode(self.offset_index.entries()),
        )?;
        write_index_file(
            &self.time_index_path,
            &TimeIndex::encode(self.time_index.entries()),
        )
    }

    /// The roll clock of a segment read back from disk: its first batch's
    /// timestamp (no later than now), or now.
    fn first_batch_time(&self, now_ms: i64) -> Result<Option<i64>, StorageError> {
        if self.size == 0 {
            return Ok(None);
        }
        let header = self.read_header(0)?;
        Ok(Some(if header.max_timestamp >= 0 {
            header.max_timestamp.min(now_ms)
        } else {
            now_ms
        }))
    }

    /// Makes this the active segment, whose index files are appended to.
    pub fn activate(&mut self) -> Result<(), StorageError> {
        if self.appender.is_none() {
            self.appender = Some(IndexAppender::new(
                &self.offset_index_path,
                &self.time_index_path,
            ));
        }
        Ok(())
    }

    /// Appends batches with one vectored write (headers and records from
    /// their own buffers), then their index entries.
    pub fn append(
        &mut self,
        batches: &[PreparedBatch],
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        assert!(self.appender.is_some(), "append to a sealed segment");
        let mut expected = self.next_offset;
        for batch in batches {
            assert!(
                batch.header.base_offset >= expected,
                "batch offsets must grow"
            );
            assert!(
                self.relative(batch.header.last_offset()).is_some(),
                "batch must fit the segment"
            );
            expected = batch.header.next_offset();
        }
        let start = self.size;
        let mut slices: Vec<IoSlice> = batches
            .iter()
            .flat_map(|batch| {
                [
                    IoSlice::new(&batch.header_bytes),
                    IoSlice::new(&batch.records),
                ]
            })
            .collect();
        if let Err(error) = write_all_vectored(&mut self.log, &mut slices) {
            // Leave no partial batch behind; if even this fails, recovery will.
            let _ = self.log.set_len(start);
            return Err(error).at(&self.log_path);
        }
        self.unflushed = true;
        let mut offset_entries = Vec::new();
        let mut time_entries = Vec::new();
        let mut position = start;
        for batch in batches {
            let (offset_entry, time_entry) =
                self.track_batch(position, &batch.header, index_interval_bytes);
            offset_entries.extend(offset_entry);
            time_entries.extend(time_entry);
            position += batch.header.total_size() as u64;
        }
        self.first_batch_time_ms.get_or_insert(now_ms);
        self.appender
            .as_mut()
            .expect("checked above")
            .append(&offset_entries, &time_entries)
    }

    /// fsyncs the log and index files if anything was written since the last time.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        if self.unflushed {
            self.log.sync_data().at(&self.log_path)?;
            match &mut self.appender {
                Some(appender) => appender.sync()?,
                None => sync_existing(&[&self.offset_index_path, &self.time_index_path])?,
            }
            self.unflushed = false;
        }
        Ok(())
    }

    /// Stops being the active segment: writes the final time index entry,
    /// fsyncs, and closes the index files.
    pub fn seal(&mut self) -> Result<(), StorageError> {
        self.seal_unsynced()?;
        self.flush()
    }

    /// [`Segment::seal`] without the fsync: every index entry is written
    /// out, and the segment stays unflushed until [`Segment::flush`] or a
    /// [`SegmentSync`] of it followed by [`Segment::mark_synced`].
    pub fn seal_unsynced(&mut self) -> Result<(), StorageError> {
        if let Some(entry) = self.add_final_time_entry() {
            self.unflushed = true;
            if let Some(appender) = &mut self.appender {
                appender.append(&[], &[entry])?;
            }
        }
        if let Some(mut appender) = self.appender.take() {
            appender.write_out()?;
        }
        Ok(())
    }

    /// What fsyncing this sealed segment takes, for another thread to do
    /// without the segment; `None` if nothing is unflushed.
    pub fn sync_handle(&self) -> Result<Option<SegmentSync>, StorageError> {
        if !self.unflushed || self.appender.is_some() {
            return Ok(None);
        }
        Ok(Some(SegmentSync {
            log: self.log.try_clone().at(&self.log_path)?,
            log_path: self.log_path.clone(),
            index_paths: [self.offset_index_path.clone(), self.time_index_path.clone()],
        }))
    }

    /// A [`SegmentSync`] of this sealed segment has completed.
    pub fn mark_synced(&mut self) {
        if self.appender.is_none() {
            self.unflushed = false;
        }
    }

    /// The first batch whose last offset is at or after `offset`, with its position.
    pub fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let start = self
            .offset_index
            .lookup(relative)
            .map_or(0, |entry| entry.position as u64);
        self.scan_headers(start, LOOKUP_CHUNK_BYTES, |position, header| {
            if header.last_offset() >= offset {
                ControlFlow::Break((position, *header))
            } else {
                ControlFlow::Continue(())
            }
        })
    }

    /// Visits batch headers from `start` until `visit` breaks or the log ends.
    pub fn scan_headers<T>(
        &self,
        start: u64,
        chunk_bytes: usize,
        mut visit: impl FnMut(u64, &BatchHeader) -> ControlFlow<T>,
    ) -> Result<Option<T>, StorageError> {
        let mut scanner = BatchScanner::new(
            &self.log,
            &self.log_path,
            start,
            self.size,
            chunk_bytes,
            false,
        );
        loop {
            match scanner.next_batch()? {
                Scanned::Batch { position, header } => {
                    if let ControlFlow::Break(value) = visit(position, &header) {
                        return Ok(Some(value));
                    }
                }
                Scanned::End => return Ok(None),
                Scanned::Invalid { position, reason } => return Err(self.corrupt(position, reason)),
            }
        }
    }

    /// Visits every batch, with its position and bytes, in file order, until
    /// `visit` breaks or fails.
    pub fn for_each_batch(
        &self,
        mut visit: impl FnMut(u64, &BatchHeader, Bytes) -> Result<ControlFlow<()>, StorageError>,
    ) -> Result<(), StorageError> {
        let failure = self.scan_headers(0, RECOVERY_CHUNK_BYTES, |position, header| {
            let visited = self
                .read_bytes(position, header.total_size())
                .and_then(|batch| visit(position, header, batch));
            match visited {
                Ok(ControlFlow::Continue(())) => ControlFlow::Continue(()),
                Ok(ControlFlow::Break(())) => ControlFlow::Break(Ok(())),
                Err(error) => ControlFlow::Break(Err(error)),
            }
        })?;
        failure.unwrap_or(Ok(()))
    }

    pub fn corrupt(&self, position: u64, reason: BatchError) -> StorageError {
        StorageError::CorruptLog {
            path: self.log_path.clone(),
            position,
            reason: reason.to_string(),
        }
    }

    pub fn read_header(&self, position: u64) -> Result<BatchHeader, StorageError> {
        let bytes = self.read_bytes(position, BATCH_HEADER_BYTES)?;
        BatchHeader::parse(&bytes).map_err(|reason| self.corrupt(position, reason))
    }

    /// `len` bytes at `position`, which must lie inside the log.
    pub fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes, StorageError> {
        if position + len as u64 > self.size {
            let reason = BatchError::Truncated {
                needed: len,
                available: self.size.saturating_sub(position) as usize,
            };
            return Err(self.corrupt(position, reason));
        }
        // Read into uninitialised capacity: zero-filling a megabyte first
        // costs about as much as reading it from the page cache.
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let at = position + bytes.len() as u64;
            let read = rustix::io::pread(&self.log, rustix::buffer::spare_capacity(&mut bytes), at)
                .map_err(std::io::Error::from)
                .at(&self.log_path)?;
            if read == 0 {
                let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(eof).at(&self.log_path);
            }
        }
        bytes.truncate(len);
        Ok(Bytes::from(bytes))
    }

    /// Drops every batch whose last offset is at or after `offset`.
    pub fn truncate_to(
        &mut self,
        offset: i64,
        index_interval_bytes: u32,
    ) -> Result<(), StorageError> {
        let Some((position, _)) = self.find_batch(offset)? else {
            return Ok(());
        };
        self.log.set_len(position).at(&self.log_path)?;
        self.log.sync_data().at(&self.log_path)?;
        self.size = position;
        if let Some(stop) = self.rebuild_from_log(index_interval_bytes, false)? {
            // The bytes kept were valid when written and read; a change now is a disk fault.
            return Err(StorageError::CorruptLog {
                path: self.log_path.clone(),
                position: stop.position,
                reason: stop.reason,
            });
        }
        if self.size == 0 {
            self.first_batch_time_ms = None;
        }
        // The files are rewritten whole from the entries kept; the appender
        // goes on appending to them.
        if let Some(appender) = &mut self.appender {
            appender.clear_pending();
        }
        self.write_indexes()
    }

    /// The first record at or after `timestamp` with an offset in
    /// `[min_offset, max_offset)`: `(offset, timestamp)`.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
        min_offset: i64,
        max_offset: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        if self
            .max_timestamp
            .is_none_or(|max| max.timestamp < timestamp)
        {
            return Ok(None);
        }
        // Batches before the time entry's batch are all older than its timestamp.
        let by_time = self
            .time_index
            .lookup(timestamp)
            .map_or(0, |entry| self.position_for(entry.relative_offset));
        let by_offset = self
            .relative(min_offset)
            .map_or(0, |relative| self.position_for(relative));
        let mut found = Ok(None);
        self.scan_headers(
            by_time.max(by_offset),
            LOOKUP_CHUNK_BYTES,
            |position, header| {
                if header.base_offset >= max_offset {
                    return ControlFlow::Break(());
                }
                if header.last_offset() < min_offset || header.max_timestamp < timestamp {
                    return ControlFlow::Continue(());
                }
                found = self.find_in_batch(position, header, |offset, record_timestamp| {
                    offset >= min_offset && offset < max_offset && record_timestamp >= timestamp
                });
                match found {
                    Ok(None) => ControlFlow::Continue(()),
                    _ => ControlFlow::Break(()),
                }
            },
        )?;
        found
    }

    fn position_for(&self, relative_offset: u32) -> u64 {
        self.offset_index
            .lookup(relative_offset)
            .map_or(0, |entry| entry.position as u64)
    }

    /// Walks the records of the batch at `position`. A batch whose records
    /// cannot be walked counts as if every record had its maxTimestamp.
    fn find_in_batch(
        &self,
        position: u64,
        header: &BatchHeader,
        found: impl FnMut(i64, i64) -> bool,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let batch = self.read_bytes(position, header.total_size())?;
        match find_record(&batch, header, found) {
            Ok(result) => Ok(result),
            Err(error) => {
                tracing::warn!(segment = %self.log_path.display(), position, %error, "cannot walk the records of a batch");
                Ok(Some((header.base_offset, header.max_timestamp)))
            }
        }
    }

    /// The first batch with the largest timestamp among records with
    /// offsets in `[min_offset, max_offset)`: `(that timestamp, position,
    /// header)`. Batch maxTimestamps decide, except for a batch straddling
    /// `min_offset`, whose records are walked.
    pub fn max_timestamp_batch(
        &self,
        min_offset: i64,
        max_offset: i64,
    ) -> Result<Option<(i64, u64, BatchHeader)>, StorageError> {
        let Some(max) = self.max_timestamp else {
            return Ok(None);
        };
        if max.offset >= min_offset && max.offset < max_offset {
            // The segment's own maximum is in range, and its batch is the first to have it.
            return Ok(self
                .find_batch(max.offset)?
                .map(|(position, header)| (max.timestamp, position, header)));
        }
        let start = self
            .relative(min_offset)
            .map_or(0, |relative| self.position_for(relative));
        let mut best: Option<(i64, u64, BatchHeader)> = None;
        let mut failure = None;
        self.scan_headers(start, LOOKUP_CHUNK_BYTES, |position, header| {
            if header.base_offset >= max_offset {
                return ControlFlow::Break(());
            }
            if header.last_offset() < min_offset {
                return ControlFlow::Continue(());
            }
            let timestamp = if header.base_offset < min_offset {
                match self.max_timestamp_record(position, header, min_offset, max_offset) {
                    Ok(Some((_, timestamp))) => timestamp,
                    Ok(None) => return ControlFlow::Continue(()),
                    Err(error) => {
                        failure = Some(error);
                        return ControlFlow::Break(());
                    }
                }
            } else {
                header.max_timestamp
            };
            if best.is_none_or(|(most, _, _)| timestamp > most) {
                best = Some((timestamp, position, *header));
            }
            ControlFlow::Continue(())
        })?;
        match failure {
            Some(error) => Err(error),
            None => Ok(best),
        }
    }

    /// The record with the largest timestamp, earliest on ties, among the
    /// records of the batch at `position` with offsets in `[min_offset, max_offset)`.
    pub fn max_timestamp_record(
        &self,
        position: u64,
        header: &BatchHeader,
        min_offset: i64,
        max_offset: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let mut best: Option<(i64, i64)> = None;
        let unwalkable = self.find_in_batch(position, header, |offset, timestamp| {
            if offset >= min_offset
                && offset < max_offset
                && best.is_none_or(|(_, most)| timestamp > most)
            {
                best = Some((offset, timestamp));
            }
            false
        })?;
        // The walk never stops early, so a result means the records could not be walked.
        Ok(unwalkable
            .map(|(offset, timestamp)| (offset.max(min_offset), timestamp))
            .or(best))
    }

    /// Renames the segment's files with [`DELETED_SUFFIX`], which is quick,
    /// and returns the new paths to remove later: removing a large file
    /// frees (and on some disks discards) its blocks, which can take a
    /// while, and waits for any writeback of it.
    pub fn retire(self) -> Result<Vec<PathBuf>, StorageError> {
        let mut retired = Vec::new();
        for path in self.close_files() {
            let mut name = path.clone().into_os_string();
            name.push(DELETED_SUFFIX);
            let renamed = PathBuf::from(name);
            match std::fs::rename(&path, &renamed) {
                Ok(()) => retired.push(renamed),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error).at(&path),
            }
        }
        Ok(retired)
    }

    /// Removes the segment's files.
    pub fn delete(self) -> Result<(), StorageError> {
        for path in self.close_files() {
            crate::checkpoint::remove_if_present(&path)?;
        }
        Ok(())
    }

    /// Closes the segment (its files stay) and returns their paths.
    fn close_files(self) -> [PathBuf; 3] {
        [
            self.log_path.clone(),
            self.offset_index_path.clone(),
            self.time_index_path.clone(),
        ]
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn max_timestamp(&self) -> Option<MaxTimestamp> {
        self.max_timestamp
    }

    pub fn first_batch_time_ms(&self) -> Option<i64> {
        self.first_batch_time_ms
    }

    pub fn indexes_full(&self) -> bool {
        self.offset_index.is_full() || self.time_index.is_full()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn offset_index(&self) -> &OffsetIndex {
        &self.offset_index
    }

    pub fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }

    /// The largest timestamp for retention: the records' if any is set,
    /// else the file's modification time (as Kafka).
    pub fn largest_timestamp_for_retention(&self) -> Result<i64, StorageError> {
        match self.max_timestamp {
            Some(max) if max.timestamp >= 0 => Ok(max.timestamp),
            _ => {
                let modified = self
                    .log
                    .metadata()
                    .and_then(|metadata| metadata.modified())
                    .at(&self.log_path)?;
                let since_epoch = modified
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Ok(since_epoch.as_millis().min(i64::MAX as u128) as i64)
            }
        }
    }
}

/// Writes every slice, in order, resuming after partial writes.
/// The files of a sealed segment to fsync, detached from the segment (the
/// log file descriptor is duplicated), so that a roll does not wait for it.
#[derive(Debug)]
pub struct SegmentSync {
    log: File,
    log_path: PathBuf,
    index_paths: [PathBuf; 2],
}

impl SegmentSync {
    pub fn run(&self) -> Result<(), StorageError> {
        self.log.sync_data().at(&self.log_path)?;
        let [offset_index, time_index] = &self.index_paths;
        sync_existing(&[offset_index, time_index])
    }
}

/// fsyncs the files at `paths` that exist (one deleted meanwhile, by
/// retention or compaction, has nothing left to keep).
fn sync_existing(paths: &[&Path]) -> Result<(), StorageError> {
    for path in paths {
        match File::open(path) {
            Ok(file) => file.sync_data().at(path)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).at(path),
        }
    }
    Ok(())
}

fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
