//! PartitionLog against a `Vec` model: random appends, reads, timestamp
//! lookups, reopens (clean and unclean), truncations and DeleteRecords, with
//! tiny segments so that rolls happen all the time.

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use protocol::batch::{set_base_offset, set_partition_leader_epoch};
use storage::{LogConfig, PartitionLog, StorageError};

#[derive(Debug, Clone)]
enum Op {
    /// Batches of (record timestamps, value bytes), one compression, one epoch.
    Append {
        batches: Vec<(Vec<i64>, usize)>,
        compression: usize,
        epoch_step: bool,
    },
    /// `at` picks an offset around the log; `max_bytes` may be tiny.
    Read {
        at: u16,
        max_bytes: u16,
        min_one_batch: bool,
    },
    OffsetForTimestamp {
        timestamp: i64,
    },
    MaxTimestamp,
    Reopen {
        clean: bool,
    },
    Truncate {
        at: u16,
    },
    DeleteRecords {
        at: u16,
    },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let timestamps = proptest::collection::vec(0i64..100, 1..6);
    prop_oneof![
        6 => (proptest::collection::vec((timestamps, 0usize..60), 1..4), 0usize..5, any::<bool>())
            .prop_map(|(batches, compression, epoch_step)| Op::Append { batches, compression, epoch_step }),
        6 => (any::<u16>(), any::<u16>(), any::<bool>())
            .prop_map(|(at, max_bytes, min_one_batch)| Op::Read { at, max_bytes: max_bytes % 1200, min_one_batch }),
        2 => (-2i64..103).prop_map(|timestamp| Op::OffsetForTimestamp { timestamp }),
        1 => Just(Op::MaxTimestamp),
        2 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u16>().prop_map(|at| Op::DeleteRecords { at }),
        1 => Just(Op::Flush),
    ]
}

/// A stored batch as the model knows it.
#[derive(Debug, Clone)]
struct ModelBatch {
    base_offset: i64,
    last_offset: i64,
    bytes: Bytes,
    timestamps: Vec<i64>,
}

#[derive(Debug, Default)]
struct Model {
    batches: Vec<ModelBatch>,
    log_start_offset: i64,
    log_end_offset: i64,
    epoch: i32,
}

impl Model {
    /// An offset in [log start - 2, log end + 2].
    fn pick(&self, at: u16) -> i64 {
        let span = (self.log_end_offset - self.log_start_offset + 5) as u64;
        self.log_start_offset - 2 + (at as u64 % span) as i64
    }

    fn records(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.batches
            .iter()
            .flat_map(|batch| {
                batch
                    .timestamps
                    .iter()
                    .enumerate()
                    .map(move |(i, &t)| (batch.base_offset + i as i64, t))
            })
            .filter(|&(offset, _)| offset >= self.log_start_offset)
    }

    fn expected_read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        segment_bases: &[i64],
    ) -> Vec<Bytes> {
        let Some(first) = self
            .batches
            .iter()
            .position(|batch| batch.last_offset >= offset)
        else {
            return vec![];
        };
        let base = self.batches[first].base_offset;
        // One segment per read: stop where the next segment starts.
        let segment_end = segment_bases
            .iter()
            .copied()
            .find(|&segment| segment > base)
            .unwrap_or(i64::MAX);
        let mut read = Vec::new();
        let mut total = 0;
        for batch in &self.batches[first..] {
            if batch.base_offset >= segment_end || batch.base_offset >= self.log_end_offset {
                break;
            }
            let fits = total + batch.bytes.len() <= max_bytes;
            if !(fits || read.is_empty() && min_one_batch) {
                break;
            }
            total += batch.bytes.len();
            read.push(batch.bytes.clone());
        }
        read
    }
}

fn run(ops: Vec<Op>, segment_bytes: u64, index_interval_bytes: u32) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes,
        index_interval_bytes,
        ..LogConfig::default()
    };
    let mut log = Some(PartitionLog::open(dir.path(), config.clone(), NOW).unwrap());
    let mut model = Model::default();
    for op in ops {
        let current = log.as_mut().unwrap();
        match op {
            Op::Append {
                batches,
                compression,
                epoch_step,
            } => {
                if epoch_step {
                    model.epoch += 1;
                }
                let compression = ALL_COMPRESSIONS[compression];
                let encoded: Vec<Bytes> = batches
                    .iter()
                    .map(|(timestamps, value)| batch_with(timestamps, compression, *value))
                    .collect();
                let info = current.append(concat(&encoded), model.epoch, NOW).unwrap();
                prop_assert_eq!(info.first_offset, model.log_end_offset);
                for (bytes, (timestamps, _)) in encoded.iter().zip(batches) {
                    let mut stored = bytes.to_vec();
                    set_base_offset(&mut stored, model.log_end_offset);
                    set_partition_leader_epoch(&mut stored, model.epoch);
                    let count = timestamps.len() as i64;
                    model.batches.push(ModelBatch {
                        base_offset: model.log_end_offset,
                        last_offset: model.log_end_offset + count - 1,
                        bytes: Bytes::from(stored),
                        timestamps,
                    });
                    model.log_end_offset += count;
                }
                prop_assert_eq!(info.last_offset, model.log_end_offset - 1);
            }
            Op::Read {
                at,
                max_bytes,
                min_one_batch,
            } => {
                let offset = model.pick(at);
                let result = current.read(
                    offset,
                    max_bytes as usize,
                    current.high_watermark(),
                    min_one_batch,
                );
                if offset < model.log_start_offset || offset > model.log_end_offset {
                    let out_of_range = matches!(result, Err(StorageError::OffsetOutOfRange { .. }));
                    prop_assert!(out_of_range, "read {}: {:?}", offset, result);
                } else {
                    let expected = model.expected_read(
                        offset,
                        max_bytes as usize,
                        min_one_batch,
                        &current.segment_base_offsets(),
                    );
                    prop_assert_eq!(result.unwrap(), concat(&expected), "read {}", offset);
                }
            }
            Op::OffsetForTimestamp { timestamp } => {
                let expected = model.records().find(|&(_, t)| t >= timestamp);
                prop_assert_eq!(
                    current.offset_for_timestamp(timestamp).unwrap(),
                    expected,
                    "timestamp {}",
                    timestamp
                );
            }
            Op::MaxTimestamp => {
                let expected = model
                    .records()
                    .fold(None, |best: Option<(i64, i64)>, record| match best {
                        Some((_, most)) if record.1 <= most => best,
                        _ => Some(record),
                    });
                prop_assert_eq!(current.max_timestamp().unwrap(), expected);
            }
            Op::Reopen { clean } => {
                let old = log.take().unwrap();
                if clean {
                    old.close().unwrap();
                } else {
                    drop(old);
                }
                log = Some(PartitionLog::open(dir.path(), config.clone(), NOW).unwrap());
            }
            Op::Truncate { at } => {
                let offset = model.pick(at).max(0);
                current.truncate_to(offset).unwrap();
                if offset < model.log_end_offset {
                    if offset < model.log_start_offset {
                        model.batches.clear();
                        model.log_start_offset = offset;
                        model.log_end_offset = offset;
                    } else {
                        let keep = model
                            .batches
                            .iter()
                            .position(|batch| batch.last_offset >= offset)
                            .unwrap();
                        model.log_end_offset = model.batches[keep].base_offset;
                        model.batches.truncate(keep);
                        model.log_start_offset = model.log_start_offset.min(model.log_end_offset);
                    }
                }
            }
            Op::DeleteRecords { at } => {
                let offset = model.pick(at);
                let result = current.delete_records_before(offset);
                if offset == -1 {
                    model.log_start_offset = model.log_end_offset;
                    prop_assert_eq!(result.unwrap(), model.log_start_offset);
                } else if offset < 0 || offset > model.log_end_offset {
                    let out_of_range = matches!(result, Err(StorageError::OffsetOutOfRange { .. }));
                    prop_assert!(out_of_range);
                } else {
                    model.log_start_offset = model.log_start_offset.max(offset);
                    prop_assert_eq!(result.unwrap(), model.log_start_offset);
                }
                model
                    .batches
                    .retain(|batch| batch.last_offset >= model.log_start_offset);
            }
            Op::Flush => current.flush().unwrap(),
        }
        let current = log.as_ref().unwrap();
        prop_assert_eq!(current.log_start_offset(), model.log_start_offset);
        prop_assert_eq!(current.log_end_offset(), model.log_end_offset);
        prop_assert_eq!(current.high_watermark(), model.log_end_offset);
        let stored: u64 = model
            .batches
            .iter()
            .map(|batch| batch.bytes.len() as u64)
            .sum();
        // Whole segments below the log start are deleted; others keep their batches.
        prop_assert!(current.size_bytes() >= stored);
    }
    // Every epoch's end offset agrees with the batches' epochs.
    let current = log.as_ref().unwrap();
    let epoch = model.epoch;
    let (answered, end) = current.end_offset_for_epoch(epoch);
    if model.batches.is_empty() {
        prop_assert!(answered <= epoch);
    } else if answered == epoch {
        prop_assert_eq!(end, model.log_end_offset);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn partition_log_matches_the_model(
        ops in proptest::collection::vec(op(), 1..60),
        segment_bytes in 100u64..3_000,
        index_interval_bytes in 0u32..400,
    ) {
        run(ops, segment_bytes, index_interval_bytes)?;
    }
}
