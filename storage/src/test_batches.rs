//! Record batches for unit tests, made with `kafka_protocol`'s encoder.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub(crate) fn record_with(offset: i64, timestamp: i64, value: Vec<u8>) -> Record {
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
        key: None,
        value: Some(Bytes::from(value)),
        headers: IndexMap::new(),
    }
}

/// A record with `key` (and the other fields of [`record_with`]).
pub(crate) fn keyed_record(
    offset: i64,
    timestamp: i64,
    key: &str,
    value: Option<Vec<u8>>,
) -> Record {
    Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: value.map(Bytes::from),
        ..record_with(offset, timestamp, vec![])
    }
}

pub(crate) fn encode_records(records: &[Record], compression: Compression) -> Bytes {
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
    buf.freeze()
}

/// One uncompressed batch of `count` records of `value_bytes` each, timestamps from `timestamp`.
pub(crate) fn batch_bytes(count: usize, value_bytes: usize, timestamp: i64) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| record_with(i as i64, timestamp + i as i64, vec![i as u8; value_bytes]))
        .collect();
    encode_records(&records, Compression::None)
}
