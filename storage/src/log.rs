//! [`PartitionLog`]: the segments of one partition, in one directory.
//!
//! The only place where offsets are assigned. Invariants, asserted where
//! they move: `log_start_offset <= high_watermark <= log_end_offset`; there
//! is always at least one segment and the last one is the active one; only
//! the active segment may be empty; segment base offsets grow and no
//! segment starts before its predecessor ends.

use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use protocol::batch::{
    self, set_base_offset, set_log_append_time_parts, set_partition_leader_epoch, verify_crc,
    BatchHeader, Batches, TimestampType, BATCH_HEADER_BYTES,
};

use crate::checkpoint::{
    self, AfterLock, CheckpointFile, CLEANER_OFFSET_FILE, CLEAN_SHUTDOWN_FILE, DELETED_SUFFIX,
    HIGH_WATERMARK_FILE, LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE, TEMPORARY_SUFFIX,
};
use crate::cleaner::{self, CleanStats, CleanedGroup, Pass};
use crate::config::{LogConfig, READ_BYTES_MAX, RECOVERY_CHUNK_BYTES};
use crate::epoch::{LeaderEpochCache, LEADER_EPOCH_FILE};
use crate::error::{IoContext, StorageError};
use crate::producer::{marker_batch, parse_marker, Marker, ProducerEntry, ProducerState, Verdict};
use crate::records::walk_records;
use crate::segment::{
    parse_segment_file_name, segment_file_name, PreparedBatch, Segment, SegmentSync, LOG_SUFFIX,
};
use crate::tail::Tail;

// The broker shares logs between tasks behind a mutex.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<PartitionLog>();
};

/// Who appends as the leader, and so which producer checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppendOrigin {
    /// A producer: idempotence and transaction checks, with the guard of a
    /// transaction verified with its coordinator.
    Client(Option<u64>),
    /// A coordinator writing for a producer: only its epoch is checked.
    Coordinator,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// The timestamp given to the batches with LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// The batch was a producer's retry of one the log holds: nothing was
    /// written, and the offsets are those it got the first time.
    pub duplicate: bool,
}

#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset; never empty; the last one is active.
    segments: Vec<Segment>,
    log_start_offset: i64,
    high_watermark: i64,
    /// Everything below is fsynced; persisted in `recovery-point-checkpoint`.
    recovery_point: i64,
    /// The first offset the cleaner has not cleaned (below the log start:
    /// the log start); persisted in `cleaner-offset-checkpoint`.
    cleaner_checkpoint: i64,
    epochs: LeaderEpochCache,
    /// Idempotent and transactional producers (see [`crate::producer`]).
    producers: ProducerState,
    /// A segment rolled since the last producer snapshot.
    producer_snapshot_due: bool,
    /// A roll left its sealed segments to fsync, up to this offset.
    roll_sync_due: Option<i64>,
    /// A producer snapshot written at a roll, not yet fsynced.
    snapshot_sync_due: Option<PathBuf>,
    /// `recovery-point-checkpoint`, `log-start-offset-checkpoint` and
    /// `leader-epoch-checkpoint`.
    recovery_point_file: CheckpointFile,
    log_start_file: CheckpointFile,
    epochs_file: CheckpointFile,
    /// What [`PartitionLog::take_after_lock`]'s caller does without the lock.
    after_lock: AfterLock,
    /// Records appended since the last fsync (`flush.messages`).
    unflushed_records: u64,
    last_flush_ms: i64,
    /// The latest clock reading seen, for `flush` calls that have none.
    last_now_ms: i64,
    /// The batches appended as leader above the high watermark, in memory
    /// for the followers (see [`crate::tail`]).
    tail: Tail,
}

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory if needed, and
    /// recovers it (see the crate documentation for the rules).
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<PartitionLog, StorageError> {
        std::fs::create_dir_all(dir).at(dir)?;
        // Removed first and durably: if this open or anything after it
        // crashes, the next open must not trust the files.
        let clean = checkpoint::remove_if_present(&dir.join(CLEAN_SHUTDOWN_FILE))?;
        if clean {
            checkpoint::sync_dir(dir)?;
        }
        cleaner::finish_interrupted(dir)?;
        let bases = list_segments(dir)?;
        let log_start_checkpoint = checkpoint::read_offset(dir, LOG_START_OFFSET_FILE)?;
        let recovery_point = if clean {
            None
        } else {
            checkpoint::read_offset(dir, RECOVERY_POINT_FILE)?
        };
        let recover_from = match (clean, recovery_point) {
            (true, _) => bases.len(),
            (false, Some(point)) => bases
                .partition_point(|&base| base <= point)
                .saturating_sub(1),
            (false, None) => 0,
        };

        let mut segments = load_segments(dir, &bases, recover_from, &config, now_ms)?;
        if segments.is_empty() {
            segments.push(Segment::create(dir, log_start_checkpoint.unwrap_or(0))?);
            checkpoint::sync_dir(dir)?;
        }
        segments
            .last_mut()
            .expect("at least one segment")
            .activate()?;
        let log_end_offset = segments.last().expect("at least one segment").next_offset();
        let first_base = segments[0].base_offset();
        let log_start_offset = log_start_checkpoint
            .unwrap_or(first_base)
            .clamp(first_base, log_end_offset);
        let cleaner_checkpoint = checkpoint::read_offset(dir, CLEANER_OFFSET_FILE)?;
        // A replicated partition's high watermark as last checkpointed;
        // without a checkpoint, everything in the log counts as committed
        // (one replica).
        let high_watermark = checkpoint::read_offset(dir, HIGH_WATERMARK_FILE)?
            .unwrap_or(log_end_offset)
            .clamp(log_start_offset, log_end_offset);

        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            high_watermark,
            recovery_point: log_end_offset,
            cleaner_checkpoint: cleaner_checkpoint.unwrap_or(0).min(log_end_offset),
            epochs: LeaderEpochCache::default(),
            producers: ProducerState::default(),
            producer_snapshot_due: false,
            roll_sync_due: None,
            snapshot_sync_due: None,
            recovery_point_file: CheckpointFile::new(dir, RECOVERY_POINT_FILE),
            log_start_file: CheckpointFile::new(dir, LOG_START_OFFSET_FILE),
            epochs_file: CheckpointFile::new(dir, LEADER_EPOCH_FILE),
            after_lock: AfterLock::default(),
            unflushed_records: 0,
            last_flush_ms: now_ms,
            last_now_ms: now_ms,
            tail: Tail::default(),
        };
        if log_start_checkpoint != Some(log_start_offset) {
            checkpoint::write_offset(dir, LOG_START_OFFSET_FILE, log_start_offset)?;
        }
        if cleaner_checkpoint.is_some_and(|offset| offset > log_end_offset) {
            // Recovery cut the log below what was cleaned.
            checkpoint::write_offset(dir, CLEANER_OFFSET_FILE, log_end_offset)?;
        }
        // Finish a deletion that a crash interrupted.
        let below = log.count_oldest(|segment, _| segment.next_offset() <= log_start_offset);
        log.delete_oldest(below)?;
        log.take_after_lock().run()?;
        log.load_epochs()?;
        log.load_producer_state()?;
        // Trusted segments were fsynced before; recovered ones just were.
        checkpoint::write_offset(dir, RECOVERY_POINT_FILE, log_end_offset)?;
        log.check_invariants();
        tracing::info!(
            dir = %dir.display(),
            clean,
            segments = log.segments.len(),
            recovered_segments = bases.len().saturating_sub(recover_from),
            log_start_offset,
            log_end_offset,
            "opened partition log"
        );
        Ok(log)
    }

    fn load_epochs(&mut self) -> Result<(), StorageError> {
        let (mut epochs, mut changed) = match LeaderEpochCache::load(&self.dir)? {
            Some(epochs) => (epochs, false),
            None => (self.rebuild_epochs()?, true),
        };
        changed |= epochs.truncate_from_end(self.log_end_offset());
        changed |= epochs.truncate_from_start(self.log_start_offset);
        self.epochs = epochs;
        if changed {
            self.persist_epochs()?;
        }
        Ok(())
    }

    /// The leader epochs as the batch headers record them.
    fn rebuild_epochs(&self) -> Result<LeaderEpochCache, StorageError> {
        let mut epochs = LeaderEpochCache::default();
        for segment in &self.segments {
            segment.scan_headers(0, RECOVERY_CHUNK_BYTES, |_, header| {
                epochs.assign(header.partition_leader_epoch, header.base_offset);
                ControlFlow::<()>::Continue(())
            })?;
        }
        Ok(epochs)
    }

    /// Appends producer batches as the only replica: [`Self::append_as_leader`],
    /// then everything written is committed (the high watermark moves to the
    /// log end).
    pub fn append(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let info = self.append_as_leader(records, leader_epoch, now_ms)?;
        self.set_high_watermark(self.log_end_offset());
        self.check_invariants();
        Ok(info)
    }

    /// Appends producer batches as the partition's leader: validates all of
    /// them (lengths, sizes, CRCs, record counts) before writing any,
    /// assigns offsets from the log end, stamps `leader_epoch`, and with
    /// LogAppendTime sets `now_ms` as the batches' timestamp. The bytes are
    /// in the file (page cache) when this returns. The high watermark does
    /// not move: the leader moves it once the in-sync replicas have the
    /// batches.
    pub fn append_as_leader(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.append_leader(records, leader_epoch, now_ms, AppendOrigin::Client(None))
    }

    /// [`Self::append_as_leader`] of a transactional batch that starts its
    /// producer's transaction here, verified with the transaction
    /// coordinator: `guard` is what [`ProducerState::verification_guard`]
    /// gave before the verification (a marker written since voids it).
    pub fn append_as_leader_verified(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
        guard: u64,
    ) -> Result<AppendInfo, StorageError> {
        self.append_leader(
            records,
            leader_epoch,
            now_ms,
            AppendOrigin::Client(Some(guard)),
        )
    }

    /// Appends batches a coordinator writes for a producer (transactional
    /// offset commits to `__consumer_offsets`), as the leader: validated as
    /// producer batches, but of the producer checks only the epoch applies.
    pub fn append_as_coordinator(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.append_leader(records, leader_epoch, now_ms, AppendOrigin::Coordinator)
    }

    /// Appends a transaction marker (WriteTxnMarkers) as the leader: a
    /// control batch that ends the producer's transaction in this partition.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.last_now_ms = now_ms;
        self.producers
            .check_marker(producer_id, producer_epoch, marker.coordinator_epoch)?;
        let bytes = marker_batch(producer_id, producer_epoch, marker, now_ms)?;
        let header = BatchHeader::parse(&bytes).map_err(StorageError::from_producer_batch)?;
        let first_offset = self.log_end_offset();
        let prepared = prepare(&[(header, bytes.clone())], first_offset, leader_epoch, -1)?;
        self.write_prepared(&prepared, first_offset, now_ms)?;
        self.tail.push(&prepared);
        if self.epochs.assign(leader_epoch, first_offset) {
            self.persist_epochs()?;
        }
        self.apply_producers(&prepared, &[bytes])?;
        Ok(AppendInfo {
            first_offset,
            last_offset: first_offset,
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset,
            duplicate: false,
        })
    }

    /// The last stable offset: below it every transaction has ended (read
    /// committed consumers read up to here). The first offset of the oldest
    /// open transaction, capped by the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        self.producers
            .first_unstable_offset()
            .map_or(self.high_watermark, |first| first.min(self.high_watermark))
            .max(self.log_start_offset)
    }

    fn append_leader(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo, StorageError> {
        self.last_now_ms = now_ms;
        let batches = self.validate(&records, now_ms)?;
        if let Some(duplicate) = self.check_producers(&batches, origin)? {
            return Ok(AppendInfo {
                first_offset: duplicate.first_offset,
                last_offset: duplicate.last_offset,
                log_append_time_ms: -1,
                log_start_offset: self.log_start_offset,
                duplicate: true,
            });
        }
        let first_offset = self.log_end_offset();
        let log_append_time_ms = match self.config.message_timestamp_type {
            TimestampType::LogAppendTime => now_ms,
            TimestampType::CreateTime => -1,
        };
        let prepared = prepare(&batches, first_offset, leader_epoch, log_append_time_ms)?;
        self.write_prepared(&prepared, first_offset, now_ms)?;
        self.tail.push(&prepared);
        if self.epochs.assign(leader_epoch, first_offset) {
            self.persist_epochs()?;
        }
        self.apply_producers(&prepared, &[])?;
        Ok(AppendInfo {
            first_offset,
            last_offset: self.log_end_offset() - 1,
            log_append_time_ms,
            log_start_offset: self.log_start_offset,
            duplicate: false,
        })
    }

    /// The producer checks of a leader append (see [`crate::producer`]):
    /// an error refuses the whole append; a duplicate (only as the append's
    /// one batch, as Produce sends them) is answered with its first offsets.
    fn check_producers(
        &self,
        batches: &[(BatchHeader, Bytes)],
        origin: AppendOrigin,
    ) -> Result<Option<crate::producer::BatchMetadata>, StorageError> {
        let verified = match origin {
            AppendOrigin::Coordinator => {
                for (header, _) in batches {
                    self.producers.check_coordinator(header)?;
                }
                return Ok(None);
            }
            AppendOrigin::Client(verified) => verified,
        };
        let mut pending: std::collections::HashMap<i64, ProducerEntry> = Default::default();
        for (header, _) in batches {
            match self.producers.check(&pending, header, verified)? {
                Verdict::Append => {}
                Verdict::Duplicate(original) if batches.len() == 1 => return Ok(Some(original)),
                Verdict::Duplicate(_) => {
                    return Err(StorageError::OutOfOrderSequence(format!(
                        "a retried batch of producer {} among {} batches",
                        header.producer_id,
                        batches.len()
                    )))
                }
            }
            if header.producer_id >= 0 && batches.len() > 1 {
                let entry = self.producers.pending_entry(&pending, header);
                pending.insert(header.producer_id, entry);
            }
        }
        Ok(None)
    }

    /// Applies written batches to the producer state (markers are read from
    /// `bytes`, the whole batches, where given, else from the log) and takes
    /// a snapshot if a segment rolled meanwhile.
    fn apply_producers(
        &mut self,
        prepared: &[PreparedBatch],
        bytes: &[Bytes],
    ) -> Result<(), StorageError> {
        for (index, batch) in prepared.iter().enumerate() {
            let header = &batch.header;
            let marker = if header.is_control() && header.producer_id >= 0 {
                match bytes.get(index) {
                    Some(bytes) => parse_marker(bytes, header),
                    None => self.read_marker(header)?,
                }
            } else {
                None
            };
            self.producers.apply(header, marker);
        }
        if std::mem::take(&mut self.producer_snapshot_due) {
            // fsynced with the rolled segments, without the lock.
            self.snapshot_sync_due = Some(self.producers.write_snapshot_unsynced(&self.dir)?);
        }
        Ok(())
    }

    /// The marker of the control batch `header` describes, read from the log.
    fn read_marker(
        &self,
        header: &BatchHeader,
    ) -> Result<Option<crate::producer::Marker>, StorageError> {
        let index = self
            .segments
            .partition_point(|segment| segment.base_offset() <= header.base_offset)
            .saturating_sub(1);
        let segment = &self.segments[index];
        let Some((position, found)) = segment.find_batch(header.base_offset)? else {
            return Ok(None);
        };
        let batch = segment.read_bytes(position, found.total_size())?;
        Ok(parse_marker(&batch, &found))
    }

    /// The producer state after a recovery or a truncation: the newest
    /// snapshot at or below the log end, then the batches after it.
    fn load_producer_state(&mut self) -> Result<(), StorageError> {
        let log_end_offset = self.log_end_offset();
        let mut state = ProducerState::load_snapshot(&self.dir, log_end_offset)?
            .unwrap_or_else(|| ProducerState::new(self.log_start_offset));
        let from = state.end_offset().max(self.log_start_offset);
        let first = self
            .segments
            .partition_point(|segment| segment.base_offset() <= from)
            .saturating_sub(1);
        let mut replayed = 0usize;
        for segment in &self.segments[first..] {
            let Some((start, _)) = segment.find_batch(from)? else {
                continue;
            };
            let failed =
                segment.scan_headers(start, RECOVERY_CHUNK_BYTES, |position, header| {
                    if header.next_offset() <= from {
                        return ControlFlow::Continue(());
                    }
                    let mut marker = None;
                    if header.is_control() && header.producer_id >= 0 {
                        match segment.read_bytes(position, header.total_size()) {
                            Ok(batch) => marker = parse_marker(&batch, header),
                            Err(error) => return ControlFlow::Break(error),
                        }
                    }
                    state.apply(header, marker);
                    replayed += 1;
                    ControlFlow::Continue(())
                })?;
            if let Some(error) = failed {
                return Err(error);
            }
        }
        state.on_log_start(self.log_start_offset);
        tracing::debug!(dir = %self.dir.display(), from, replayed, "producer state loaded");
        self.producers = state;
        Ok(())
    }

    /// Appends batches a follower fetched from its leader, byte for byte:
    /// offsets, leader epochs and timestamps are the leader's. Each batch
    /// must be whole, pass its CRC, and continue the log exactly (a batch
    /// ending at or before the log end, which a retried fetch can return,
    /// is skipped); a partial batch at the end of `records` (a fetch cut at
    /// its size limit) is left for the next fetch. Returns how many batches
    /// were appended. The high watermark does not move: the leader's says
    /// where it is.
    pub fn append_as_follower(
        &mut self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<usize, StorageError> {
        self.last_now_ms = now_ms;
        let mut batches = Vec::new();
        for batch in Batches::new(records) {
            let Ok((header, bytes)) = batch else {
                break;
            };
            verify_crc(&bytes).map_err(StorageError::CorruptMessage)?;
            batches.push((header, bytes));
        }
        let mut expected = self.log_end_offset();
        batches.retain(|(header, _)| header.next_offset() > expected);
        if batches.is_empty() {
            return Ok(0);
        }
        // Offsets only grow, and may skip: a compacted leader log has gaps
        // where the cleaner dropped whole batches (Kafka's followers take
        // them too). A batch straddling the log end, or one too far past it
        // for a segment to hold, is refused.
        for (header, _) in &batches {
            if header.base_offset < expected {
                return Err(StorageError::InvalidRecord(format!(
                    "a replicated batch starts at offset {}, below the log end {expected}",
                    header.base_offset
                )));
            }
            if header.last_offset() - expected > i64::from(i32::MAX) {
                return Err(StorageError::InvalidRecord(format!(
                    "a replicated batch ends at offset {}, too far past the log end {expected}",
                    header.last_offset()
                )));
            }
            expected = header.next_offset();
        }
        let prepared: Vec<PreparedBatch> = batches
            .iter()
            .map(|(header, bytes)| PreparedBatch {
                header_bytes: bytes[..BATCH_HEADER_BYTES]
                    .try_into()
                    .expect("a parsed batch holds a header"),
                header: *header,
                records: bytes.slice(BATCH_HEADER_BYTES..),
            })
            .collect();
        let first_offset = self.log_end_offset();
        // Held batches are a leader's (its followers' reads); a follower's
        // log grows from what its leader sent, which it need not keep.
        self.tail.clear();
        self.write_prepared(&prepared, first_offset, now_ms)?;
        let mut epochs_changed = false;
        for batch in &prepared {
            epochs_changed |= self.epochs.assign(
                batch.header.partition_leader_epoch,
                batch.header.base_offset,
            );
        }
        if epochs_changed {
            self.persist_epochs()?;
        }
        let whole: Vec<Bytes> = batches.into_iter().map(|(_, bytes)| bytes).collect();
        self.apply_producers(&prepared, &whole)?;
        Ok(prepared.len())
    }

    /// Writes prepared batches and counts them towards `flush.messages`;
    /// a failed write is undone.
    fn write_prepared(
        &mut self,
        prepared: &[PreparedBatch],
        first_offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        if let Err(error) = self.write(prepared, now_ms) {
            tracing::error!(dir = %self.dir.display(), %error, "append failed; removing what it wrote");
            if let Err(undo) = self.truncate_to(first_offset) {
                tracing::error!(dir = %self.dir.display(), error = %undo, "could not remove a failed append");
            }
            return Err(error);
        }
        self.check_invariants();
        let records_appended: i64 = prepared
            .iter()
            .map(|batch| batch.header.record_count as i64)
            .sum();
        self.unflushed_records = self
            .unflushed_records
            .saturating_add(records_appended as u64);
        let flush_due = self.unflushed_records >= self.config.flush_messages
            || now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms;
        if flush_due {
            self.flush()?;
        }
        Ok(())
    }

    /// A new leader records where its epoch starts (the log end now), so
    /// that OffsetForLeaderEpoch and fetches naming an earlier epoch find
    /// that epoch's end even before the leader appends anything.
    pub fn assign_leader_epoch(&mut self, leader_epoch: i32) -> Result<(), StorageError> {
        if self.epochs.assign(leader_epoch, self.log_end_offset()) {
            self.persist_epochs()?;
        }
        Ok(())
    }

    /// The epoch of the last batch in the log (-1 if none is known).
    pub fn last_epoch(&self) -> i32 {
        self.epochs
            .entries()
            .last()
            .map_or(crate::epoch::UNDEFINED_EPOCH, |entry| entry.epoch)
    }

    /// Writes the high watermark down, for a replicated partition: after a
    /// restart it starts there, not at the log end, so that nothing that was
    /// not known to be committed becomes visible.
    pub fn checkpoint_high_watermark(&self) -> Result<(), StorageError> {
        checkpoint::write_offset(&self.dir, HIGH_WATERMARK_FILE, self.high_watermark)
    }

    /// Empties the log and restarts it at `offset` (a follower whose leader
    /// no longer has what the follower would fetch next).
    pub fn reset_to(&mut self, offset: i64) -> Result<(), StorageError> {
        self.truncate_fully_and_start_at(offset)
    }

    /// Everything a producer's input must satisfy, checked before anything is written.
    fn validate(
        &self,
        records: &Bytes,
        now_ms: i64,
    ) -> Result<Vec<(BatchHeader, Bytes)>, StorageError> {
        let batches = batch::split_batches(records).map_err(StorageError::from_producer_batch)?;
        let max = self.config.max_message_bytes;
        if let Some((header, _)) = batches
            .iter()
            .find(|(header, _)| header.total_size() > max as usize)
        {
            return Err(StorageError::MessageTooLarge {
                size: header.total_size(),
                max,
            });
        }
        for (header, bytes) in &batches {
            verify_crc(bytes).map_err(StorageError::from_producer_batch)?;
            header
                .check_producer_batch()
                .map_err(StorageError::from_producer_batch)?;
            if header.is_control() {
                return Err(StorageError::InvalidRecord(
                    "producers may not write control batches".into(),
                ));
            }
            self.check_timestamps(header, now_ms)?;
            if self.config.cleanup_compact {
                check_keys(header, bytes)?;
            }
        }
        Ok(batches)
    }

    /// With CreateTime, a batch's timestamps must lie within
    /// `message.timestamp.before.max.ms` / `after.max.ms` of `now_ms`. The
    /// batch header's first and largest timestamps are checked: records are
    /// not decompressed on the produce path.
    fn check_timestamps(&self, header: &BatchHeader, now_ms: i64) -> Result<(), StorageError> {
        if self.config.message_timestamp_type != TimestampType::CreateTime {
            return Ok(());
        }
        let low = now_ms.saturating_sub(self.config.timestamp_before_max_ms);
        let high = now_ms.saturating_add(self.config.timestamp_after_max_ms);
        for timestamp in [header.base_timestamp, header.max_timestamp] {
            // -1 means "no timestamp" (Kafka does not check it either).
            if timestamp != -1 && (timestamp < low || timestamp > high) {
                return Err(StorageError::InvalidTimestamp {
                    timestamp,
                    low,
                    high,
                });
            }
        }
        Ok(())
    }

    /// Writes prepared batches, rolling segments as needed.
    fn write(&mut self, prepared: &[PreparedBatch], now_ms: i64) -> Result<(), StorageError> {
        let mut next = 0;
        while next < prepared.len() {
            if self.should_roll(self.active().size(), &prepared[next].header, now_ms) {
                self.roll()?;
            }
            let start = next;
            let mut size = self.active().size() + prepared[next].header.total_size() as u64;
            next += 1;
            while next < prepared.len() && !self.should_roll(size, &prepared[next].header, now_ms) {
                size += prepared[next].header.total_size() as u64;
                next += 1;
            }
            let index_interval_bytes = self.config.index_interval_bytes;
            self.active_mut()
                .append(&prepared[start..next], index_interval_bytes, now_ms)?;
        }
        Ok(())
    }

    /// Whether `batch` must go to a new segment when the active one holds
    /// `segment_size` bytes. An empty segment takes any batch.
    fn should_roll(&self, segment_size: u64, batch: &BatchHeader, now_ms: i64) -> bool {
        let active = self.active();
        if segment_size == 0 {
            return false;
        }
        let total = segment_size + batch.total_size() as u64;
        let too_old = active
            .first_batch_time_ms()
            .is_some_and(|first| now_ms.saturating_sub(first) > self.config.segment_ms);
        total > self.config.effective_segment_bytes()
            || too_old
            || active.relative(batch.last_offset()).is_none()
            || active.indexes_full()
            || total > u32::MAX as u64
    }

    /// Seals the active segment and starts a new one at the log end. The
    /// sealed segment, the new files' directory entries and the producer
    /// snapshot of the roll are fsynced later, as Kafka does, so that
    /// appends do not wait for a segment's worth of writeback nor for an
    /// fsync queued behind it: by whoever takes
    /// [`PartitionLog::take_roll_sync`] (the broker, on a blocking thread),
    /// or by the next [`PartitionLog::flush`]. The recovery point moves only
    /// once it is done.
    fn roll(&mut self) -> Result<(), StorageError> {
        let log_end_offset = self.log_end_offset();
        assert!(!self.active().is_empty(), "rolling an empty segment");
        self.active_mut().seal_unsynced()?;
        let mut segment = Segment::create(&self.dir, log_end_offset)?;
        segment.activate()?;
        self.segments.push(segment);
        self.roll_sync_due = Some(log_end_offset);
        self.producer_snapshot_due = true;
        tracing::debug!(dir = %self.dir.display(), base_offset = log_end_offset, "rolled a new segment");
        Ok(())
    }

    /// The fsyncs that rolls have left to do, up to the base offset of the
    /// active segment, detached from the log: run it on any thread, then
    /// call [`PartitionLog::complete_roll_sync`].
    pub fn take_roll_sync(&mut self) -> Result<Option<RollSync>, StorageError> {
        if self.roll_sync_due.is_none() && self.snapshot_sync_due.is_none() {
            return Ok(None);
        }
        let up_to = self.roll_sync_due.take();
        let mut segments = Vec::new();
        if up_to.is_some() {
            for segment in &self.segments[..self.segments.len() - 1] {
                segments.extend(segment.sync_handle()?);
            }
        }
        Ok(Some(RollSync {
            segments,
            snapshot: self.snapshot_sync_due.take(),
            dir: self.dir.clone(),
            up_to,
        }))
    }

    /// A [`RollSync`] has run: the segments it covered are on disk, and the
    /// recovery point moves up to them.
    /// The checkpoint goes to disk with [`PartitionLog::take_after_lock`].
    pub fn complete_roll_sync(&mut self, up_to: Option<i64>) -> Result<(), StorageError> {
        let Some(up_to) = up_to else {
            return Ok(());
        };
        for segment in &mut self.segments {
            if segment.next_offset() <= up_to {
                segment.mark_synced();
            }
        }
        let up_to = up_to.min(self.active().base_offset());
        if up_to > self.recovery_point {
            // Written after the lock: a later value only says more is on disk.
            self.recovery_point = up_to;
            self.recovery_point_file.set_offset(up_to);
            self.after_lock.write_later(&self.recovery_point_file);
        }
        Ok(())
    }

    /// Whole batches from the one containing `offset`: at most `max_bytes`
    /// (capped at [`READ_BYTES_MAX`]) but at least one batch if
    /// `min_one_batch`, none starting at or after `max_offset`. Empty at the
    /// log end.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<Bytes, StorageError> {
        self.read_checked(offset, max_bytes, max_offset, min_one_batch, true)
    }

    /// [`Self::read`] for a follower, which checks every batch's CRC as it
    /// appends it: the batches are not checked here too (as Kafka's leader
    /// does not check them on any read), only their framing. In pieces to
    /// send one after another: batches appended as leader and not yet
    /// written by every in-sync follower come from memory, each as its
    /// header and its records (see [`crate::tail`]); others are one piece
    /// read from the file.
    pub fn read_for_replica(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<Vec<Bytes>, StorageError> {
        // Held batches are at or above the high watermark: in range.
        let held = self.tail.read(
            offset,
            max_bytes.min(READ_BYTES_MAX),
            max_offset,
            min_one_batch,
        );
        if let Some(pieces) = held {
            return Ok(pieces);
        }
        let read = self.read_checked(offset, max_bytes, max_offset, min_one_batch, false)?;
        Ok(if read.is_empty() {
            Vec::new()
        } else {
            vec![read]
        })
    }

    fn read_checked(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
        check_crcs: bool,
    ) -> Result<Bytes, StorageError> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(self.out_of_range(offset));
        }
        if offset == log_end_offset || offset >= max_offset {
            return Ok(Bytes::new());
        }
        let first = self
            .segments
            .partition_point(|segment| segment.base_offset() <= offset)
            .saturating_sub(1);
        for segment in &self.segments[first..] {
            if let Some((position, header)) = segment.find_batch(offset)? {
                return read_batches(
                    segment,
                    position,
                    &header,
                    (max_bytes, max_offset, min_one_batch),
                    check_crcs,
                );
            }
        }
        Ok(Bytes::new())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Sets the high watermark, clamped to `[log_start_offset, log_end_offset]`.
    /// `append` already moves it to the log end (one replica).
    pub fn set_high_watermark(&mut self, high_watermark: i64) {
        self.high_watermark = high_watermark.clamp(self.log_start_offset, self.log_end_offset());
        // Every in-sync follower has what is below.
        self.tail.trim_below(self.high_watermark);
        self.check_invariants();
    }

    /// ListOffsets by timestamp: the first record, from the log start and
    /// below the high watermark, whose timestamp is at or after `timestamp`,
    /// as `(offset, timestamp)`; `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let (low, high) = (self.log_start_offset, self.high_watermark);
        for segment in &self.segments {
            if segment.base_offset() >= high {
                break;
            }
            if segment.next_offset() <= low {
                continue;
            }
            if let Some(found) = segment.offset_for_timestamp(timestamp, low, high)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets with MAX_TIMESTAMP (-3, KIP-734): the record with the
    /// largest timestamp, the earliest one on ties, as `(offset, timestamp)`.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let (low, high) = (self.log_start_offset, self.high_watermark);
        let mut best: Option<(i64, &Segment, u64, BatchHeader)> = None;
        for segment in &self.segments {
            if segment.base_offset() >= high {
                break;
            }
            if segment.next_offset() <= low {
                continue;
            }
            if let Some((timestamp, position, header)) = segment.max_timestamp_batch(low, high)? {
                if best.is_none_or(|(most, ..)| timestamp > most) {
                    best = Some((timestamp, segment, position, header));
                }
            }
        }
        match best {
            Some((_, segment, position, header)) => {
                segment.max_timestamp_record(position, &header, low, high)
            }
            None => Ok(None),
        }
    }

    /// OffsetForLeaderEpoch: `(epoch, end offset)`, see [`LeaderEpochCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, leader_epoch: i32) -> (i32, i64) {
        self.epochs
            .end_offset_for(leader_epoch, self.log_end_offset())
    }

    /// DeleteRecords: moves the log start offset up to `offset` (-1 means
    /// the high watermark) and deletes the segments wholly below it. Returns
    /// the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, StorageError> {
        let target = if offset == -1 {
            self.high_watermark
        } else {
            offset
        };
        if target < 0 || target > self.high_watermark {
            return Err(self.out_of_range(offset));
        }
        if target > self.log_start_offset {
            self.set_log_start_offset(target)?;
            let below = self.count_oldest(|segment, _| segment.next_offset() <= target);
            self.delete_oldest(below)?;
        }
        self.check_invariants();
        Ok(self.log_start_offset)
    }

    /// A follower's log start follows its leader's, up to `offset` (at most
    /// the high watermark), as [`PartitionLog::delete_records_before`] does
    /// but with the checkpoints written by [`PartitionLog::take_after_lock`]'s
    /// caller: a follower must not wait for the disk under the lock each
    /// time the leader's retention moves on. A crash before they are written
    /// leaves the log start at the first segment kept, and the leader tells
    /// it again.
    pub fn follow_log_start(&mut self, offset: i64) -> Result<(), StorageError> {
        let target = offset.min(self.high_watermark);
        if target > self.log_start_offset {
            self.move_log_start_later(target);
            let below = self.count_oldest(|segment, _| segment.next_offset() <= target);
            self.delete_oldest(below)?;
        }
        self.check_invariants();
        Ok(())
    }

    /// Removes every batch that holds `offset` or anything after it. The log
    /// then ends at the start of the batch that held `offset` (at `offset`
    /// when it is a batch boundary). Below the log start, the log is emptied
    /// and restarted at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset >= self.log_end_offset() {
            // Nothing to remove but epochs that start at the end and hold
            // no batch, as Kafka's truncateTo drops them.
            if self.epochs.truncate_from_end(offset) {
                self.persist_epochs()?;
            }
            return Ok(());
        }
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        if offset < self.log_start_offset {
            return self.truncate_fully_and_start_at(offset);
        }
        let keep = self
            .segments
            .partition_point(|segment| segment.base_offset() <= offset)
            .max(1);
        for segment in self.segments.drain(keep..).rev().collect::<Vec<_>>() {
            segment.delete()?;
        }
        let index_interval_bytes = self.config.index_interval_bytes;
        let active = self.active_mut();
        active.truncate_to(offset, index_interval_bytes)?;
        active.activate()?;
        self.after_truncation()
    }

    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        for segment in self.segments.drain(..).collect::<Vec<_>>() {
            segment.delete()?;
        }
        let mut segment = Segment::create(&self.dir, offset)?;
        segment.activate()?;
        checkpoint::sync_dir(&self.dir)?;
        self.segments.push(segment);
        self.log_start_offset = offset;
        self.log_start_file.write_offset(offset)?;
        self.epochs = LeaderEpochCache::default();
        self.persist_epochs()?;
        ProducerState::remove_snapshots(&self.dir)?;
        self.after_truncation()
    }

    fn after_truncation(&mut self) -> Result<(), StorageError> {
        self.tail.clear();
        let log_end_offset = self.log_end_offset();
        if self.log_start_offset > log_end_offset {
            // The batch holding the log start was removed.
            self.log_start_offset = log_end_offset;
            self.log_start_file.write_offset(log_end_offset)?;
        }
        self.high_watermark = self
            .high_watermark
            .min(log_end_offset)
            .max(self.log_start_offset);
        if self.recovery_point > log_end_offset {
            self.set_recovery_point(log_end_offset)?;
        }
        if self.epochs.truncate_from_end(log_end_offset) {
            self.persist_epochs()?;
        }
        if self.cleaner_checkpoint > log_end_offset {
            // What is appended from here on has not been cleaned.
            self.cleaner_checkpoint = log_end_offset;
            checkpoint::write_offset(&self.dir, CLEANER_OFFSET_FILE, log_end_offset)?;
        }
        // What the removed batches did to the producers is undone by
        // rebuilding from a snapshot below the new end.
        self.load_producer_state()?;
        self.check_invariants();
        Ok(())
    }

    /// Deletes the oldest segments by `retention.ms` (their newest
    /// timestamp), then by `retention.bytes`, and any wholly below the log
    /// start. Only a prefix of segments goes, and only segments below the
    /// high watermark. The active segment goes too when every segment is
    /// due and it is not empty (a new empty segment is rolled first), as in
    /// Kafka. Returns how many segments were deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        self.last_now_ms = now_ms;
        let log_start_offset = self.log_start_offset;
        let mut deleted = self.delete_oldest(
            self.count_oldest(|segment, _| segment.next_offset() <= log_start_offset),
        )?;
        if self.config.cleanup_delete && self.config.retention_ms >= 0 {
            let retention_ms = self.config.retention_ms;
            let mut expired = Vec::new();
            for segment in &self.segments {
                let newest = segment.largest_timestamp_for_retention()?;
                expired.push(now_ms.saturating_sub(newest) > retention_ms);
            }
            let count = self.count_oldest(|_, index| expired[index]);
            deleted += self.delete_oldest(count)?;
        }
        if self.config.cleanup_delete && self.config.retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            let count = self.count_oldest(|segment, _| {
                let fits = excess - segment.size() as i64 >= 0;
                if fits {
                    excess -= segment.size() as i64;
                }
                fits
            });
            deleted += self.delete_oldest(count)?;
        }
        self.check_invariants();
        Ok(deleted)
    }

    /// Compacts the log when `cleanup.policy` has `compact` (else does
    /// nothing): keeps the latest record of each key in the cleanable
    /// segments, drops tombstones past `delete.retention.ms`, merges small
    /// segments. See [`crate::cleaner`] for the rules and the crash safety.
    pub fn clean(&mut self, now_ms: i64) -> Result<CleanStats, StorageError> {
        self.last_now_ms = now_ms;
        let mut stats = CleanStats::default();
        if !self.config.cleanup_compact {
            return Ok(stats);
        }
        // The cleaner rewrites sealed segments only, below what is held;
        // emptied anyway, so that no rewrite can ever disagree with it.
        self.tail.clear();
        let first_dirty = self.cleaner_checkpoint.max(self.log_start_offset);
        let cleanable = &self.segments[..self.cleanable_segment_count(now_ms)];
        let Some(pass) = Pass::plan(cleanable, first_dirty, &self.config, now_ms)? else {
            return Ok(stats);
        };
        let mut removed = 0;
        for group in pass.groups(&self.segments, &self.config) {
            let group = group.start - removed..group.end - removed;
            let first = group.start == 0;
            let Some(output) =
                pass.write_group(&self.dir, &self.segments[group.clone()], first, &mut stats)?
            else {
                continue;
            };
            removed += group.len() - self.swap_in(group, output)?;
        }
        // The first group keeps a batch, so the first segment's base stays;
        // should a log ever start with a group that left no segment, it
        // starts at the next one.
        let first_base = self.segments[0].base_offset();
        if first_base > self.log_start_offset {
            self.set_log_start_offset(first_base.min(self.high_watermark))?;
        }
        // As on open: a segment whose records kept all lie below the log start goes.
        let log_start_offset = self.log_start_offset;
        self.delete_oldest(
            self.count_oldest(|segment, _| segment.next_offset() <= log_start_offset),
        )?;
        self.cleaner_checkpoint = pass.dirty_end;
        checkpoint::write_offset(&self.dir, CLEANER_OFFSET_FILE, pass.dirty_end)?;
        self.check_invariants();
        tracing::info!(dir = %self.dir.display(), ?stats, checkpoint = pass.dirty_end, "cleaned");
        Ok(stats)
    }

    /// How many of the oldest segments the cleaner may rewrite: not the
    /// active one, none reaching the high watermark, none holding a record
    /// newer than `min.compaction.lag.ms`.
    fn cleanable_segment_count(&self, now_ms: i64) -> usize {
        let newest = now_ms.saturating_sub(self.config.min_compaction_lag_ms.max(0));
        self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|segment| {
                segment.next_offset() <= self.high_watermark
                    && segment
                        .max_timestamp()
                        .is_none_or(|max| max.timestamp <= newest)
            })
            .count()
    }

    /// Commits a cleaned group and puts its output (if anything stayed) in
    /// place of the segments at `group`. Returns how many segments replace them.
    fn swap_in(
        &mut self,
        group: Range<usize>,
        output: CleanedGroup,
    ) -> Result<usize, StorageError> {
        let (base, end) = (output.base_offset, output.end_offset);
        let cleaned = self.dir.join(cleaner::cleaned_file_name(base, end));
        let swap = self.dir.join(cleaner::swap_file_name(base, end));
        std::fs::rename(&cleaned, &swap).at(&swap)?;
        // The commit point: from here on, open completes the swap.
        checkpoint::sync_dir(&self.dir)?;
        // Closes the replaced segments; finish_swap deletes their files.
        drop(self.segments.drain(group.clone()));
        if !cleaner::finish_swap(&self.dir, base, end)? {
            return Ok(0);
        }
        let (segment, cut_bytes) = Segment::recover(
            &self.dir,
            base,
            self.config.index_interval_bytes,
            self.last_now_ms,
        )?;
        if cut_bytes > 0 {
            // The output was fsynced just before: only a disk fault gets here.
            tracing::error!(segment = %segment.log_path().display(), cut_bytes, "a cleaned segment lost its tail");
        }
        self.segments.insert(group.start, segment);
        Ok(1)
    }

    /// How many of the oldest segments may be deleted: the longest prefix
    /// where `due(segment, index)` holds, stopping at segments not wholly
    /// below the high watermark and at an empty active segment.
    fn count_oldest(&self, mut due: impl FnMut(&Segment, usize) -> bool) -> usize {
        let last = self.segments.len() - 1;
        self.segments
            .iter()
            .enumerate()
            .take_while(|&(index, segment)| {
                let deletable = segment.next_offset() <= self.high_watermark
                    && !(index == last && segment.is_empty());
                deletable && due(segment, index)
            })
            .count()
    }

    /// Deletes the `count` oldest segments, rolling first if that is all of
    /// them, and moves the log start past them.
    fn delete_oldest(&mut self, count: usize) -> Result<usize, StorageError> {
        if count == 0 {
            return Ok(0);
        }
        if count == self.segments.len() {
            self.roll()?;
        }
        // (Capped for a log read back with a gap after its last deletable segment.)
        let new_start = self.segments[count].base_offset().min(self.high_watermark);
        if new_start > self.log_start_offset {
            // The checkpoint is written after the lock, before the files are
            // removed. A crash before it leaves the old log start and the
            // renamed files, which the next open removes; the log start is
            // then the first segment's base (open clamps it).
            self.move_log_start_later(new_start);
        }
        for segment in self.segments.drain(..count).collect::<Vec<_>>() {
            tracing::info!(segment = %segment.log_path().display(), "deleting segment");
            let retired = segment.retire()?;
            self.after_lock.remove_later(retired);
        }
        Ok(count)
    }

    /// What this log left to do without its lock since the last call:
    /// checkpoint writes and the removal of deleted segments' files. Run it
    /// after releasing the lock; `close` and the next `open` do what is
    /// left undone.
    pub fn take_after_lock(&mut self) -> AfterLock {
        std::mem::take(&mut self.after_lock)
    }

    /// Moves the log start up and writes it down at once (DeleteRecords:
    /// records deleted must not come back).
    fn set_log_start_offset(&mut self, offset: i64) -> Result<(), StorageError> {
        self.move_log_start(offset);
        self.log_start_file.write()?;
        self.epochs_file.write()
    }

    /// Moves the log start up in memory; writing the checkpoint files (log
    /// start, and the leader epochs whose first entry moves with it, as
    /// Kafka's asynchronous flush of that file does) is the caller's.
    fn move_log_start(&mut self, offset: i64) {
        assert!(
            offset >= self.log_start_offset && offset <= self.high_watermark,
            "log start offset {offset}"
        );
        self.log_start_offset = offset;
        self.log_start_file.set_offset(offset);
        if self.epochs.truncate_from_start(offset) {
            self.epochs_file.set(self.epochs.encode().into_bytes());
        }
        self.producers.on_log_start(offset);
    }

    /// Moves the log start up, its checkpoints written by
    /// [`PartitionLog::take_after_lock`]'s caller.
    fn move_log_start_later(&mut self, offset: i64) {
        self.move_log_start(offset);
        self.after_lock.write_later(&self.log_start_file);
        self.after_lock.write_later(&self.epochs_file);
    }

    /// Writes the leader-epoch cache down now.
    fn persist_epochs(&mut self) -> Result<(), StorageError> {
        self.epochs_file.set(self.epochs.encode().into_bytes());
        self.epochs_file.write()
    }

    fn set_recovery_point(&mut self, offset: i64) -> Result<(), StorageError> {
        self.recovery_point = offset;
        self.recovery_point_file.write_offset(offset)
    }

    /// fsyncs every segment with unflushed data and moves the recovery point
    /// to the log end.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        for segment in &mut self.segments {
            segment.flush()?;
        }
        self.unflushed_records = 0;
        self.last_flush_ms = self.last_now_ms;
        self.roll_sync_due = None;
        if let Some(snapshot) = self.snapshot_sync_due.take() {
            checkpoint::sync_if_present(&snapshot)?;
            ProducerState::prune_snapshots(&self.dir)?;
        }
        let log_end_offset = self.log_end_offset();
        if self.recovery_point != log_end_offset {
            self.set_recovery_point(log_end_offset)?;
        }
        Ok(())
    }

    /// Flushes everything and leaves the clean-shutdown marker, so that the
    /// next open trusts the segments instead of re-validating them.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.take_after_lock().run()?;
        self.active_mut().seal()?;
        self.flush()?;
        self.persist_epochs()?;
        self.producers.write_snapshot(&self.dir)?;
        self.log_start_file.write_offset(self.log_start_offset)?;
        checkpoint::write_atomically(&self.dir, CLEAN_SHUTDOWN_FILE, b"")?;
        tracing::debug!(dir = %self.dir.display(), log_end_offset = self.log_end_offset(), "closed partition log");
        Ok(())
    }

    /// Bytes of all segments' log files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.iter().map(Segment::base_offset).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The idempotent and transactional producers' state.
    pub fn producers(&self) -> &ProducerState {
        &self.producers
    }

    /// Forgets producers silent for `expiration_ms` (`producer.id.expiration.ms`)
    /// that have no open transaction. Returns how many.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// New settings apply from the next operation on (an oversized active
    /// segment rolls on the next append).
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has a segment")
    }

    fn out_of_range(&self, offset: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
        }
    }

    fn check_invariants(&self) {
        let log_end_offset = self.log_end_offset();
        assert!(
            self.log_start_offset <= self.high_watermark && self.high_watermark <= log_end_offset,
            "log start {} <= high watermark {} <= log end {}",
            self.log_start_offset,
            self.high_watermark,
            log_end_offset
        );
        assert!(
            self.segments
                .iter()
                .rev()
                .skip(1)
                .all(|segment| !segment.is_empty()),
            "only the active segment may be empty"
        );
    }
}

/// A compacted log keeps the latest record of each key, so every record
/// needs a key (Kafka answers INVALID_RECORD too). The records are walked
/// with the decompression cap; a batch beyond it is refused.
fn check_keys(header: &BatchHeader, batch: &[u8]) -> Result<(), StorageError> {
    let keyless = walk_records(batch, header, |record| match record.key {
        None => ControlFlow::Break(record.offset - header.base_offset),
        Some(_) => ControlFlow::Continue(()),
    })
    .map_err(|error| {
        StorageError::InvalidRecord(format!(
            "cannot read the records of a batch for a compacted topic: {error}"
        ))
    })?;
    match keyless {
        Some(delta) => Err(StorageError::InvalidRecord(format!(
            "Compacted topic cannot accept message without key (offset delta {delta} of a batch)"
        ))),
        None => Ok(()),
    }
}

/// Gives each batch its offsets and epoch (and LogAppendTime) in a copy of
/// its header; the records are shared, not copied. Copying the whole batch
/// for LogAppendTime would be simpler, but the CRC can be computed over the
/// two parts, so no batch is ever copied.
fn prepare(
    batches: &[(BatchHeader, Bytes)],
    first_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: i64,
) -> Result<Vec<PreparedBatch>, StorageError> {
    let mut next_offset = first_offset;
    let mut prepared = Vec::with_capacity(batches.len());
    for (_, bytes) in batches {
        let mut header_bytes: [u8; BATCH_HEADER_BYTES] = bytes[..BATCH_HEADER_BYTES]
            .try_into()
            .expect("validated batches hold a header");
        let records = bytes.slice(BATCH_HEADER_BYTES..);
        set_base_offset(&mut header_bytes, next_offset);
        set_partition_leader_epoch(&mut header_bytes, leader_epoch);
        if log_append_time_ms >= 0 {
            set_log_append_time_parts(&mut header_bytes, &records, log_append_time_ms);
        }
        let header =
            BatchHeader::parse(&header_bytes).map_err(StorageError::from_producer_batch)?;
        next_offset = header.next_offset();
        prepared.push(PreparedBatch {
            header_bytes,
            header,
            records,
        });
    }
    Ok(prepared)
}

/// Reads whole batches from `position` of `segment`, where `first` is.
/// `limits`: at most `max_bytes`, none at or after `max_offset`, but at
/// least one batch if `min_one_batch` (see [`PartitionLog::read`]).
fn read_batches(
    segment: &Segment,
    position: u64,
    first: &BatchHeader,
    (max_bytes, max_offset, min_one_batch): (usize, i64, bool),
    check_crcs: bool,
) -> Result<Bytes, StorageError> {
    if first.base_offset >= max_offset || (first.total_size() > max_bytes && !min_one_batch) {
        return Ok(Bytes::new());
    }
    let budget = max_bytes.min(READ_BYTES_MAX).max(first.total_size()) as u64;
    let bytes = segment.read_bytes(position, budget.min(segment.size() - position) as usize)?;
    let mut batches = Batches::new(bytes.clone());
    let mut end = 0;
    for item in batches.by_ref() {
        // An error here is the batch cut by the budget: expected.
        let Ok((header, batch)) = item else { break };
        if header.base_offset >= max_offset {
            break;
        }
        let checked = if check_crcs {
            verify_crc(&batch)
        } else {
            Ok(())
        };
        if let Err(reason) = checked {
            if end == 0 {
                return Err(segment.corrupt(position, reason));
            }
            tracing::error!(segment = %segment.log_path().display(), position = position + end as u64, %reason, "corrupt batch on read");
            break;
        }
        end += batch.len();
    }
    if end == 0 {
        let reason = batch::BatchError::Truncated {
            needed: first.total_size(),
            available: bytes.len(),
        };
        return Err(segment.corrupt(position, reason));
    }
    Ok(bytes.slice(..end))
}

/// Base offsets of the segments in `dir`, sorted. Removes leftovers: index
/// files without a log, and temporary files of interrupted checkpoint writes.
fn list_segments(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMPORARY_SUFFIX) || name.ends_with(DELETED_SUFFIX) {
            checkpoint::remove_if_present(&entry.path())?;
            continue;
        }
        match parse_segment_file_name(name) {
            Some((base_offset, LOG_SUFFIX)) => logs.push(base_offset),
            Some((base_offset, _)) => indexes.push((base_offset, entry.path())),
            None => {}
        }
    }
    logs.sort_unstable();
    for (base_offset, path) in indexes {
        if logs.binary_search(&base_offset).is_err() {
            tracing::warn!(path = %path.display(), "removing an index without a log");
            checkpoint::remove_if_present(&path)?;
        }
    }
    Ok(logs)
}

/// Opens the segments at `bases`: trusted before `recover_from`, recovered
/// from there on. Stops at the first segment recovery had to cut or that
/// overlaps its predecessor, and deletes everything after it: the log must
/// not have holes. Empty segments other than the last are deleted.
fn load_segments(
    dir: &Path,
    bases: &[i64],
    recover_from: usize,
    config: &LogConfig,
    now_ms: i64,
) -> Result<Vec<Segment>, StorageError> {
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    let interval = config.index_interval_bytes;
    let mut stop_at = bases.len();
    for (index, &base_offset) in bases.iter().enumerate() {
        let (segment, cut_bytes) = if index < recover_from {
            Segment::open_trusted(dir, base_offset, interval, now_ms)?
        } else {
            Segment::recover(dir, base_offset, interval, now_ms)?
        };
        if let Some(previous) = segments.last() {
            if segment.base_offset() < previous.next_offset() {
                tracing::warn!(segment = %segment.log_path().display(), "segment overlaps the previous one; dropping it and later ones");
                stop_at = index;
                segment.delete()?;
                break;
            }
        }
        segments.push(segment);
        if cut_bytes > 0 {
            stop_at = index + 1;
            break;
        }
    }
    for &base_offset in &bases[stop_at..] {
        if segments
            .last()
            .is_some_and(|segment| segment.base_offset() == base_offset)
        {
            continue;
        }
        tracing::warn!(dir = %dir.display(), base_offset, "deleting a segment after a corrupt one");
        for suffix in [
            LOG_SUFFIX,
            crate::segment::OFFSET_INDEX_SUFFIX,
            crate::segment::TIME_INDEX_SUFFIX,
        ] {
            checkpoint::remove_if_present(&dir.join(segment_file_name(base_offset, suffix)))?;
        }
    }
    let last = segments.len().saturating_sub(1);
    let mut kept = Vec::with_capacity(segments.len());
    for (index, segment) in segments.into_iter().enumerate() {
        if segment.is_empty() && index != last {
            segment.delete()?;
        } else {
            kept.push(segment);
        }
    }
    Ok(kept)
}

/// Fsyncs that rolls of a partition log left to do: see
/// [`PartitionLog::take_roll_sync`].
#[derive(Debug)]
pub struct RollSync {
    segments: Vec<SegmentSync>,
    snapshot: Option<PathBuf>,
    dir: PathBuf,
    /// The recovery point may move up to here once it has run (`None`: only
    /// a producer snapshot was due).
    pub up_to: Option<i64>,
}

impl RollSync {
    /// fsyncs the sealed segments' files, the producer snapshot and the
    /// directory (the new segment's entries, the snapshot's rename), then
    /// removes producer snapshots beyond the newest few.
    pub fn run(&self) -> Result<(), StorageError> {
        for segment in &self.segments {
            segment.run()?;
        }
        if let Some(snapshot) = &self.snapshot {
            checkpoint::sync_if_present(snapshot)?;
        }
        checkpoint::sync_dir(&self.dir)?;
        if self.snapshot.is_some() {
            ProducerState::prune_snapshots(&self.dir)?;
        }
        Ok(())
    }
}
