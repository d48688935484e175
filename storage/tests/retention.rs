//! retention.ms and retention.bytes.

mod common;

use common::*;
use storage::{LogConfig, TimestampType};

const HOUR_MS: i64 = 3_600_000;

/// Segments of two batches each, the batches of segment `i` stamped `NOW - (5 - i) hours`.
fn aged_log(dir: &std::path::Path, config: LogConfig) -> storage::PartitionLog {
    let one_len = batch(2, 100, NOW).len() as u64;
    let mut log = open(
        dir,
        LogConfig {
            segment_bytes: one_len * 2,
            ..config
        },
    );
    for segment in 0..5 {
        let timestamp = NOW - (5 - segment) * HOUR_MS;
        log.append(batch(2, 100, timestamp), 0, NOW).unwrap();
        log.append(batch(2, 100, timestamp), 0, NOW).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8, 12, 16]);
    log
}

#[test]
fn retention_ms_deletes_the_oldest_segments_by_their_newest_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = aged_log(
        dir.path(),
        LogConfig {
            retention_ms: 3 * HOUR_MS,
            ..config()
        },
    );
    // The newest records of segments 0 and 1 are about 5 h and 4 h old; segment 2's just under 3 h.
    assert_eq!(log.enforce_retention(NOW).unwrap(), 2);
    assert_eq!(log.segment_base_offsets(), vec![8, 12, 16]);
    assert_eq!(log.log_start_offset(), 8);
    assert_eq!(segment_files(dir.path(), ".log").len(), 3);
    assert!(matches!(
        log.read(7, 1 << 20, 20, true),
        Err(storage::StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, 8).len(), 6);
    assert_eq!(log.enforce_retention(NOW).unwrap(), 0);
    // An hour later, one more.
    assert_eq!(log.enforce_retention(NOW + HOUR_MS).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 12);
    drop(log);
    let log = open(dir.path(), config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (12, 20));
}

#[test]
fn when_everything_expired_the_active_segment_goes_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = aged_log(
        dir.path(),
        LogConfig {
            retention_ms: HOUR_MS / 2,
            ..config()
        },
    );
    assert_eq!(log.enforce_retention(NOW).unwrap(), 5);
    assert_eq!(log.segment_base_offsets(), vec![20]);
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark()
        ),
        (20, 20, 20)
    );
    assert_eq!(log.size_bytes(), 0);
    // An empty active segment is never deleted.
    assert_eq!(log.enforce_retention(NOW + 100 * HOUR_MS).unwrap(), 0);
    assert_eq!(
        log.append(batch(1, 10, NOW), 0, NOW).unwrap().first_offset,
        20
    );
}

#[test]
fn retention_forever_and_future_timestamps_delete_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = aged_log(
        dir.path(),
        LogConfig {
            retention_ms: -1,
            ..config()
        },
    );
    assert_eq!(log.enforce_retention(NOW + 1_000 * HOUR_MS).unwrap(), 0);

    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            retention_ms: HOUR_MS,
            segment_bytes: 1,
            ..config()
        },
    );
    log.append(batch(1, 10, NOW + 10 * HOUR_MS), 0, NOW)
        .unwrap();
    log.append(batch(1, 10, NOW - 10 * HOUR_MS), 0, NOW)
        .unwrap();
    // Only a prefix goes: the first segment is not expired, so neither is the second.
    assert_eq!(log.enforce_retention(NOW).unwrap(), 0);
}

#[test]
fn retention_by_log_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        retention_ms: HOUR_MS,
        segment_bytes: 1,
        ..config()
    };
    let mut log = open(dir.path(), config);
    // Producer timestamps are ancient; the append times decide.
    log.append(batch(1, 10, 0), 0, NOW - 2 * HOUR_MS).unwrap();
    log.append(batch(1, 10, 0), 0, NOW).unwrap();
    assert_eq!(log.enforce_retention(NOW).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 1);
}

#[test]
fn retention_bytes_keeps_the_log_at_or_above_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = aged_log(dir.path(), config());
    let segment_size = log.size_bytes() / 5;
    log.set_config(LogConfig {
        retention_bytes: (segment_size * 2 + 1) as i64,
        ..log.config().clone()
    });
    assert_eq!(log.enforce_retention(NOW).unwrap(), 2);
    assert_eq!(log.segment_base_offsets(), vec![8, 12, 16]);
    assert_eq!(log.size_bytes(), segment_size * 3);
    log.set_config(LogConfig {
        retention_bytes: 0,
        ..log.config().clone()
    });
    assert_eq!(log.enforce_retention(NOW).unwrap(), 3);
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.size_bytes()
        ),
        (20, 20, 0)
    );
}

#[test]
fn nothing_at_or_above_the_high_watermark_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = aged_log(
        dir.path(),
        LogConfig {
            retention_ms: 0,
            ..config()
        },
    );
    log.set_high_watermark(10);
    assert_eq!(log.enforce_retention(NOW).unwrap(), 2);
    assert_eq!(log.segment_base_offsets(), vec![8, 12, 16]);
    assert_eq!(log.log_start_offset(), 8);
}

#[test]
fn a_compact_only_log_is_not_bounded_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = aged_log(
        dir.path(),
        LogConfig {
            cleanup_delete: false,
            retention_ms: HOUR_MS,
            retention_bytes: 1,
            ..config()
        },
    );
    assert_eq!(log.enforce_retention(NOW).unwrap(), 0);
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8, 12, 16]);
}

#[test]
fn retention_leaves_the_disk_work_for_after_the_lock_and_a_crash_before_it_loses_nothing_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log_start_file =
        || std::fs::read_to_string(dir.path().join("log-start-offset-checkpoint")).unwrap();
    let config = LogConfig {
        retention_ms: 3 * HOUR_MS,
        ..config()
    };
    let mut log = aged_log(dir.path(), config.clone());
    assert_eq!(log.enforce_retention(NOW).unwrap(), 2);
    // Under the lock: the log is right in memory, the deleted segments'
    // files are only renamed, and the checkpoint is not written yet.
    assert_eq!(log.log_start_offset(), 8);
    assert_eq!(segment_files(dir.path(), ".log").len(), 3);
    assert_eq!(
        segment_files(dir.path(), ".deleted").len(),
        6,
        "a log and two indexes each"
    );
    assert_eq!(log_start_file(), "0\n0\n");
    // After it: the checkpoint, then the files.
    log.take_after_lock().run().unwrap();
    assert_eq!(log_start_file(), "0\n8\n");
    assert!(segment_files(dir.path(), ".deleted").is_empty());

    // Killed before the work after the lock ran: the next open removes the
    // renamed files and starts the log at the first segment kept.
    assert_eq!(log.enforce_retention(NOW + HOUR_MS).unwrap(), 1);
    assert_eq!(segment_files(dir.path(), ".deleted").len(), 3);
    drop(log);
    assert_eq!(log_start_file(), "0\n8\n");
    let log = open(dir.path(), config);
    assert!(segment_files(dir.path(), ".deleted").is_empty());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (12, 20));
    assert_eq!(read_all(&log, 12).len(), 4);
}
