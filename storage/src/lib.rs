//! The partition log on local disk.
//!
//! # Layout
//!
//! - [`log`]: [`PartitionLog`], the segments of one partition: append,
//!   read, roll, truncate, retention, flush, recovery on open. The only place
//!   where offsets are assigned.
//! - [`segment`]: one segment, a log file plus its two indexes; opening a
//!   segment either trusts it (after a clean shutdown) or re-validates it.
//! - [`index`]: the sparse offset and time indexes.
//! - [`scan`]: reading batches sequentially from a log file, CRCs on request.
//! - [`records`]: walking the records of one batch for offsets and
//!   timestamps (decompressing, bounded).
//! - [`epoch`]: the leader-epoch cache.
//! - [`producer`]: idempotent and transactional producers' state: duplicate
//!   detection, sequence and epoch checks, open transactions, the last stable
//!   offset, aborted transactions, markers.
//! - [`checkpoint`]: the small files of a partition directory.
//! - [`config`]: [`LogConfig`] and the limits; [`error`]: [`StorageError`].
//!
//! # API (what the broker calls)
//!
//! ```text
//! PartitionLog::open(dir, config, now_ms)                       recovery included
//! append_as_leader(records, leader_epoch, now_ms)               producer batches: checked, offsets assigned
//! append_as_leader_verified(records, leader_epoch, now_ms, guard)   a transaction's first batch (KIP-890)
//! append_as_coordinator(records, leader_epoch, now_ms)          a coordinator's batches for a producer
//! append_marker(producer_id, producer_epoch, marker, leader_epoch, now_ms)
//! append_as_follower(records)                                   the leader's bytes, offsets kept
//! append(records, leader_epoch, now_ms)                         the only replica (tests, tools)
//! read(offset, max_bytes, max_offset, min_one_batch)            CRC-checked, for consumers
//! read_for_replica(offset, max_bytes)                           for followers: the tail in memory, else the file
//! log_start_offset  log_end_offset  high_watermark  set_high_watermark  last_stable_offset
//! assign_leader_epoch  end_offset_for_epoch  last_epoch  truncate_to  reset_to  follow_log_start
//! offset_for_timestamp  max_timestamp  delete_records_before  enforce_retention  clean
//! producers  expire_producers  checkpoint_high_watermark  flush  close
//! take_roll_sync / complete_roll_sync, take_after_lock          disk waits done without the log's lock
//! config  set_config  dir  size_bytes  segment_count  segment_base_offsets
//! ```
//!
//! Every append validates every batch (lengths, `max.message.bytes`, CRC,
//! record count and offset deltas; control batches only as markers) before
//! writing any, and writes with `write(2)` before returning. A leader's
//! appends assign offsets from the log end and stamp the leader epoch (and
//! LogAppendTime); the high watermark is the broker's to move
//! (`set_high_watermark`) once the ISR has the batches, except in
//! `append`, which has no other replica to wait for.
//!
//! # On disk
//!
//! One directory per partition:
//!
//! ```text
//! 00000000000000000000.log        batches, byte for byte as produced, except
//!                                 baseOffset, partitionLeaderEpoch and (LogAppendTime)
//!                                 attributes/maxTimestamp/crc
//! 00000000000000000000.index      (relative offset u32, position u32) every index.interval.bytes
//! 00000000000000000000.timeindex  (max timestamp so far i64, relative offset u32)
//! 00000000000000012345.log ...    the next segment, named by its base offset
//! recovery-point-checkpoint       "0\n<offset>\n": everything below is fsynced
//! log-start-offset-checkpoint     "0\n<offset>\n"
//! leader-epoch-checkpoint         "0\n<count>\n<epoch> <start offset>\n..."
//! 00000000000000012345.snapshot   producer state as of that offset (see [`producer`]):
//!                                 written at each roll and on close, the newest three kept
//! *.deleted                       files of segments deleted under the log's lock, removed
//!                                 after it (an open removes any a crash left)
//! clean-shutdown                  empty; present only between close and the next open
//! ```
//!
//! # Durability and recovery
//!
//! Appends reach the page cache before they are acknowledged, so a killed
//! process loses nothing. fsync happens when a segment is rolled (the old
//! one), on `flush` (`flush.messages` / `flush.ms`, checked on append) and
//! on `close`; each moves the recovery point.
//!
//! What may wait for the disk is kept out of the log's lock, which appends
//! and fetches take: a roll's fsyncs (the sealed segment, the new files'
//! directory entries, the roll's producer snapshot) are a [`RollSync`];
//! checkpoints that move up with retention, a follower's log start and a
//! finished roll sync, and the removal of deleted segments' files (renamed
//! `*.deleted` under the lock), are a [`checkpoint::AfterLock`]. Writes of
//! one checkpoint file are serialised and always write its latest value, so
//! a late write never undoes a lowering (truncation), which is written
//! under the lock. Until they run, the files on disk say less than the
//! log does, which recovery tolerates: an older recovery point re-validates
//! more, an older log start is raised to the first segment kept.
//!
//! `open` with the clean-shutdown marker trusts the segments, checking only
//! that each index file is well-formed (whole entries, increasing, inside
//! the log) and that the batch headers after the last index entry end
//! exactly at the end of the file; a segment failing that is recovered.
//! Without the marker, segments from the one holding the recovery point on
//! are recovered: every batch is checked (header sanity, offsets increasing
//! and fitting the segment, CRC), the file is truncated at the first torn or
//! corrupt batch, later segments are deleted, and the indexes are rebuilt.
//! The marker is removed (durably) before anything else, so a crash during
//! or after `open` is never mistaken for a clean shutdown. The log end is
//! the last valid batch's last offset + 1; the high watermark starts there.
//! No file content makes `open` panic.

pub mod checkpoint;
pub mod cleaner;
pub mod config;
pub mod epoch;
pub mod error;
pub mod index;
pub mod log;
pub mod producer;
pub mod records;
pub mod scan;
pub mod segment;
pub mod tail;

#[cfg(test)]
mod test_batches;

pub use cleaner::CleanStats;
pub use config::{LogConfig, TimestampType};
pub use error::StorageError;
pub use log::{AppendInfo, PartitionLog, RollSync};
pub use producer::Marker;
