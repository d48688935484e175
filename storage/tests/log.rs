//! PartitionLog behaviour on real files: appends, reads, rolls, epochs,
//! DeleteRecords, truncation, flush and close.

mod common;

use bytes::Bytes;
use common::*;
use protocol::batch::{compute_crc, BatchHeader, TimestampType, CRC_AT, LAST_OFFSET_DELTA_AT};
use storage::{LogConfig, PartitionLog, StorageError};

#[test]
fn append_assigns_offsets_and_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark()
        ),
        (0, 0, 0)
    );

    let batches = [batch(3, 10, NOW), batch(1, 10, NOW), batch(5, 10, NOW)];
    let mut expected_first = 0;
    for (produced, count) in batches.iter().zip([3, 1, 5]) {
        let info = log.append(produced.clone(), 7, NOW).unwrap();
        assert_eq!(info.first_offset, expected_first);
        assert_eq!(info.last_offset, expected_first + count - 1);
        assert_eq!(info.log_append_time_ms, -1);
        assert_eq!(info.log_start_offset, 0);
        expected_first += count;
    }
    assert_eq!((log.log_end_offset(), log.high_watermark()), (9, 9));

    let all = log.read(0, 1 << 20, log.high_watermark(), true).unwrap();
    assert_eq!(batch_ranges(&all), vec![(0, 2), (3, 3), (4, 8)]);
    // Stored as produced apart from the base offset and leader epoch.
    let mut at = 0;
    for (produced, header) in batches.iter().zip(headers(&all)) {
        let stored = &all[at..at + produced.len()];
        assert_eq!(&stored[16..], &produced[16..]);
        assert_eq!(header.partition_leader_epoch, 7);
        at += produced.len();
    }
    let records = decoded_records(&all);
    assert_eq!(
        records
            .iter()
            .map(|(offset, _)| *offset)
            .collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
}

#[test]
fn a_fetch_inside_a_batch_gets_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    log.append(batch(3, 10, NOW), 0, NOW).unwrap();
    log.append(batch(5, 10, NOW), 0, NOW).unwrap();
    for offset in 3..8 {
        let bytes = log.read(offset, 1 << 20, 8, true).unwrap();
        assert_eq!(batch_ranges(&bytes), vec![(3, 7)], "offset {offset}");
    }
    // The last batch, read from its last record: the consumer must not hang.
    assert_eq!(
        batch_ranges(&log.read(7, 1, 8, true).unwrap()),
        vec![(3, 7)]
    );
}

#[test]
fn read_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    let one = batch(2, 100, NOW);
    for _ in 0..4 {
        log.append(one.clone(), 0, NOW).unwrap();
    }
    let size = one.len();
    let hw = log.high_watermark();
    // Whole batches only, up to max_bytes.
    assert_eq!(
        batch_ranges(&log.read(0, size * 2 + size / 2, hw, true).unwrap()),
        vec![(0, 1), (2, 3)]
    );
    assert_eq!(
        batch_ranges(&log.read(0, size * 2, hw, false).unwrap()),
        vec![(0, 1), (2, 3)]
    );
    // KIP-74: at least one batch, even larger than max_bytes, if asked.
    assert_eq!(
        batch_ranges(&log.read(2, 10, hw, true).unwrap()),
        vec![(2, 3)]
    );
    assert!(log.read(2, 10, hw, false).unwrap().is_empty());
    assert!(log.read(2, 0, hw, false).unwrap().is_empty());
    // Nothing at or past max_offset.
    assert_eq!(
        batch_ranges(&log.read(0, 1 << 20, 4, true).unwrap()),
        vec![(0, 1), (2, 3)]
    );
    assert_eq!(
        batch_ranges(&log.read(0, 1 << 20, 5, true).unwrap()),
        vec![(0, 1), (2, 3), (4, 5)]
    );
    assert!(log.read(4, 1 << 20, 4, true).unwrap().is_empty());
    // The log end is empty; outside [log start, log end] is out of range.
    assert!(log.read(8, 1 << 20, hw, true).unwrap().is_empty());
    for offset in [-1, 9, i64::MAX] {
        match log.read(offset, 1 << 20, hw, true) {
            Err(StorageError::OffsetOutOfRange {
                offset: o,
                log_start_offset: 0,
                log_end_offset: 8,
            }) => assert_eq!(o, offset),
            other => panic!("{offset}: {other:?}"),
        }
    }
}

#[test]
fn producer_input_is_validated_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            max_message_bytes: 500,
            ..config()
        },
    );
    let good = batch(2, 10, NOW);
    log.append(good.clone(), 0, NOW).unwrap();
    let size_before = log.size_bytes();

    let rejected = |log: &mut PartitionLog, input: Bytes| log.append(input, 0, NOW).unwrap_err();
    assert!(matches!(
        rejected(&mut log, Bytes::new()),
        StorageError::InvalidRecord(_)
    ));
    assert!(matches!(
        rejected(&mut log, Bytes::from_static(&[1; 100])),
        StorageError::CorruptMessage(_)
    ));

    let mut bad_crc = good.to_vec();
    *bad_crc.last_mut().unwrap() ^= 1;
    // A good batch followed by a bad one: neither is written.
    let input = concat(&[good.clone(), Bytes::from(bad_crc)]);
    assert!(matches!(
        rejected(&mut log, input),
        StorageError::CorruptMessage(_)
    ));
    let torn = concat(&[good.clone(), good.slice(..good.len() - 1)]);
    assert!(matches!(
        rejected(&mut log, torn),
        StorageError::CorruptMessage(_)
    ));

    let large = batch(1, 600, NOW);
    match rejected(&mut log, large.clone()) {
        StorageError::MessageTooLarge { size, max: 500 } => assert_eq!(size, large.len()),
        other => panic!("{other:?}"),
    }

    let mut control = record(0, NOW, vec![]);
    control.control = true;
    let mut buf = bytes::BytesMut::new();
    kafka_protocol::records::RecordBatchEncoder::encode(
        &mut buf,
        [&control],
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    assert!(matches!(
        rejected(&mut log, buf.freeze()),
        StorageError::InvalidRecord(_)
    ));

    // A last offset delta that does not match the record count (CRC made right).
    let mut gappy = good.to_vec();
    gappy[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&5i32.to_be_bytes());
    let crc = compute_crc(&gappy);
    gappy[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        rejected(&mut log, Bytes::from(gappy)),
        StorageError::InvalidRecord(_)
    ));

    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.size_bytes(), size_before);
    assert_eq!(
        batch_ranges(&log.read(0, 1 << 20, 2, true).unwrap()),
        vec![(0, 1)]
    );
    log.append(good, 0, NOW).unwrap();
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn log_append_time_stamps_batches_and_keeps_crcs_valid() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..config()
    };
    let mut log = open(dir.path(), config);
    for compression in ALL_COMPRESSIONS {
        let input = concat(&[
            batch_with(&[5, 6], compression, 20),
            batch_with(&[7], compression, 20),
        ]);
        let now = NOW + 1_000;
        let info = log.append(input, 3, now).unwrap();
        assert_eq!(info.log_append_time_ms, now);
        let bytes = log
            .read(info.first_offset, 1 << 20, log.high_watermark(), true)
            .unwrap();
        for header in headers(&bytes) {
            assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
            assert_eq!(header.max_timestamp, now);
            assert_eq!(header.partition_leader_epoch, 3);
            assert_eq!(header.compression().unwrap(), compression);
        }
        // batch_ranges checks the CRCs; the decoder decompresses.
        assert_eq!(batch_ranges(&bytes).len(), 2);
        assert_eq!(decoded_records(&bytes).len(), 3);
    }
}

#[test]
fn rolls_by_size_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2, 100, NOW);
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: one.len() as u64 * 3,
            ..config()
        },
    );
    for _ in 0..10 {
        log.append(one.clone(), 0, NOW).unwrap();
    }
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12, 18]);
    assert_eq!(segment_files(dir.path(), ".log").len(), 4);
    assert!(dir.path().join("00000000000000000006.log").exists());
    assert!(dir.path().join("00000000000000000006.index").exists());
    assert!(dir.path().join("00000000000000000006.timeindex").exists());
    // One read stays in one segment.
    assert_eq!(
        batch_ranges(&log.read(2, 1 << 20, 20, true).unwrap()),
        vec![(2, 3), (4, 5)]
    );
    assert_eq!(
        read_all(&log, 0),
        (0..10).map(|i| (2 * i, 2 * i + 1)).collect::<Vec<_>>()
    );
    // Several batches in one append may roll in the middle.
    let three = concat(&[one.clone(), one.clone(), one.clone()]);
    log.append(three, 0, NOW).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12, 18, 24]);
    assert_eq!(read_all(&log, 0).len(), 13);
    // A batch larger than segment.bytes still goes in (alone).
    log.append(batch(3, 2_000, NOW), 0, NOW).unwrap();
    assert_eq!(log.segment_count(), 6);
    assert_eq!(read_all(&log, 26), vec![(26, 28)]);
}

#[test]
fn rolls_by_segment_ms() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_ms: 1_000,
            ..config()
        },
    );
    log.append(batch(1, 10, NOW), 0, NOW).unwrap();
    log.append(batch(1, 10, NOW), 0, NOW + 1_000).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(batch(1, 10, NOW), 0, NOW + 1_001).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    // The new segment's clock starts at its first append.
    log.append(batch(1, 10, NOW), 0, NOW + 2_001).unwrap();
    assert_eq!(log.segment_count(), 2);
    log.append(batch(1, 10, NOW), 0, NOW + 2_002).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
}

#[test]
fn leader_epochs_answer_and_survive_reopen_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    assert_eq!(log.end_offset_for_epoch(0), (-1, -1));
    for epoch in [0, 0, 2, 2, 5] {
        log.append(batch(2, 10, NOW), epoch, NOW).unwrap();
    }
    let expect = |log: &PartitionLog| {
        assert_eq!(log.end_offset_for_epoch(0), (0, 4));
        assert_eq!(log.end_offset_for_epoch(1), (0, 4));
        assert_eq!(log.end_offset_for_epoch(2), (2, 8));
        assert_eq!(log.end_offset_for_epoch(4), (2, 8));
        assert_eq!(log.end_offset_for_epoch(5), (5, 10));
        assert_eq!(log.end_offset_for_epoch(6), (-1, -1));
    };
    expect(&log);
    log.close().unwrap();
    let log = open(dir.path(), config());
    expect(&log);
    drop(log);
    std::fs::remove_file(dir.path().join("leader-epoch-checkpoint")).unwrap();
    let log = open(dir.path(), config());
    expect(&log);
    drop(log);
    std::fs::write(dir.path().join("leader-epoch-checkpoint"), "garbage").unwrap();
    let mut log = open(dir.path(), config());
    expect(&log);

    log.truncate_to(6).unwrap();
    assert_eq!(log.end_offset_for_epoch(2), (2, 6));
    assert_eq!(log.end_offset_for_epoch(5), (-1, -1));
    log.append(batch(2, 10, NOW), 6, NOW).unwrap();
    assert_eq!(log.end_offset_for_epoch(5), (2, 6));
    assert_eq!(log.end_offset_for_epoch(6), (6, 8));
}

#[test]
fn delete_records_moves_the_log_start_and_drops_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2, 100, NOW);
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: one.len() as u64 * 2,
            ..config()
        },
    );
    for _ in 0..6 {
        log.append(one.clone(), 0, NOW).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8]);

    assert_eq!(log.delete_records_before(5).unwrap(), 5);
    assert_eq!(log.log_start_offset(), 5);
    assert_eq!(log.segment_base_offsets(), vec![4, 8]);
    assert!(matches!(
        log.read(4, 1 << 20, 12, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // The batch holding the log start is returned whole; the client skips.
    assert_eq!(
        batch_ranges(&log.read(5, 1 << 20, 12, true).unwrap()),
        vec![(4, 5), (6, 7)]
    );
    // Below the log start: nothing changes. Past the high watermark: out of range.
    assert_eq!(log.delete_records_before(2).unwrap(), 5);
    assert!(matches!(
        log.delete_records_before(13),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.delete_records_before(-2),
        Err(StorageError::OffsetOutOfRange { .. })
    ));

    log.close().unwrap();
    let mut log = open(dir.path(), config());
    assert_eq!(log.log_start_offset(), 5);
    drop(log); // unclean
    log = open(dir.path(), config());
    assert_eq!(log.log_start_offset(), 5);

    // -1: up to the high watermark, which empties the log (a new segment is rolled).
    assert_eq!(log.delete_records_before(-1).unwrap(), 12);
    assert_eq!(log.segment_base_offsets(), vec![12]);
    assert_eq!(log.size_bytes(), 0);
    assert!(log.read(12, 1 << 20, 12, true).unwrap().is_empty());
    assert_eq!(log.append(one.clone(), 0, NOW).unwrap().first_offset, 12);
    drop(log);
    let log = open(dir.path(), config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (12, 14));
}

#[test]
fn truncate_to_drops_the_tail_at_batch_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2, 100, NOW);
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: one.len() as u64 * 2,
            ..config()
        },
    );
    for _ in 0..6 {
        log.append(one.clone(), 0, NOW).unwrap();
    }
    log.truncate_to(12).unwrap();
    assert_eq!(log.log_end_offset(), 12, "at the end: nothing to do");

    log.truncate_to(10).unwrap();
    assert_eq!((log.log_end_offset(), log.high_watermark()), (10, 10));
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8]);
    // Inside a batch: the whole batch goes, and the segment after it.
    log.truncate_to(5).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.segment_base_offsets(), vec![0, 4]);
    assert_eq!(read_all(&log, 0), vec![(0, 1), (2, 3)]);
    assert_eq!(segment_files(dir.path(), ".log").len(), 2);
    // Appends continue from the new end, in the emptied segment.
    assert_eq!(log.append(one.clone(), 0, NOW).unwrap().first_offset, 4);
    assert_eq!(log.segment_base_offsets(), vec![0, 4]);
    log.close().unwrap();
    let mut log = open(dir.path(), config());
    assert_eq!(read_all(&log, 0), vec![(0, 1), (2, 3), (4, 5)]);

    // Below the log start: the log restarts there, empty.
    log.delete_records_before(4).unwrap();
    log.truncate_to(3).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (3, 3));
    assert_eq!(log.segment_base_offsets(), vec![3]);
    assert_eq!(log.append(one, 0, NOW).unwrap().first_offset, 3);
}

#[test]
fn flush_moves_the_recovery_point_and_close_leaves_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let recovery_point =
        || std::fs::read_to_string(dir.path().join("recovery-point-checkpoint")).unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            flush_messages: 3,
            ..config()
        },
    );
    assert_eq!(recovery_point(), "0\n0\n");
    log.append(batch(2, 10, NOW), 0, NOW).unwrap();
    assert_eq!(recovery_point(), "0\n0\n");
    log.append(batch(1, 10, NOW), 0, NOW).unwrap();
    assert_eq!(recovery_point(), "0\n3\n", "flush.messages reached");
    log.append(batch(1, 10, NOW), 0, NOW).unwrap();
    log.flush().unwrap();
    assert_eq!(recovery_point(), "0\n4\n");

    let mut config = LogConfig {
        flush_ms: 100,
        ..config()
    };
    log.set_config(config.clone());
    log.append(batch(1, 10, NOW), 0, NOW + 50).unwrap();
    assert_eq!(recovery_point(), "0\n4\n");
    log.append(batch(1, 10, NOW), 0, NOW + 100).unwrap();
    assert_eq!(recovery_point(), "0\n6\n", "flush.ms reached");

    assert!(!dir.path().join("clean-shutdown").exists());
    log.close().unwrap();
    assert!(dir.path().join("clean-shutdown").exists());
    config.flush_ms = i64::MAX;
    let log = open(dir.path(), config);
    assert!(!dir.path().join("clean-shutdown").exists());
    assert_eq!(log.log_end_offset(), 6);
}

#[test]
fn high_watermark_is_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    log.append(batch(4, 10, NOW), 0, NOW).unwrap();
    log.set_high_watermark(2);
    assert_eq!(log.high_watermark(), 2);
    assert!(log
        .read(2, 1 << 20, log.high_watermark(), true)
        .unwrap()
        .is_empty());
    log.set_high_watermark(100);
    assert_eq!(log.high_watermark(), 4);
    log.set_high_watermark(-5);
    assert_eq!(log.high_watermark(), 0);
}

#[test]
fn reopen_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 600,
            ..config()
        },
    );
    for _ in 0..7 {
        log.append(batch(3, 50, NOW), 0, NOW).unwrap();
    }
    let before = read_all(&log, 0);
    let bases = log.segment_base_offsets();
    log.close().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 600,
            ..config()
        },
    );
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(log.segment_base_offsets(), bases);
    assert_eq!(
        log.append(batch(1, 50, NOW), 0, NOW).unwrap().first_offset,
        21
    );
    let header = BatchHeader::parse(&log.read(21, 1 << 20, 22, true).unwrap()).unwrap();
    assert_eq!(header.base_offset, 21);
}

#[test]
fn a_roll_leaves_its_fsync_to_a_roll_sync_and_then_moves_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let recovery_point =
        || std::fs::read_to_string(dir.path().join("recovery-point-checkpoint")).unwrap();
    let one = batch(2, 100, NOW);
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: one.len() as u64,
            ..config()
        },
    );
    assert!(
        log.take_roll_sync().unwrap().is_none(),
        "nothing rolled yet"
    );
    log.append(one.clone(), 0, NOW).unwrap();
    log.append(one.clone(), 0, NOW).unwrap();
    log.append(one.clone(), 0, NOW).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
    // The rolls did not fsync: the recovery point stays.
    assert_eq!(recovery_point(), "0\n0\n");
    let sync = log.take_roll_sync().unwrap().expect("two rolls to sync");
    assert_eq!(sync.up_to, Some(4));
    assert!(log.take_roll_sync().unwrap().is_none(), "taken once");
    // Runs without the log (another thread in the broker).
    sync.run().unwrap();
    log.complete_roll_sync(sync.up_to).unwrap();
    // The checkpoint is written after the log's lock, too.
    assert_eq!(recovery_point(), "0\n0\n");
    log.take_after_lock().run().unwrap();
    assert_eq!(recovery_point(), "0\n4\n");

    // Killed after a roll whose sync never ran: recovery re-validates from
    // the old recovery point, and everything is there.
    log.append(one.clone(), 0, NOW).unwrap();
    drop(log);
    assert_eq!(recovery_point(), "0\n4\n");
    let log = open(dir.path(), config());
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(read_all(&log, 0).len(), 4);
}
