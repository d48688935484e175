//! Log compaction (`cleanup.policy=compact`): [`PartitionLog::clean`] keeps
//! the latest record of every key, as Kafka's log cleaner does.
//!
//! # A pass
//!
//! - The *cleanable* segments are the oldest ones, up to the first that is
//!   the active segment, reaches the high watermark, or holds a record newer
//!   than `min.compaction.lag.ms`.
//! - The *dirty section* runs from the cleaner checkpoint (the first offset
//!   not cleaned yet, in `cleaner-offset-checkpoint`; the log start when
//!   missing or lower) to the end of the cleanable segments. A pass runs when
//!   the segments holding it make up at least `min.cleanable.dirty.ratio` of
//!   the cleanable bytes, or when the first batch of one of them is older than
//!   `max.compaction.lag.ms`.
//! - The *key map* holds, for every key in the dirty section (the whole key,
//!   never a hash, so that no collision can drop a record), the offset of its
//!   last record. Its keys may take [`CLEANER_KEY_BYTES_MAX`] bytes: the dirty
//!   section then ends after the last segment that fits, and the next pass
//!   goes on from there. The first dirty segment is always mapped.
//! - Every cleanable segment from the first one to the end of the dirty
//!   section is rewritten. A record is dropped when the map holds a later
//!   offset for its key. A *tombstone* (null value) that is the last of its
//!   key is dropped too once it has been through a pass already (it lies below
//!   the previous checkpoint) and its batch's maxTimestamp is more than
//!   `delete.retention.ms` old: consumers have had that long to see it. A
//!   tombstone whose batch has no timestamp (-1) is kept. Records without a
//!   key (appended before the log was compacted) are kept.
//! - A batch keeping all its records is copied byte for byte, and one keeping
//!   none disappears. The others are re-encoded: same header (base offset and
//!   last offset delta, so the batch keeps its offset range; base timestamp,
//!   attributes, leader epoch, producer id, epoch and base sequence) with
//!   the new record count and, with CreateTime, the kept records' largest
//!   timestamp; the kept records are copied as they were (their deltas are
//!   relative to the unchanged base offset and timestamp) and compressed again
//!   with the batch's codec.
//! - Consecutive segments are merged into one while their sizes add up to
//!   at most `segment.bytes` and their indexes and offsets fit one segment,
//!   as Kafka groups them. The output of a group is named by the base offset
//!   of its first segment.
//! - A group whose records are all dropped leaves no segment behind: the log
//!   then has a gap of offsets, as cleaned batches do, and a read inside it
//!   starts at the next batch. Except the first group: the log's first
//!   segment is what the log start rests on (and `open` puts the log start
//!   at its base), and compaction must not move the log start, or a
//!   consumer reading inside the group would be told OFFSET_OUT_OF_RANGE
//!   and reset — to the log end by default, skipping everything. So the
//!   first group keeps an empty batch (no records, no producer) with the
//!   offsets, leader epoch and timestamp of its last batch, as Kafka keeps
//!   an empty cleaned segment there; consumers skip it to the offset after.
//!   A segment may not be empty (only the active one), and keeping any of
//!   the group's records would bring back superseded ones.
//! - Segments left wholly below the log start are deleted, and the
//!   checkpoint moves to the end of the dirty section.
//!
//! A batch whose records cannot be walked (malformed, or decompressing to
//! more than [`DECOMPRESSED_BATCH_BYTES_MAX`]) fails the pass with
//! [`StorageError::CorruptLog`] before its group is committed: the cleaner
//! cannot know its keys, so nothing that it might supersede could be judged.
//! A compacted log refuses such batches at append, so only data appended
//! before the log became compacted can hold one (Kafka marks such a
//! partition uncleanable). Transactional batches are cleaned like any other;
//! control batches never reach the log.
//!
//! # Crash safety
//!
//! A group's output is written to `<base>-<end>.log.cleaned` (`base` is the
//! group's first base offset, `end` the next offset of its last segment) and
//! fsynced, then renamed to `<base>-<end>.log.swap`; the directory fsync that
//! follows is the commit point. Then every segment file whose base offset
//! lies in `[base, end)` is deleted and the swap file becomes `<base>.log`
//! (its indexes are rebuilt), or is deleted when empty. [`PartitionLog::open`]
//! deletes `.cleaned` files and completes `.swap` files the same way before it
//! reads the segments, so a group is either wholly replaced or untouched.
//!
//! Groups are committed oldest first and the checkpoint only after the last
//! one, so a crash between two groups leaves a log whose older groups are
//! cleaned and newer ones are not: every record dropped was superseded by a
//! later record, which is still there (or is an expired tombstone, dropped
//! only with everything older of its key), so nothing is lost and nothing
//! comes back; the next pass starts from the old checkpoint again.
//!
//! [`PartitionLog::clean`]: crate::PartitionLog::clean
//! [`PartitionLog::open`]: crate::PartitionLog::open
//! [`DECOMPRESSED_BATCH_BYTES_MAX`]: crate::config::DECOMPRESSED_BATCH_BYTES_MAX

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::{ControlFlow, Range};
use std::path::Path;

use bytes::BytesMut;
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use protocol::batch::{
    compute_crc, BatchHeader, Compression, TimestampType, ATTRIBUTES_AT, ATTRIBUTE_LOG_APPEND_TIME,
    BASE_SEQUENCE_AT, BASE_TIMESTAMP_AT, BATCH_HEADER_BYTES, BATCH_LENGTH_AT,
    BATCH_LENGTH_PREFIX_BYTES, CRC_AT, MAX_TIMESTAMP_AT, PRODUCER_EPOCH_AT, PRODUCER_ID_AT,
    RECORD_COUNT_AT,
};

use crate::checkpoint;
use crate::config::{LogConfig, CLEANER_KEY_BYTES_MAX};
use crate::error::{IoContext, StorageError};
use crate::index::{OFFSET_INDEX_ENTRIES_MAX, TIME_INDEX_ENTRIES_MAX};
use crate::records::{walk_records, RecordView, RecordsError};
use crate::segment::{
    parse_segment_file_name, segment_file_name, Segment, LOG_SUFFIX, SEGMENT_NAME_DIGITS,
};

/// A group's output while it is written; deleted by `open`.
pub const CLEANED_SUFFIX: &str = ".log.cleaned";
/// A group's committed output; `open` completes the swap.
pub const SWAP_SUFFIX: &str = ".log.swap";

/// What [`crate::PartitionLog::clean`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments rewritten (merged ones count one each).
    pub segments_cleaned: usize,
    /// Bytes of those segments before the pass.
    pub bytes_before: u64,
    /// Bytes of what replaced them.
    pub bytes_after: u64,
    /// Records dropped, tombstones included.
    pub records_removed: u64,
    /// Tombstones dropped because `delete.retention.ms` had passed (a
    /// tombstone superseded by a later record of its key counts only in
    /// `records_removed`).
    pub tombstones_removed: u64,
}

/// `<base>-<end>.log.cleaned`: the output, being written, of the group of
/// segments with base offsets in `[base, end)`.
pub fn cleaned_file_name(base_offset: i64, end_offset: i64) -> String {
    group_file_name(base_offset, end_offset, CLEANED_SUFFIX)
}

/// `<base>-<end>.log.swap`: the committed output of the group of segments
/// with base offsets in `[base, end)`.
pub fn swap_file_name(base_offset: i64, end_offset: i64) -> String {
    group_file_name(base_offset, end_offset, SWAP_SUFFIX)
}

fn group_file_name(base_offset: i64, end_offset: i64, suffix: &str) -> String {
    format!("{base_offset:0SEGMENT_NAME_DIGITS$}-{end_offset:0SEGMENT_NAME_DIGITS$}{suffix}")
}

/// `(base, end)` of a `<base>-<end><suffix>` file name.
fn parse_group_file_name(name: &str, suffix: &str) -> Option<(i64, i64)> {
    let (base, end) = name.strip_suffix(suffix)?.split_once('-')?;
    let offset = |digits: &str| {
        let well_formed =
            digits.len() == SEGMENT_NAME_DIGITS && digits.bytes().all(|byte| byte.is_ascii_digit());
        well_formed.then(|| digits.parse::<i64>().ok()).flatten()
    };
    Some((offset(base)?, offset(end)?))
}

/// Run by `open` before the segments are listed: deletes the outputs of
/// groups that were not committed and completes the swaps of those that were.
pub(crate) fn finish_interrupted(dir: &Path) -> Result<(), StorageError> {
    let mut swaps = Vec::new();
    let mut removed = false;
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(CLEANED_SUFFIX) {
            tracing::warn!(path = %entry.path().display(), "removing the output of an interrupted clean");
            removed |= checkpoint::remove_if_present(&entry.path())?;
        } else if let Some((base, end)) = parse_group_file_name(name, SWAP_SUFFIX) {
            if base < end {
                swaps.push((base, end));
            } else {
                tracing::warn!(path = %entry.path().display(), "ignoring a swap file with an empty range");
            }
        }
    }
    if removed {
        checkpoint::sync_dir(dir)?;
    }
    swaps.sort_unstable();
    for (base, end) in swaps {
        tracing::warn!(dir = %dir.display(), base, end, "completing the swap of an interrupted clean");
        finish_swap(dir, base, end)?;
    }
    Ok(())
}

/// Completes a committed swap: deletes the files of the segments with base
/// offsets in `[base, end)`, then renames the swap file to `<base>.log`, or
/// deletes it if it is empty. Returns whether `<base>.log` now exists; its
/// indexes are for the caller to rebuild.
pub(crate) fn finish_swap(dir: &Path, base: i64, end: i64) -> Result<bool, StorageError> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let replaced = name
            .to_str()
            .and_then(parse_segment_file_name)
            .is_some_and(|(offset, _)| (base..end).contains(&offset));
        if replaced {
            checkpoint::remove_if_present(&entry.path())?;
        }
    }
    let swap = dir.join(swap_file_name(base, end));
    let size = std::fs::metadata(&swap).at(&swap)?.len();
    if size == 0 {
        checkpoint::remove_if_present(&swap)?;
    } else {
        let log = dir.join(segment_file_name(base, LOG_SUFFIX));
        std::fs::rename(&swap, &log).at(&log)?;
    }
    checkpoint::sync_dir(dir)?;
    Ok(size > 0)
}

/// The offset of the last record of each key, and the bytes of the keys.
#[derive(Debug, Default)]
struct KeyMap {
    latest: HashMap<Box<[u8]>, i64>,
    key_bytes: usize,
}

impl KeyMap {
    /// `key` has a record at `offset`, after every record seen so far. (In
    /// log order: a batch whose offset deltas go backwards keeps the last
    /// record of a key as the latest, as a consumer sees it.)
    fn insert(&mut self, key: &[u8], offset: i64) {
        if let Some(latest) = self.latest.get_mut(key) {
            *latest = offset;
        } else {
            self.key_bytes += key.len();
            self.latest.insert(key.into(), offset);
        }
    }

    /// Adds the keys of `later`, whose records all follow these.
    fn merge(&mut self, later: KeyMap) {
        for (key, offset) in later.latest {
            match self.latest.entry(key) {
                Entry::Occupied(mut entry) => {
                    entry.insert(offset);
                }
                Entry::Vacant(entry) => {
                    self.key_bytes += entry.key().len();
                    entry.insert(offset);
                }
            }
        }
    }
}

/// The output of a group, written and fsynced but not committed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CleanedGroup {
    pub base_offset: i64,
    pub end_offset: i64,
}

/// What happens to a record.
enum Verdict {
    Keep,
    /// A later record has its key.
    Superseded,
    /// A tombstone past `delete.retention.ms`.
    Expired,
}

/// What stays of a batch.
enum Filtered {
    All,
    Nothing,
    /// The batch re-encoded with the records kept.
    Some(Vec<u8>),
}

/// One pass over the cleanable segments, with its key map.
#[derive(Debug)]
pub(crate) struct Pass {
    map: KeyMap,
    /// The previous checkpoint: records below it have been through a pass.
    first_dirty: i64,
    /// The end of the dirty section the map covers: the next checkpoint.
    pub dirty_end: i64,
    /// The pass rewrites the first `segment_count` segments.
    segment_count: usize,
    /// Tombstones in batches older than this may go.
    tombstone_horizon_ms: i64,
}

impl Pass {
    /// Decides whether `cleanable`, the cleanable segments, need a pass with
    /// the dirty section from `first_dirty` on, and if so maps its keys.
    pub(crate) fn plan(
        cleanable: &[Segment],
        first_dirty: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Option<Pass>, StorageError> {
        let dirty_from = cleanable.partition_point(|segment| segment.next_offset() <= first_dirty);
        let dirty = &cleanable[dirty_from..];
        if dirty.is_empty() {
            return Ok(None);
        }
        let dirty_bytes: u64 = dirty.iter().map(Segment::size).sum();
        let cleanable_bytes: u64 = cleanable.iter().map(Segment::size).sum();
        let ratio = dirty_bytes as f64 / cleanable_bytes as f64;
        if ratio < config.min_cleanable_dirty_ratio
            && !max_lag_exceeded(dirty, config.max_compaction_lag_ms, now_ms)?
        {
            return Ok(None);
        }
        let (map, mapped) = build_map(dirty, first_dirty, CLEANER_KEY_BYTES_MAX)?;
        let segment_count = dirty_from + mapped;
        tracing::debug!(
            segment = %cleanable[0].log_path().display(),
            first_dirty,
            ratio,
            segments = segment_count,
            keys = map.latest.len(),
            "cleaning"
        );
        Ok(Some(Pass {
            map,
            first_dirty,
            dirty_end: cleanable[segment_count - 1].next_offset(),
            segment_count,
            tombstone_horizon_ms: now_ms.saturating_sub(config.delete_retention_ms.max(0)),
        }))
    }

    /// The segments the pass rewrites, as ranges of indexes into `segments`:
    /// groups of consecutive segments that fit one segment together.
    pub(crate) fn groups(&self, segments: &[Segment], config: &LogConfig) -> Vec<Range<usize>> {
        let max_bytes = config.effective_segment_bytes();
        let mut groups = Vec::new();
        let mut start = 0;
        while start < self.segment_count {
            let first = &segments[start];
            let (mut bytes, mut offset_entries, mut time_entries) = (0, 0, 0);
            let mut end = start;
            while end < self.segment_count {
                let segment = &segments[end];
                bytes += segment.size();
                offset_entries += segment.offset_index().len();
                time_entries += segment.time_index().entries().len();
                let fits = bytes <= max_bytes
                    && offset_entries <= OFFSET_INDEX_ENTRIES_MAX
                    && time_entries <= TIME_INDEX_ENTRIES_MAX
                    && first.relative(segment.next_offset() - 1).is_some();
                if end > start && !fits {
                    break;
                }
                end += 1;
            }
            groups.push(start..end);
            start = end;
        }
        groups
    }

    /// Writes what stays of `group` to its `.cleaned` file and fsyncs it.
    /// `None` when that would be the group's only segment unchanged: the
    /// file is then removed and nothing needs swapping.
    /// `first`: the group starts the log, so that its output keeps at least
    /// an empty batch (see the module's documentation).
    pub(crate) fn write_group(
        &self,
        dir: &Path,
        group: &[Segment],
        first: bool,
        stats: &mut CleanStats,
    ) -> Result<Option<CleanedGroup>, StorageError> {
        let output = CleanedGroup {
            base_offset: group[0].base_offset(),
            end_offset: group[group.len() - 1].next_offset(),
        };
        let path = dir.join(cleaned_file_name(output.base_offset, output.end_offset));
        match self.write_output(&path, group, first, stats) {
            Ok(true) => Ok(Some(output)),
            Ok(false) => {
                checkpoint::remove_if_present(&path)?;
                Ok(None)
            }
            Err(error) => {
                // Best effort: the next open removes it anyway.
                let _ = checkpoint::remove_if_present(&path);
                Err(error)
            }
        }
    }

    /// Writes the output of `group` to `path`; returns whether it differs
    /// from the group. With `keep_one`, an output that would hold nothing
    /// holds an empty batch in place of the group's last batch.
    fn write_output(
        &self,
        path: &Path,
        group: &[Segment],
        keep_one: bool,
        stats: &mut CleanStats,
    ) -> Result<bool, StorageError> {
        let mut writer = BufWriter::new(File::create(path).at(path)?);
        let mut changed = group.len() > 1;
        let mut written = 0u64;
        let mut last_batch = None;
        for segment in group {
            stats.segments_cleaned += 1;
            stats.bytes_before += segment.size();
            segment.for_each_batch(|position, header, batch| {
                let filtered = self.filter(header, &batch, stats).map_err(|error| {
                    StorageError::CorruptLog {
                        path: segment.log_path().to_path_buf(),
                        position,
                        reason: format!("the cleaner cannot rewrite this batch: {error}"),
                    }
                })?;
                let kept: &[u8] = match &filtered {
                    Filtered::All => &batch,
                    Filtered::Nothing => &[],
                    Filtered::Some(rebuilt) => rebuilt,
                };
                changed |= !matches!(filtered, Filtered::All);
                writer.write_all(kept).at(path)?;
                written += kept.len() as u64;
                last_batch = Some(batch);
                Ok(ControlFlow::Continue(()))
            })?;
        }
        if let (true, 0, Some(batch)) = (keep_one, written, last_batch) {
            let empty = empty_batch_in_place_of(&batch);
            writer.write_all(&empty).at(path)?;
            written += empty.len() as u64;
        }
        stats.bytes_after += written;
        let file = writer
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .at(path)?;
        file.sync_all().at(path)?;
        Ok(changed)
    }

    /// Which records of `batch` stay; the batch re-encoded if some go.
    fn filter(
        &self,
        header: &BatchHeader,
        batch: &[u8],
        stats: &mut CleanStats,
    ) -> Result<Filtered, CleanError> {
        let mut records = Vec::new();
        let mut kept = 0;
        let mut max_timestamp = -1;
        let (mut removed, mut expired) = (0, 0);
        walk_records(batch, header, |record| {
            match self.verdict(header, record) {
                Verdict::Keep => {
                    records.extend_from_slice(record.bytes);
                    kept += 1;
                    max_timestamp = max_timestamp.max(record.timestamp);
                }
                Verdict::Superseded => removed += 1,
                Verdict::Expired => {
                    removed += 1;
                    expired += 1;
                }
            }
            ControlFlow::<()>::Continue(())
        })?;
        stats.records_removed += removed;
        stats.tombstones_removed += expired;
        Ok(match (removed, kept) {
            (0, _) => Filtered::All,
            (_, 0) => Filtered::Nothing,
            _ => {
                if header.timestamp_type() == TimestampType::LogAppendTime {
                    max_timestamp = header.max_timestamp;
                }
                Filtered::Some(rebuild_batch(batch, header, &records, kept, max_timestamp)?)
            }
        })
    }

    fn verdict(&self, header: &BatchHeader, record: &RecordView<'_>) -> Verdict {
        let Some(key) = record.key else {
            return Verdict::Keep;
        };
        if self
            .map
            .latest
            .get(key)
            .is_some_and(|&latest| latest > record.offset)
        {
            return Verdict::Superseded;
        }
        let expired = record.is_tombstone
            && record.offset < self.first_dirty
            && (0..self.tombstone_horizon_ms).contains(&header.max_timestamp);
        if expired {
            Verdict::Expired
        } else {
            Verdict::Keep
        }
    }
}

/// Why a batch could not be filtered.
#[derive(Debug, thiserror::Error)]
enum CleanError {
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error("compressing the records kept: {0}")]
    Compress(String),
}

/// Whether the first batch of a dirty segment is older than
/// `max.compaction.lag.ms` (batches without a timestamp do not count).
fn max_lag_exceeded(
    dirty: &[Segment],
    max_compaction_lag_ms: i64,
    now_ms: i64,
) -> Result<bool, StorageError> {
    let limit = now_ms.saturating_sub(max_compaction_lag_ms.max(0));
    for segment in dirty {
        let first = segment.read_header(0)?;
        if (0..limit).contains(&first.max_timestamp) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The key map of the records of `dirty` from `first_dirty` on, and how many
/// of its segments it covers: all, unless their keys take more than
/// `key_bytes_max` bytes, and at least one.
fn build_map(
    dirty: &[Segment],
    first_dirty: i64,
    key_bytes_max: usize,
) -> Result<(KeyMap, usize), StorageError> {
    let mut map = KeyMap::default();
    for (index, segment) in dirty.iter().enumerate() {
        // Keys also in `map` count twice here: the budget errs on the safe side.
        let budget = if index == 0 {
            usize::MAX
        } else {
            key_bytes_max.saturating_sub(map.key_bytes)
        };
        let Some(keys) = segment_keys(segment, first_dirty, budget)? else {
            tracing::info!(
                segment = %segment.log_path().display(),
                key_bytes = map.key_bytes,
                "the cleaner's key map is full; this pass stops before this segment"
            );
            return Ok((map, index));
        };
        map.merge(keys);
    }
    Ok((map, dirty.len()))
}

/// The keys of the records of `segment` from `first_dirty` on, or `None` if
/// they take more than `budget` bytes.
fn segment_keys(
    segment: &Segment,
    first_dirty: i64,
    budget: usize,
) -> Result<Option<KeyMap>, StorageError> {
    let mut keys = KeyMap::default();
    let mut full = false;
    segment.for_each_batch(|position, header, batch| {
        if header.last_offset() < first_dirty {
            return Ok(ControlFlow::Continue(()));
        }
        let walked = walk_records(&batch, header, |record| {
            if let (Some(key), true) = (record.key, record.offset >= first_dirty) {
                keys.insert(key, record.offset);
            }
            if keys.key_bytes > budget {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        match walked {
            Ok(None) => Ok(ControlFlow::Continue(())),
            Ok(Some(())) => {
                full = true;
                Ok(ControlFlow::Break(()))
            }
            Err(error) => Err(StorageError::CorruptLog {
                path: segment.log_path().to_path_buf(),
                position,
                reason: format!("the cleaner cannot walk the records of this batch: {error}"),
            }),
        }
    })?;
    Ok((!full).then_some(keys))
}

/// A batch of no records with the offsets, leader epoch and timestamp of
/// `batch`: what stands in for a dropped batch that must leave something
/// behind. Uncompressed, with no producer and not transactional, so that
/// nothing reads it as more than its offset range (Kafka writes such empty
/// batches too, and clients skip them to the offset after).
fn empty_batch_in_place_of(batch: &[u8]) -> Vec<u8> {
    let mut batch = batch[..BATCH_HEADER_BYTES].to_vec();
    let length = (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32;
    batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]])
        & ATTRIBUTE_LOG_APPEND_TIME;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch.copy_within(MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8, BASE_TIMESTAMP_AT);
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(-1i64).to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&(-1i16).to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
    batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&0i32.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(BatchHeader::parse(&batch).is_ok());
    batch
}

/// `original` with only `records` in it (`count` whole records, as stored,
/// uncompressed), compressed with its codec, with the new length, count,
/// maxTimestamp and CRC; every other header field as it was.
fn rebuild_batch(
    original: &[u8],
    header: &BatchHeader,
    records: &[u8],
    count: i32,
    max_timestamp: i64,
) -> Result<Vec<u8>, CleanError> {
    let compression = header
        .compression()
        .expect("a parsed header has a known codec");
    let mut batch = original[..BATCH_HEADER_BYTES].to_vec();
    compress_into(compression, records, &mut batch)?;
    let batch_length = i32::try_from(batch.len() - BATCH_LENGTH_PREFIX_BYTES)
        .map_err(|_| CleanError::Compress("the batch outgrew 2 GiB".into()))?;
    batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(BatchHeader::parse(&batch).is_ok());
    Ok(batch)
}

/// Appends `records` compressed with `compression` to `out`, with the
/// codecs `kafka_protocol`'s encoder uses (Kafka's framing).
fn compress_into(
    compression: Compression,
    records: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CleanError> {
    let fill = |buffer: &mut BytesMut| {
        buffer.extend_from_slice(records);
        Ok(())
    };
    let compressed = match compression {
        Compression::None => {
            out.extend_from_slice(records);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(out, fill),
        Compression::Snappy => Snappy::compress(out, fill),
        Compression::Lz4 => Lz4::compress(out, fill),
        Compression::Zstd => Zstd::compress(out, fill),
    };
    compressed.map_err(|error| CleanError::Compress(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::PreparedBatch;
    use crate::test_batches::{encode_records, keyed_record};
    use bytes::Bytes;
    use protocol::batch::set_base_offset;

    /// A sealed segment at `base` holding one batch with a record per key.
    fn segment(dir: &Path, base: i64, keys: &[&str]) -> Segment {
        let records: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| keyed_record(i as i64, 1_000, key, Some(b"v".to_vec())))
            .collect();
        let mut batch = encode_records(&records, Compression::None).to_vec();
        set_base_offset(&mut batch, base);
        let prepared = PreparedBatch {
            header_bytes: batch[..BATCH_HEADER_BYTES].try_into().unwrap(),
            header: BatchHeader::parse(&batch).unwrap(),
            records: Bytes::copy_from_slice(&batch[BATCH_HEADER_BYTES..]),
        };
        let mut segment = Segment::create(dir, base).unwrap();
        segment.activate().unwrap();
        segment.append(&[prepared], 4096, 0).unwrap();
        segment.seal().unwrap();
        segment
    }

    fn latest(map: &KeyMap, key: &str) -> Option<i64> {
        map.latest.get(key.as_bytes()).copied()
    }

    #[test]
    fn the_key_map_stops_at_a_segment_boundary_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let segments = [
            segment(dir.path(), 0, &["k0", "k1", "k2", "k3"]),
            segment(dir.path(), 10, &["k4", "k5", "k6", "k7"]),
            segment(dir.path(), 20, &["k0", "k8"]),
        ];

        let (map, mapped) = build_map(&segments, 0, usize::MAX).unwrap();
        assert_eq!((mapped, map.latest.len(), map.key_bytes), (3, 9, 18));
        assert_eq!(latest(&map, "k0"), Some(20));
        assert_eq!(latest(&map, "k7"), Some(13));

        // 16 bytes hold the first two segments' keys, not the third's on top.
        let (map, mapped) = build_map(&segments, 0, 16).unwrap();
        assert_eq!((mapped, map.latest.len()), (2, 8));
        assert_eq!(latest(&map, "k0"), Some(0));
        assert_eq!(latest(&map, "k8"), None);

        // However small the budget, the first segment is mapped.
        let (map, mapped) = build_map(&segments, 0, 0).unwrap();
        assert_eq!((mapped, map.latest.len()), (1, 4));

        // Only records from the first dirty offset on.
        let (map, mapped) = build_map(&segments[..1], 2, usize::MAX).unwrap();
        assert_eq!(mapped, 1);
        assert_eq!(latest(&map, "k1"), None);
        assert_eq!(latest(&map, "k2"), Some(2));
    }

    #[test]
    fn group_file_names_round_trip() {
        let name = swap_file_name(42, 1_000);
        assert_eq!(name, "00000000000000000042-00000000000000001000.log.swap");
        assert_eq!(parse_group_file_name(&name, SWAP_SUFFIX), Some((42, 1_000)));
        assert_eq!(
            parse_group_file_name(&cleaned_file_name(0, 7), CLEANED_SUFFIX),
            Some((0, 7))
        );
        for bad in [
            "00000000000000000042.log",
            "42-1000.log.swap",
            "0000000000000000004x-00000000000000001000.log.swap",
            "00000000000000000042-00000000000000001000.log.cleaned",
        ] {
            assert_eq!(parse_group_file_name(bad, SWAP_SUFFIX), None, "{bad}");
        }
    }
}
