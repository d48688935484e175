//! Log compaction (`PartitionLog::clean`) against a model of what a
//! compacted log must keep, and its crash safety: the files a `kill -9`
//! can leave behind mid-clean.

mod common;

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use common::*;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use proptest::prelude::*;
use storage::{LogConfig, PartitionLog, StorageError};

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn keyed(key: Option<&str>, value: Option<&[u8]>, timestamp: i64, i: usize) -> Record {
    Record {
        key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
        value: value.map(Bytes::copy_from_slice),
        ..record(i as i64, timestamp, Vec::new())
    }
}

/// One batch of `(key, value)` records, all stamped `timestamp`.
fn keyed_batch(
    records: &[(Option<&str>, Option<&[u8]>)],
    timestamp: i64,
    compression: Compression,
) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, &(key, value))| keyed(key, value, timestamp, i))
        .collect();
    encode(&records, compression)
}

fn compacted(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 64,
        cleanup_delete: false,
        cleanup_compact: true,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 0,
        ..LogConfig::default()
    }
}

/// Every record from the log start, read as a consumer reads (from the
/// offset after the last batch seen, across gaps), decoded, CRCs checked.
fn consume(log: &PartitionLog) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let bytes = log
            .read(offset, 1 << 20, log.high_watermark(), true)
            .expect("read");
        let ranges = batch_ranges(&bytes);
        let Some(&(_, last)) = ranges.last() else {
            break;
        };
        let mut buf = bytes.clone();
        for set in RecordBatchDecoder::decode_all(&mut buf).expect("decode") {
            for record in set.records {
                seen.push(Seen {
                    offset: record.offset,
                    key: record.key,
                    value: record.value,
                });
            }
        }
        offset = last + 1;
    }
    seen.retain(|record| record.offset >= log.log_start_offset());
    seen
}

#[derive(Debug, Clone)]
enum Op {
    /// Records of (key number, value length or tombstone), one compression.
    Append {
        records: Vec<(u8, Option<u8>)>,
        compression: usize,
    },
    /// A pass, after `advance_ms` more of the clock.
    Clean {
        advance_ms: u32,
    },
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let record = (0u8..12, proptest::option::weighted(0.85, 0u8..40));
    prop_oneof![
        6 => (proptest::collection::vec(record, 1..8), 0usize..5)
            .prop_map(|(records, compression)| Op::Append { records, compression }),
        3 => (0u32..3_000).prop_map(|advance_ms| Op::Clean { advance_ms }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

/// Every record ever appended, by offset.
#[derive(Debug, Default)]
struct Model {
    appended: Vec<Seen>,
}

impl Model {
    /// The offset of the last record of each key.
    fn latest(&self) -> HashMap<Bytes, i64> {
        let mut latest = HashMap::new();
        for record in &self.appended {
            latest.insert(record.key.clone().unwrap(), record.offset);
        }
        latest
    }

    fn check(&self, seen: &[Seen], active_base: i64) -> Result<(), TestCaseError> {
        // What is read was appended, at that offset, in order.
        let mut previous = -1;
        for record in seen {
            prop_assert!(record.offset > previous, "offsets go up: {:?}", seen);
            previous = record.offset;
            prop_assert_eq!(record, &self.appended[record.offset as usize]);
        }
        let present: std::collections::HashSet<i64> = seen.iter().map(|r| r.offset).collect();
        // The latest record of every key stays (a tombstone may go).
        for (key, offset) in self.latest() {
            let record = &self.appended[offset as usize];
            prop_assert!(
                present.contains(&offset) || record.value.is_none(),
                "the latest record of {:?} (offset {}) is gone",
                key,
                offset
            );
        }
        // The active segment is never touched.
        for record in &self.appended[active_base as usize..] {
            prop_assert!(
                present.contains(&record.offset),
                "active record {} gone",
                record.offset
            );
        }
        Ok(())
    }

    /// After a pass with `min.cleanable.dirty.ratio` 0: below the active
    /// segment, no record remains that a later record below it supersedes.
    fn check_cleaned(&self, seen: &[Seen], active_base: i64) -> Result<(), TestCaseError> {
        let mut latest_below = HashMap::new();
        for record in &self.appended[..active_base as usize] {
            latest_below.insert(record.key.clone().unwrap(), record.offset);
        }
        for record in seen.iter().filter(|record| record.offset < active_base) {
            let latest = latest_below[record.key.as_ref().unwrap()];
            prop_assert_eq!(
                latest,
                record.offset,
                "superseded record kept: {:?}",
                record
            );
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>, segment_bytes: u64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = compacted(segment_bytes);
    let mut now = NOW;
    let mut log = Some(PartitionLog::open(dir.path(), config.clone(), now).unwrap());
    let mut model = Model::default();
    for op in ops {
        let current = log.as_mut().unwrap();
        let mut cleaned = false;
        match op {
            Op::Append {
                records,
                compression,
            } => {
                let keys: Vec<String> = records.iter().map(|(k, _)| format!("key-{k}")).collect();
                let values: Vec<Option<Vec<u8>>> = records
                    .iter()
                    .map(|&(k, length)| length.map(|n| vec![b'a' + k; n as usize]))
                    .collect();
                let pairs: Vec<(Option<&str>, Option<&[u8]>)> = keys
                    .iter()
                    .zip(&values)
                    .map(|(key, value)| (Some(key.as_str()), value.as_deref()))
                    .collect();
                let batch = keyed_batch(&pairs, now - 1_000, ALL_COMPRESSIONS[compression]);
                let info = current.append(batch, 0, now).unwrap();
                prop_assert_eq!(info.first_offset, model.appended.len() as i64);
                for (key, value) in keys.into_iter().zip(values) {
                    model.appended.push(Seen {
                        offset: model.appended.len() as i64,
                        key: Some(Bytes::from(key)),
                        value: value.map(Bytes::from),
                    });
                }
            }
            Op::Clean { advance_ms } => {
                now += advance_ms as i64;
                current.clean(now).unwrap();
                cleaned = true;
            }
            Op::Reopen { clean } => {
                let mut old = log.take().unwrap();
                if clean {
                    old.close().unwrap();
                } else {
                    old.flush().unwrap();
                    drop(old);
                }
                log = Some(PartitionLog::open(dir.path(), config.clone(), now).unwrap());
            }
        }
        let current = log.as_ref().unwrap();
        prop_assert_eq!(current.log_end_offset(), model.appended.len() as i64);
        let active_base = *current.segment_base_offsets().last().unwrap();
        let seen = consume(current);
        model.check(&seen, active_base)?;
        if cleaned {
            model.check_cleaned(&seen, active_base)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn a_compacted_log_keeps_the_latest_record_of_every_key(
        ops in proptest::collection::vec(op(), 1..50),
        segment_bytes in 150u64..1_500,
    ) {
        run(ops, segment_bytes)?;
    }
}

/// Writes one batch per segment: with `segment.bytes` at 1, every append
/// rolls the segment before it.
fn one_batch_per_segment(segment_bytes_to_clean_with: u64) -> (LogConfig, LogConfig) {
    (compacted(1), compacted(segment_bytes_to_clean_with))
}

/// Appends a batch of `records`, all stamped `timestamp`.
fn put(log: &mut PartitionLog, records: &[(&str, Option<&str>)], timestamp: i64) {
    let records: Vec<(Option<&str>, Option<&[u8]>)> = records
        .iter()
        .map(|&(key, value)| (Some(key), value.map(str::as_bytes)))
        .collect();
    log.append(keyed_batch(&records, timestamp, Compression::None), 0, NOW)
        .unwrap();
}

/// Sets keys `a`..`d` to `value`.
fn round(log: &mut PartitionLog, value: &str) {
    let value = Some(value);
    put(
        log,
        &[("a", value), ("b", value), ("c", value), ("d", value)],
        NOW - 10_000,
    );
}

/// `(offset, key, value)` of a record, as text.
type Text = (i64, String, Option<String>);

fn values(log: &PartitionLog) -> Vec<Text> {
    consume(log)
        .into_iter()
        .map(|record| {
            let text = |bytes: Bytes| String::from_utf8(bytes.to_vec()).unwrap();
            (
                record.offset,
                text(record.key.unwrap()),
                record.value.map(text),
            )
        })
        .collect()
}

#[test]
fn a_pass_keeps_the_latest_value_per_key_and_merges_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (write, clean) = one_batch_per_segment(1 << 20);
    let mut log = PartitionLog::open(dir.path(), write, NOW).unwrap();
    for value in ["v0", "v1", "v2", "v3", "v4"] {
        round(&mut log, value);
    }
    put(&mut log, &[("z", Some("active"))], NOW - 10_000);
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8, 12, 16, 20]);
    log.set_config(clean);
    let stats = log.clean(NOW).unwrap();
    assert_eq!(stats.records_removed, 16);
    assert_eq!(stats.segments_cleaned, 5);
    assert!(stats.bytes_after < stats.bytes_before);
    // The four records that remain are the last round's, at their offsets,
    // in one segment named by the first one's base offset.
    assert_eq!(
        values(&log),
        vec![
            (16, "a".into(), Some("v4".into())),
            (17, "b".into(), Some("v4".into())),
            (18, "c".into(), Some("v4".into())),
            (19, "d".into(), Some("v4".into())),
            (20, "z".into(), Some("active".into())),
        ]
    );
    assert_eq!(log.segment_base_offsets(), vec![0, 20]);
    assert_eq!(segment_files(dir.path(), ".log").len(), 2);
    // A second pass has nothing dirty to do.
    assert_eq!(log.clean(NOW).unwrap(), storage::CleanStats::default());
    // And all of it survives a restart.
    let before = values(&log);
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), compacted(1 << 20), NOW).unwrap();
    assert_eq!(values(&log), before);
}

#[test]
fn a_segment_left_empty_goes_but_the_first_keeps_an_empty_batch_and_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let (write, clean) = one_batch_per_segment(1);
    let mut log = PartitionLog::open(dir.path(), write, NOW).unwrap();
    round(&mut log, "v0");
    round(&mut log, "v1");
    round(&mut log, "v2");
    put(&mut log, &[("z", Some("active"))], NOW - 10_000);
    log.set_config(clean);
    log.clean(NOW).unwrap();
    // Offsets 4-7 leave no segment: a gap. Offsets 0-3 leave one empty
    // batch, so the log still starts at 0: a consumer reading there (or at
    // any offset before 8) is not told OFFSET_OUT_OF_RANGE, and goes on.
    assert_eq!(log.segment_base_offsets(), vec![0, 8, 12]);
    assert_eq!(log.log_start_offset(), 0);
    let check = |log: &PartitionLog| {
        let first = log.read(0, 1 << 20, log.high_watermark(), true).unwrap();
        assert_eq!(
            batch_ranges(&first),
            vec![(0, 3)],
            "one batch in place of 0-3"
        );
        let header = protocol::batch::BatchHeader::parse(&first).unwrap();
        assert_eq!((header.record_count, header.producer_id), (0, -1));
        assert!(!header.is_transactional());
        let mut buf = first.clone();
        let decoded = RecordBatchDecoder::decode_all(&mut buf).unwrap();
        assert!(decoded.iter().all(|set| set.records.is_empty()));
        let inside = log.read(2, 1 << 20, log.high_watermark(), true).unwrap();
        assert_eq!(batch_ranges(&inside)[0], (0, 3));
        let gap = log.read(5, 1 << 20, log.high_watermark(), true).unwrap();
        assert_eq!(batch_ranges(&gap)[0], (8, 11));
        assert_eq!(
            values(log),
            vec![
                (8, "a".into(), Some("v2".into())),
                (9, "b".into(), Some("v2".into())),
                (10, "c".into(), Some("v2".into())),
                (11, "d".into(), Some("v2".into())),
                (12, "z".into(), Some("active".into())),
            ]
        );
    };
    check(&log);
    // A second pass keeps the empty batch as it is.
    log.clean(NOW + 1).unwrap();
    assert_eq!(log.log_start_offset(), 0);
    check(&log);
    // And so does a restart.
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), compacted(1), NOW).unwrap();
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.segment_base_offsets(), vec![0, 8, 12]);
    check(&log);
}

#[test]
fn partially_kept_compressed_batches_are_rewritten_with_their_offsets() {
    for compression in ALL_COMPRESSIONS {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), compacted(1), NOW).unwrap();
        let first: Vec<(Option<&str>, Option<&[u8]>)> = vec![
            (Some("a"), Some(b"1")),
            (Some("b"), Some(b"1")),
            (Some("c"), Some(b"1")),
        ];
        log.append(keyed_batch(&first, NOW - 5, compression), 0, NOW)
            .unwrap();
        let second: Vec<(Option<&str>, Option<&[u8]>)> = vec![(Some("b"), Some(b"2"))];
        log.append(keyed_batch(&second, NOW - 1, compression), 0, NOW)
            .unwrap();
        put(&mut log, &[("z", Some("active"))], NOW);
        log.clean(NOW).unwrap();
        let bytes = log.read(0, 1 << 20, log.high_watermark(), true).unwrap();
        // The batch keeps its offset range; its CRC is valid.
        assert_eq!(batch_ranges(&bytes), vec![(0, 2)], "{compression:?}");
        let header = &headers(&bytes)[0];
        assert_eq!(header.record_count, 2);
        assert_eq!(header.max_timestamp, NOW - 5);
        assert_eq!(
            values(&log),
            vec![
                (0, "a".into(), Some("1".into())),
                (2, "c".into(), Some("1".into())),
                (3, "b".into(), Some("2".into())),
                (4, "z".into(), Some("active".into())),
            ],
            "{compression:?}"
        );
        // The codec stays: the rewritten batch is compressed as it was.
        let mut buf = bytes.clone();
        let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
        assert_eq!(sets[0].compression, compression);
    }
}

#[test]
fn tombstones_go_after_delete_retention_ms_from_their_first_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        delete_retention_ms: 60_000,
        ..compacted(1)
    };
    let mut log = PartitionLog::open(dir.path(), config, NOW).unwrap();
    put(
        &mut log,
        &[("a", Some("1")), ("b", Some("1")), ("a", None)],
        NOW,
    );
    put(&mut log, &[("f", Some("x"))], NOW);

    // First pass: a's value is superseded by its tombstone, which stays.
    log.clean(NOW).unwrap();
    let tombstone = (2, "a".to_string(), None);
    assert_eq!(
        values(&log),
        vec![
            (1, "b".into(), Some("1".into())),
            tombstone.clone(),
            (3, "f".into(), Some("x".into())),
        ]
    );

    // Within delete.retention.ms, the tombstone stays through more passes.
    put(&mut log, &[("f", Some("x"))], NOW);
    let stats = log.clean(NOW + 30_000).unwrap();
    assert_eq!(stats.tombstones_removed, 0);
    assert!(values(&log).contains(&tombstone));

    // After it, the next pass drops it; b's value stays (and f's last two:
    // the active segment is not cleaned).
    put(&mut log, &[("f", Some("x"))], NOW);
    let stats = log.clean(NOW + 61_000).unwrap();
    assert_eq!(stats.tombstones_removed, 1);
    assert_eq!(
        values(&log),
        vec![
            (1, "b".into(), Some("1".into())),
            (4, "f".into(), Some("x".into())),
            (5, "f".into(), Some("x".into())),
        ]
    );
}

#[test]
fn the_dirty_ratio_holds_a_pass_back() {
    // After a first pass, the dirty part is a bit over half the cleanable
    // bytes: a ratio of 0.9 waits, 0.1 cleans.
    for (ratio, expect_clean) in [(0.9, false), (0.1, true)] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            min_cleanable_dirty_ratio: ratio,
            ..compacted(1)
        };
        let mut log = PartitionLog::open(dir.path(), config, NOW).unwrap();
        round(&mut log, "v0");
        put(&mut log, &[("z", Some("z"))], NOW - 10_000);
        // The first pass always runs (everything is dirty); nothing to drop.
        assert_eq!(log.clean(NOW).unwrap().segments_cleaned, 1);
        round(&mut log, "v1");
        put(&mut log, &[("y", Some("y"))], NOW - 10_000);
        let stats = log.clean(NOW).unwrap();
        assert_eq!(
            stats.records_removed,
            if expect_clean { 4 } else { 0 },
            "ratio {ratio}"
        );
    }
}

#[test]
fn records_newer_than_min_compaction_lag_ms_are_not_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        min_compaction_lag_ms: 60_000,
        ..compacted(1)
    };
    let mut log = PartitionLog::open(dir.path(), config, NOW).unwrap();
    round(&mut log, "v0");
    round(&mut log, "v1");
    put(&mut log, &[("z", Some("z"))], NOW - 10_000);
    // The records are 10 s old: nothing is cleanable yet.
    assert_eq!(log.clean(NOW).unwrap(), storage::CleanStats::default());
    assert_eq!(log.clean(NOW + 51_000).unwrap().records_removed, 4);
}

#[test]
fn a_compacted_log_refuses_records_without_a_key() {
    let records: Vec<(Option<&str>, Option<&[u8]>)> =
        vec![(Some("a"), Some(b"1")), (None, Some(b"2"))];
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), compacted(1 << 20), NOW).unwrap();
    for compression in ALL_COMPRESSIONS {
        let refused = log.append(keyed_batch(&records, NOW, compression), 0, NOW);
        assert!(
            matches!(refused, Err(StorageError::InvalidRecord(_))),
            "{compression:?}: {refused:?}"
        );
    }
    assert_eq!(log.log_end_offset(), 0);
    // The same batch is fine for a delete-policy log.
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default(), NOW).unwrap();
    log.append(keyed_batch(&records, NOW, Compression::Lz4), 0, NOW)
        .unwrap();
    assert_eq!(log.log_end_offset(), 2);
}

/// Copies every file of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A closed log of 4 segments (then the active one) that a pass merges
/// into one segment at offset 0; the log as read after that pass (made in a
/// copy), and the log file that the pass wrote for the group.
fn log_and_its_cleaned_output(dir: &Path) -> (Vec<Text>, Vec<u8>) {
    let mut log = PartitionLog::open(dir, compacted(1), NOW).unwrap();
    for round in 0..4 {
        // A key per round that is never updated keeps every segment non-empty.
        let value = format!("v{round}");
        let unique = format!("u{round}");
        put(
            &mut log,
            &[("a", Some(&value)), (&unique, Some("u"))],
            NOW - 10_000,
        );
    }
    put(&mut log, &[("z", Some("active"))], NOW - 10_000);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6, 8]);
    log.close().unwrap();

    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let mut cleaned = PartitionLog::open(copy.path(), compacted(1 << 20), NOW).unwrap();
    cleaned.clean(NOW).unwrap();
    assert_eq!(cleaned.segment_base_offsets(), vec![0, 8]);
    let expected = values(&cleaned);
    assert_eq!(expected.len(), 6);
    cleaned.close().unwrap();
    let output = std::fs::read(copy.path().join("00000000000000000000.log")).unwrap();
    (expected, output)
}

#[test]
fn an_uncommitted_clean_is_discarded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (_, output) = log_and_its_cleaned_output(dir.path());
    let before = values(&PartitionLog::open(dir.path(), compacted(1), NOW).unwrap());
    // kill -9 while the output was being written: part of it is there.
    let cleaned = dir
        .path()
        .join("00000000000000000000-00000000000000000008.log.cleaned");
    std::fs::write(&cleaned, &output[..output.len() / 2]).unwrap();
    std::fs::remove_file(dir.path().join("clean-shutdown")).ok();

    let log = PartitionLog::open(dir.path(), compacted(1), NOW).unwrap();
    assert!(!cleaned.exists());
    assert_eq!(values(&log), before);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6, 8]);
}

#[test]
fn a_committed_clean_is_completed_on_open() {
    let swap_name = "00000000000000000000-00000000000000000008.log.swap";
    // kill -9 right after the commit (nothing replaced yet), and in the
    // middle of deleting the replaced segments' files.
    for deleted_before_crash in [
        vec![],
        vec!["00000000000000000000.log", "00000000000000000002.index"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (expected, output) = log_and_its_cleaned_output(dir.path());
        std::fs::write(dir.path().join(swap_name), &output).unwrap();
        for name in &deleted_before_crash {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        std::fs::remove_file(dir.path().join("clean-shutdown")).ok();

        let log = PartitionLog::open(dir.path(), compacted(1), NOW).unwrap();
        assert!(!dir.path().join(swap_name).exists());
        assert_eq!(log.segment_base_offsets(), vec![0, 8]);
        assert_eq!(values(&log), expected, "{deleted_before_crash:?}");
        assert_eq!(
            segment_files(dir.path(), ".log").len(),
            2,
            "replaced segments' files are gone"
        );
    }
}
