//! What the group and transaction coordinators share for their internal
//! topics (`__consumer_offsets`, `__transaction_state`): the names, which
//! partition a key goes to, the batches they write, reading a partition
//! back, and the bounds-checked primitives of Kafka's record formats.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::Record;

use crate::partition::Partition;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The internal topic holding the transaction coordinators' state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

#[derive(Debug, thiserror::Error)]
#[error("malformed internal topic record: {0}")]
pub struct RecordError(pub(crate) String);

pub(crate) fn put_string(buf: &mut BytesMut, text: &str) {
    buf.put_i16(text.len() as i16);
    buf.put_slice(text.as_bytes());
}

pub(crate) fn put_nullable_string(buf: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => put_string(buf, text),
        None => buf.put_i16(-1),
    }
}

pub(crate) fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_i32(bytes.len() as i32);
    buf.put_slice(bytes);
}

pub(crate) fn need(buf: &Bytes, bytes: usize) -> Result<(), RecordError> {
    if buf.remaining() < bytes {
        return Err(RecordError(format!(
            "needs {bytes} more bytes, {} left",
            buf.remaining()
        )));
    }
    Ok(())
}

pub(crate) fn get_i16(buf: &mut Bytes) -> Result<i16, RecordError> {
    need(buf, 2)?;
    Ok(buf.get_i16())
}

pub(crate) fn get_i32(buf: &mut Bytes) -> Result<i32, RecordError> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

pub(crate) fn get_i64(buf: &mut Bytes) -> Result<i64, RecordError> {
    need(buf, 8)?;
    Ok(buf.get_i64())
}

pub(crate) fn get_nullable_string(buf: &mut Bytes) -> Result<Option<String>, RecordError> {
    let len = get_i16(buf)?;
    if len < 0 {
        return Ok(None);
    }
    need(buf, len as usize)?;
    let bytes = buf.split_to(len as usize);
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| RecordError("string is not UTF-8".into()))
}

pub(crate) fn get_string(buf: &mut Bytes) -> Result<String, RecordError> {
    get_nullable_string(buf)?.ok_or_else(|| RecordError("null where a string is required".into()))
}

pub(crate) fn get_bytes(buf: &mut Bytes) -> Result<Bytes, RecordError> {
    let len = get_i32(buf)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    need(buf, len as usize)?;
    Ok(buf.split_to(len as usize))
}

/// Key-value records as one uncompressed batch for an internal topic
/// (`__consumer_offsets`, `__transaction_state`), timestamped `now_ms`; with
/// `producer`, a transactional batch of that producer id and epoch (no
/// sequence: a coordinator writes it for the producer).
pub fn internal_batch(
    entries: Vec<(Bytes, Option<Bytes>)>,
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> anyhow::Result<Bytes> {
    use kafka_protocol::records::{
        Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            // The append stamps the leader epoch.
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The batch's base sequence is the first record's: -1, none.
            // (The encoder keeps records in one batch while offset -
            // sequence stays the same.)
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(key),
            value,
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)?;
    Ok(buf.freeze())
}

/// The `__consumer_offsets` partition of a group, as Kafka computes it:
/// the absolute value of Java's `String.hashCode` modulo the partition count.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs maps i32::MIN to 0.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

/// How much of an internal topic's partition is read under its log's lock
/// at a time while it is loaded: the lock is released between reads, and
/// what was read is decoded and applied before the next.
const LOAD_CHUNK_BYTES: usize = 1 << 20;

/// Hands `apply` every record of an internal topic's partition from
/// `from` to the log end (as it is when each chunk is read), in offset
/// order, a chunk of [`LOAD_CHUNK_BYTES`] at a time: the log's lock is held
/// only while a chunk is read, and at most one chunk is in memory. Returns
/// the offset after the last record handed over (where a later call picks
/// up), or `None` if the partition is closed. An unreadable or undecodable
/// chunk ends the read, with an error logged.
pub(crate) fn read_records(
    partition: &Partition,
    from: i64,
    mut apply: impl FnMut(Record),
) -> Option<i64> {
    let mut offset = from;
    loop {
        let read = partition.with_log(|log| {
            let offset = offset.max(log.log_start_offset());
            let end = log.log_end_offset();
            let chunk = (offset < end).then(|| log.read(offset, LOAD_CHUNK_BYTES, end, true));
            (offset, chunk, log.dir().to_path_buf())
        });
        let (start, chunk, dir) = read.ok()?;
        offset = start;
        let mut chunk = match chunk {
            None => return Some(offset),
            Some(Ok(chunk)) if chunk.is_empty() => return Some(offset),
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => {
                tracing::error!(dir = %dir.display(), %error, "reading an internal topic failed");
                return Some(offset);
            }
        };
        // A batch may hold no record (compaction leaves an empty one in
        // place of a wholly superseded head): its header still moves the
        // position on.
        let batches_end = protocol::batch::Batches::new(chunk.clone())
            .map_while(Result::ok)
            .map(|(header, _)| header.last_offset() + 1)
            .max();
        match kafka_protocol::records::RecordBatchDecoder::decode_all(&mut chunk) {
            Ok(sets) => {
                for set in sets {
                    for record in set.records {
                        offset = offset.max(record.offset + 1);
                        apply(record);
                    }
                }
                offset = offset.max(batches_end.unwrap_or(offset));
            }
            Err(error) => {
                tracing::error!(dir = %dir.display(), offset, %error, "undecodable batch in an internal topic; stopping here");
                return Some(offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_string_hash() {
        // "my-group".hashCode() == -1906497762 in Java; 1906497762 % 50 == 12.
        assert_eq!(partition_for("my-group", 50), 12);
        // "".hashCode() == 0.
        assert_eq!(partition_for("", 50), 0);
        // Non-ASCII goes by UTF-16 units: "é".hashCode() == 233.
        assert_eq!(partition_for("é", 50), 233 % 50);
    }
}
