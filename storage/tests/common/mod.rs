//! Helpers shared by the storage integration tests: batches made with
//! `kafka_protocol`'s encoder, and logs in temporary directories.
#![allow(dead_code)]

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use protocol::batch::{BatchHeader, Batches};
use storage::{LogConfig, PartitionLog};

pub(crate) use kafka_protocol::records::Compression;

/// A wall clock far from zero, so that "old" timestamps are easy to make.
pub(crate) const NOW: i64 = 1_700_000_000_000;

pub(crate) const ALL_COMPRESSIONS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

pub(crate) fn record(offset: i64, timestamp: i64, value: Vec<u8>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // The encoder starts a new batch whenever offset - sequence changes.
        sequence: offset as i32 - 1,
        timestamp,
        key: Some(Bytes::from(format!("key-{offset}"))),
        value: Some(Bytes::from(value)),
        headers: IndexMap::new(),
    }
}

/// One batch with a record per timestamp, each with a `value_bytes` value.
pub(crate) fn batch_with(
    timestamps: &[i64],
    compression: Compression,
    value_bytes: usize,
) -> Bytes {
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(i, &timestamp)| {
            record(
                i as i64,
                timestamp,
                vec![b'a' + (i % 26) as u8; value_bytes],
            )
        })
        .collect();
    encode(&records, compression)
}

/// `records` as one batch, encoded by kafka_protocol.
pub(crate) fn encode(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    let bytes = buf.freeze();
    assert_eq!(protocol::batch::count_batches(&bytes), Ok(1));
    bytes
}

/// One uncompressed batch of `count` records with timestamps from `timestamp`.
pub(crate) fn batch(count: usize, value_bytes: usize, timestamp: i64) -> Bytes {
    let timestamps: Vec<i64> = (0..count as i64).map(|i| timestamp + i).collect();
    batch_with(&timestamps, Compression::None, value_bytes)
}

pub(crate) fn concat(parts: &[Bytes]) -> Bytes {
    let mut joined = BytesMut::new();
    for part in parts {
        joined.extend_from_slice(part);
    }
    joined.freeze()
}

/// A config for tests: small index interval, everything else Kafka's.
pub(crate) fn config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

pub(crate) fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, NOW).expect("open")
}

/// `(base offset, last offset)` of each batch in `bytes`, checking CRCs.
pub(crate) fn batch_ranges(bytes: &Bytes) -> Vec<(i64, i64)> {
    Batches::new(bytes.clone())
        .map(|item| {
            let (header, batch) = item.expect("whole batches");
            protocol::batch::verify_crc(&batch).expect("CRC");
            (header.base_offset, header.last_offset())
        })
        .collect()
}

pub(crate) fn headers(bytes: &Bytes) -> Vec<BatchHeader> {
    Batches::new(bytes.clone())
        .map(|item| item.expect("whole batches").0)
        .collect()
}

/// `(offset, value)` of every record in `bytes`, decoded by kafka_protocol.
pub(crate) fn decoded_records(bytes: &Bytes) -> Vec<(i64, Bytes)> {
    let mut buf = bytes.clone();
    RecordBatchDecoder::decode_all(&mut buf)
        .expect("decode")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|record| (record.offset, record.value.unwrap_or_default()))
        .collect()
}

/// Reads the whole log from `offset`, segment by segment.
pub(crate) fn read_all(log: &PartitionLog, mut offset: i64) -> Vec<(i64, i64)> {
    let mut ranges = Vec::new();
    while offset < log.high_watermark() {
        let bytes = log
            .read(offset, 1 << 20, log.high_watermark(), true)
            .expect("read");
        let read = batch_ranges(&bytes);
        let Some(&(_, last)) = read.last() else { break };
        ranges.extend(read);
        offset = last + 1;
    }
    ranges
}

pub(crate) fn segment_files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_str().unwrap().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// One batch of an idempotent (or, with `transactional`, a transactional)
/// producer: `count` records from sequence `sequence`.
pub(crate) fn producer_batch(
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    count: usize,
    transactional: bool,
) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional,
            producer_id,
            producer_epoch: epoch,
            sequence: sequence + i as i32,
            ..record(
                i as i64,
                NOW,
                format!("p{producer_id}-e{epoch}-s{}", sequence + i as i32).into_bytes(),
            )
        })
        .collect();
    encode(&records, Compression::None)
}

/// A transaction marker as a coordinator writes it: a control batch whose
/// one record has key (version 0, type 1 commit / 0 abort) and value
/// (version 0, coordinator epoch).
pub(crate) fn marker_batch(
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Bytes {
    let mut value = vec![0u8, 0];
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        producer_id,
        producer_epoch: epoch,
        sequence: -1,
        key: Some(Bytes::from(vec![0, 0, 0, commit as u8])),
        value: Some(Bytes::from(value)),
        ..record(0, NOW, Vec::new())
    };
    encode(&[record], Compression::None)
}

/// Everything a log holds, from its start, as a fetch returns it.
pub(crate) fn all_bytes(log: &PartitionLog) -> Bytes {
    log.read(
        log.log_start_offset(),
        usize::MAX >> 1,
        log.log_end_offset(),
        true,
    )
    .unwrap()
}
