//! ListOffsets by timestamp and by max timestamp, against a brute-force
//! answer over the records decoded by kafka_protocol.

mod common;

use common::*;
use storage::{LogConfig, PartitionLog, TimestampType};

/// Every record as `(offset, timestamp)`, from the log start.
fn all_records(log: &PartitionLog) -> Vec<(i64, i64)> {
    let mut records = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let mut bytes = log
            .read(offset, 1 << 20, log.high_watermark(), true)
            .unwrap();
        if bytes.is_empty() {
            break;
        }
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        for record in sets.into_iter().flat_map(|set| set.records) {
            offset = record.offset + 1;
            if record.offset >= log.log_start_offset() {
                records.push((record.offset, record.timestamp));
            }
        }
    }
    records
}

fn expected_for(records: &[(i64, i64)], target: i64) -> Option<(i64, i64)> {
    records
        .iter()
        .copied()
        .find(|&(_, timestamp)| timestamp >= target)
}

fn expected_max(records: &[(i64, i64)]) -> Option<(i64, i64)> {
    records
        .iter()
        .copied()
        .fold(None, |best, record| match best {
            Some((_, most)) if record.1 <= most => best,
            _ => Some(record),
        })
}

/// Batches with timestamps out of order within and across batches.
fn timestamps_for(batch: i64) -> Vec<i64> {
    (0..4)
        .map(|i| NOW + ((batch * 37 + i * 53) % 100))
        .collect()
}

#[test]
fn create_time_lookups_match_brute_force_for_every_compression() {
    for compression in ALL_COMPRESSIONS {
        let dir = tempfile::tempdir().unwrap();
        let one_len = batch_with(&timestamps_for(0), compression, 30).len() as u64;
        let config = LogConfig {
            segment_bytes: one_len * 4,
            index_interval_bytes: 64,
            ..config()
        };
        let mut log = open(dir.path(), config.clone());
        for batch in 0..20 {
            log.append(batch_with(&timestamps_for(batch), compression, 30), 0, NOW)
                .unwrap();
        }
        assert!(log.segment_count() > 3);
        let check = |log: &PartitionLog| {
            let records = all_records(log);
            for target in NOW - 5..NOW + 105 {
                assert_eq!(
                    log.offset_for_timestamp(target).unwrap(),
                    expected_for(&records, target),
                    "{compression:?} {target}"
                );
            }
            assert_eq!(
                log.offset_for_timestamp(i64::MIN).unwrap(),
                records.first().copied()
            );
            assert_eq!(
                log.max_timestamp().unwrap(),
                expected_max(&records),
                "{compression:?}"
            );
        };
        check(&log);
        // After a clean reopen (indexes from disk) and an unclean one (rebuilt).
        log.close().unwrap();
        let log = open(dir.path(), config.clone());
        check(&log);
        drop(log);
        let mut log = open(dir.path(), config.clone());
        check(&log);
        // Not below the log start, even inside a batch.
        log.delete_records_before(29).unwrap();
        check(&log);
        log.delete_records_before(41).unwrap();
        check(&log);
    }
}

#[test]
fn log_append_time_lookups_use_the_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..config()
    };
    let mut log = open(dir.path(), config);
    for (i, compression) in ALL_COMPRESSIONS.into_iter().enumerate() {
        // Producer timestamps are ignored.
        log.append(
            batch_with(&[5, 1, 3], compression, 10),
            0,
            NOW + 10 * i as i64,
        )
        .unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, NOW)));
    assert_eq!(log.offset_for_timestamp(NOW).unwrap(), Some((0, NOW)));
    assert_eq!(
        log.offset_for_timestamp(NOW + 1).unwrap(),
        Some((3, NOW + 10))
    );
    assert_eq!(
        log.offset_for_timestamp(NOW + 40).unwrap(),
        Some((12, NOW + 40))
    );
    assert_eq!(log.offset_for_timestamp(NOW + 41).unwrap(), None);
    assert_eq!(log.max_timestamp().unwrap(), Some((12, NOW + 40)));
    // A tie on the maximum: the earliest record wins.
    log.append(batch_with(&[1, 2], Compression::Lz4, 10), 0, NOW + 40)
        .unwrap();
    assert_eq!(log.max_timestamp().unwrap(), Some((12, NOW + 40)));
}

#[test]
fn max_timestamp_ties_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 1,
            ..config()
        },
    );
    assert_eq!(log.max_timestamp().unwrap(), None);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    log.append(batch_with(&[10, 30, 20], Compression::Gzip, 10), 0, NOW)
        .unwrap();
    log.append(batch_with(&[30, 30], Compression::Zstd, 10), 0, NOW)
        .unwrap();
    log.append(batch_with(&[5], Compression::None, 10), 0, NOW)
        .unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.max_timestamp().unwrap(), Some((1, 30)));
    assert_eq!(log.offset_for_timestamp(21).unwrap(), Some((1, 30)));
    assert_eq!(log.offset_for_timestamp(31).unwrap(), None);
    // Records below the log start do not count.
    log.delete_records_before(2).unwrap();
    assert_eq!(log.max_timestamp().unwrap(), Some((3, 30)));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((2, 20)));
    // Nor do records at or above the high watermark.
    log.set_high_watermark(3);
    assert_eq!(log.max_timestamp().unwrap(), Some((2, 20)));
    assert_eq!(log.offset_for_timestamp(21).unwrap(), None);
}

#[test]
fn create_time_bounds_refuse_batches_too_old_or_too_new() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        timestamp_before_max_ms: 1_000,
        timestamp_after_max_ms: 500,
        ..config()
    };
    let mut log = open(dir.path(), config.clone());
    // Within the bounds, edges included.
    log.append(
        batch_with(&[NOW - 1_000, NOW + 500], Compression::None, 10),
        0,
        NOW,
    )
    .unwrap();
    for timestamps in [[NOW - 1_001, NOW], [NOW, NOW + 501]] {
        for compression in ALL_COMPRESSIONS {
            let refused = log.append(batch_with(&timestamps, compression, 10), 0, NOW);
            assert!(
                matches!(refused, Err(storage::StorageError::InvalidTimestamp { .. })),
                "{timestamps:?} {compression:?}: {refused:?}"
            );
        }
    }
    assert_eq!(log.log_end_offset(), 2, "nothing refused was written");
    // With LogAppendTime the producer's timestamps do not matter.
    log.set_config(LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..config
    });
    log.append(batch_with(&[0], Compression::None, 10), 0, NOW)
        .unwrap();
}
