//! Recovery on open: crashes, torn tails, flipped bits, lost or damaged
//! indexes and checkpoints, garbage files.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use proptest::prelude::*;
use storage::{LogConfig, PartitionLog, StorageError};

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn flip_bit(path: &Path, position: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, position).unwrap();
    byte[0] ^= 0x08;
    file.write_all_at(&byte, position).unwrap();
}

/// A log of `batches` batches of 3 records, `batch_len` bytes each, one segment.
fn filled(dir: &Path, batches: usize) -> (PartitionLog, u64) {
    let mut log = open(dir, config());
    let one = batch(3, 40, NOW);
    for _ in 0..batches {
        log.append(one.clone(), 1, NOW).unwrap();
    }
    (log, one.len() as u64)
}

#[test]
fn a_crash_without_close_keeps_everything_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = filled(dir.path(), 50);
    let before = read_all(&log, 0);
    drop(log); // no close, no flush: like kill -9 (the page cache survives)
    let log = open(dir.path(), config());
    assert_eq!(log.log_end_offset(), 150);
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(log.end_offset_for_epoch(1), (1, 150));
}

#[test]
fn a_torn_tail_is_cut_at_the_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, batch_len) = filled(dir.path(), 10);
    drop(log);
    let segment = dir.path().join("00000000000000000000.log");
    for cut in [batch_len / 2, 20, 1] {
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        let len = file_len(&segment);
        file.set_len(len - cut).unwrap();
        drop(file);
        let log = open(dir.path(), config());
        let batches = (len / batch_len - 1) as i64;
        assert_eq!(log.log_end_offset(), batches * 3, "cut {cut}");
        assert_eq!(file_len(&segment), batches as u64 * batch_len);
        assert_eq!(read_all(&log, 0).len() as i64, batches);
        drop(log);
    }
    let mut log = open(dir.path(), config());
    assert_eq!(
        log.append(batch(1, 40, NOW), 1, NOW).unwrap().first_offset,
        21
    );
}

#[test]
fn a_flipped_bit_drops_that_batch_and_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    let (log, batch_len) = filled(dir.path(), 20);
    drop(log);
    let segment = dir.path().join("00000000000000000000.log");
    // In the records of batch 12.
    flip_bit(&segment, 12 * batch_len + 70);
    let mut log = open(dir.path(), config());
    assert_eq!(log.log_end_offset(), 36);
    assert_eq!(
        read_all(&log, 0),
        (0..12).map(|i| (3 * i, 3 * i + 2)).collect::<Vec<_>>()
    );
    assert_eq!(
        log.append(batch(1, 40, NOW), 1, NOW).unwrap().first_offset,
        36
    );
}

#[test]
fn corruption_in_an_older_segment_deletes_the_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(3, 40, NOW);
    let config = LogConfig {
        segment_bytes: one.len() as u64 * 4,
        ..config()
    };
    let mut log = open(dir.path(), config.clone());
    for _ in 0..12 {
        log.append(one.clone(), 1, NOW).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 12, 24]);
    drop(log);
    // Sealed segments are below the recovery point and trusted; without the
    // checkpoint everything is re-validated.
    std::fs::remove_file(dir.path().join("recovery-point-checkpoint")).unwrap();
    flip_bit(
        &dir.path().join("00000000000000000012.log"),
        one.len() as u64 + 65,
    );
    let log = open(dir.path(), config);
    assert_eq!(log.log_end_offset(), 15);
    assert_eq!(log.segment_base_offsets(), vec![0, 12]);
    assert!(!dir.path().join("00000000000000000024.log").exists());
    assert!(!dir.path().join("00000000000000000024.index").exists());
    assert_eq!(read_all(&log, 0).len(), 5);
}

#[test]
fn a_flipped_bit_in_a_trusted_segment_is_caught_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (log, batch_len) = filled(dir.path(), 5);
    log.close().unwrap();
    flip_bit(
        &dir.path().join("00000000000000000000.log"),
        2 * batch_len + 70,
    );
    let log = open(dir.path(), config());
    assert_eq!(
        log.log_end_offset(),
        15,
        "headers are sane, so the segment is trusted"
    );
    assert!(matches!(
        log.read(6, 1 << 20, 15, true),
        Err(StorageError::CorruptLog { .. })
    ));
    // Reads before it stop short of it.
    assert_eq!(
        batch_ranges(&log.read(0, 1 << 20, 15, true).unwrap()),
        vec![(0, 2), (3, 5)]
    );
    assert_eq!(
        batch_ranges(&log.read(9, 1 << 20, 15, true).unwrap()),
        vec![(9, 11), (12, 14)]
    );
    // A follower's read is not checked here: the follower checks each
    // batch as it appends it, and refuses this one.
    let replicated = concat(&log.read_for_replica(0, 1 << 20, 15, true).unwrap());
    let ranges: Vec<(i64, i64)> = headers(&replicated)
        .iter()
        .map(|header| (header.base_offset, header.last_offset()))
        .collect();
    assert_eq!(ranges, vec![(0, 2), (3, 5), (6, 8), (9, 11), (12, 14)]);
    let follower_dir = tempfile::tempdir().unwrap();
    let mut follower = open(follower_dir.path(), config());
    assert!(matches!(
        follower.append_as_follower(replicated, NOW),
        Err(StorageError::CorruptMessage(_))
    ));
    assert_eq!(follower.log_end_offset(), 0);
}

#[test]
fn garbage_after_a_clean_shutdown_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = filled(dir.path(), 5);
    log.close().unwrap();
    let segment = dir.path().join("00000000000000000000.log");
    let len = file_len(&segment);
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .write_all_at(&[0x55; 100], len)
        .unwrap();
    let log = open(dir.path(), config());
    assert_eq!(log.log_end_offset(), 15);
    assert_eq!(file_len(&segment), len);
}

#[test]
fn missing_and_damaged_indexes_are_rebuilt() {
    let one = batch(3, 40, NOW);
    let config = LogConfig {
        segment_bytes: one.len() as u64 * 6,
        index_interval_bytes: 1,
        ..config()
    };
    type Damage = (&'static str, fn(&Path));
    let damage: [Damage; 6] = [
        ("deleted", |path| std::fs::remove_file(path).unwrap()),
        ("empty", |path| std::fs::write(path, b"").unwrap()),
        ("partial entry", |path| {
            let file = OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(file_len(path) - 3).unwrap();
        }),
        ("garbage", |path| {
            std::fs::write(path, vec![0xA5; 96]).unwrap();
        }),
        ("zeros", |path| std::fs::write(path, vec![0; 48]).unwrap()),
        ("past the log", |path| {
            let mut bytes = std::fs::read(path).unwrap();
            let last = bytes.len() - 4;
            bytes[last..].copy_from_slice(&u32::MAX.to_be_bytes());
            std::fs::write(path, bytes).unwrap();
        }),
    ];
    for suffix in [".index", ".timeindex"] {
        for (name, damage) in damage {
            let dir = tempfile::tempdir().unwrap();
            let mut log = open(dir.path(), config.clone());
            for i in 0..16 {
                log.append(
                    batch_with(&[NOW + i, NOW + i + 1, NOW + i + 2], Compression::None, 40),
                    1,
                    NOW,
                )
                .unwrap();
            }
            let before = read_all(&log, 0);
            let lookups: Vec<_> = (0..20)
                .map(|i| log.offset_for_timestamp(NOW + i).unwrap())
                .collect();
            log.close().unwrap();
            for path in segment_files(dir.path(), suffix) {
                damage(&path);
            }
            let log = open(dir.path(), config.clone());
            assert_eq!(read_all(&log, 0), before, "{suffix} {name}");
            for offset in 0..48 {
                let bytes = log.read(offset, 1, 48, true).unwrap();
                assert_eq!(
                    batch_ranges(&bytes)[0].0,
                    offset / 3 * 3,
                    "{suffix} {name}: read {offset}"
                );
            }
            let after: Vec<_> = (0..20)
                .map(|i| log.offset_for_timestamp(NOW + i).unwrap())
                .collect();
            assert_eq!(after, lookups, "{suffix} {name}");
            assert_eq!(log.max_timestamp().unwrap(), Some((45 + 2, NOW + 17)));
            for path in segment_files(dir.path(), suffix) {
                assert!(
                    file_len(&path) > 0,
                    "{suffix} {name}: rebuilt {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn damaged_checkpoints_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = filled(dir.path(), 5);
    log.delete_records_before(4).unwrap();
    drop(log);
    for name in [
        "recovery-point-checkpoint",
        "log-start-offset-checkpoint",
        "leader-epoch-checkpoint",
    ] {
        std::fs::write(dir.path().join(name), b"\x00\xffnot a checkpoint").unwrap();
    }
    std::fs::write(
        dir.path().join("leader-epoch-checkpoint.tmp"),
        b"half written",
    )
    .unwrap();
    std::fs::write(dir.path().join("00000000000000000999.index"), b"orphan").unwrap();
    let log = open(dir.path(), config());
    assert_eq!(log.log_end_offset(), 15);
    // An unreadable log start falls back to the first segment.
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.end_offset_for_epoch(1), (1, 15));
    assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
    assert!(!dir.path().join("00000000000000000999.index").exists());
}

#[test]
fn an_empty_directory_and_a_missing_one_open_empty() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("topic-0");
    let log = open(&nested, config());
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (0, 0, 1)
    );
    assert!(nested.join("00000000000000000000.log").exists());
}

#[test]
fn an_emptied_log_keeps_its_end_offset_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = filled(dir.path(), 3);
    log.delete_records_before(-1).unwrap();
    drop(log);
    let log = open(dir.path(), config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (9, 9));
}

fn damaged_log_opens(
    dir: &Path,
    damage: &[(u8, u16, u8)],
    cut: Option<u16>,
    clean: bool,
) -> Result<(), TestCaseError> {
    let one = batch(2, 30, NOW);
    let config = LogConfig {
        segment_bytes: one.len() as u64 * 5,
        index_interval_bytes: 50,
        ..config()
    };
    let mut log = open(dir, config.clone());
    for i in 0..20 {
        log.append(
            batch_with(&[NOW + i, NOW - i], Compression::None, 30),
            (i / 5) as i32,
            NOW,
        )
        .unwrap();
    }
    if clean {
        log.close().unwrap();
    } else {
        drop(log);
    }
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    for &(file, position, value) in damage {
        let path = &files[file as usize % files.len()];
        let len = file_len(path);
        if len > 0 {
            let file = OpenOptions::new().write(true).open(path).unwrap();
            file.write_all_at(&[value], position as u64 % len).unwrap();
        }
    }
    if let Some(cut) = cut {
        let path = &files[cut as usize % files.len()];
        let len = file_len(path);
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len.saturating_sub(cut as u64 % 200))
            .unwrap();
    }
    // Whatever happened to the files: no panic, and what is served is whole, valid batches.
    let Ok(log) = PartitionLog::open(dir, config, NOW) else {
        return Ok(());
    };
    prop_assert!(log.log_start_offset() <= log.log_end_offset());
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        match log.read(offset, 1 << 20, log.log_end_offset(), true) {
            Ok(bytes) if bytes.is_empty() => break,
            Ok(bytes) => offset = batch_ranges(&bytes).last().unwrap().1 + 1,
            Err(StorageError::CorruptLog { .. }) => offset += 1,
            Err(error) => return Err(TestCaseError::fail(format!("read {offset}: {error}"))),
        }
    }
    let _ = log.offset_for_timestamp(NOW);
    let _ = log.max_timestamp();
    let _ = log.end_offset_for_epoch(2);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_file_content_makes_open_panic(
        damage in proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<u16>()),
        clean in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        damaged_log_opens(dir.path(), &damage, cut, clean)?;
    }
}
