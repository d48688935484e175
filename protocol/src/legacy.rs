//! Message sets of the message formats before Kafka 0.11 (v0 and v1),
//! which Produce v0-v2 carry and Fetch v0-v3 return.
//!
//! The log holds record batches (v2) only, as Kafka 3.x's does with its
//! default message format: a produced message set is up-converted into one
//! batch ([`up_convert`]), and a fetch at an old version gets the batches
//! down-converted into a message set ([`down_convert`]).
//!
//! A message set is a sequence of `offset: i64, size: i32, message`; a
//! message is `crc: u32` (CRC-32, IEEE, over the rest), `magic: i8`,
//! `attributes: i8` (bits 0-2 the codec, bit 3 LogAppendTime in v1),
//! `timestamp: i64` (v1 only), `key: bytes`, `value: bytes`. A compressed
//! message (a wrapper) holds, compressed in its value, a message set of
//! its own; in v1 the inner offsets are relative to the wrapper's, which is
//! the last inner offset.
//!
//! Every length is checked against the bytes there are, and what
//! decompression may produce is bounded by the caller's limit.

use std::io::Read;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// The smallest message: a v0 header with a null key and value.
const MESSAGE_BYTES_MIN: usize = 4 + 1 + 1 + 4 + 4;
const CODEC_MASK: i8 = 0x07;
const LOG_APPEND_TIME_FLAG: i8 = 0x08;
/// snappy-java's stream format, which Kafka's legacy snappy messages use.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LegacyError {
    #[error("message set truncated: {0}")]
    Truncated(&'static str),
    #[error("message at offset {offset} has magic {magic}, not 0 or 1")]
    BadMagic { offset: i64, magic: i8 },
    #[error("message at offset {offset} fails its CRC")]
    BadCrc { offset: i64 },
    #[error("message of {size} bytes at offset {offset}")]
    BadSize { offset: i64, size: i32 },
    #[error("message at offset {offset} uses compression codec {codec}")]
    UnknownCodec { offset: i64, codec: i8 },
    #[error("a compressed message inside a compressed message at offset {offset}")]
    NestedCompression { offset: i64 },
    #[error("a compressed message at offset {offset} holds a message of magic {inner}")]
    MixedMagic { offset: i64, inner: i8 },
    #[error("decompressing the message at offset {offset} failed: {reason}")]
    Decompression { offset: i64, reason: String },
    #[error("the messages decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("encoding the record batch failed: {0}")]
    Encode(String),
    #[error("an empty message set")]
    Empty,
    #[error("the message set has messages of magic 0 and 1")]
    MagicChanges,
}

/// One message of a message set, compressed ones already opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// v0 and v1 outer messages: the offset given; inner messages of a v1
    /// wrapper: relative to the first.
    pub offset: i64,
    pub magic: i8,
    /// -1 for v0.
    pub timestamp: i64,
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Parses a produced message set into its messages, in order, opening
/// compressed wrappers (decompressing at most `limit` bytes in all).
pub fn parse(bytes: &Bytes, limit: usize) -> Result<Vec<Message>, LegacyError> {
    let mut messages = Vec::new();
    let mut budget = limit;
    parse_into(bytes.clone(), false, &mut budget, limit, &mut messages)?;
    if messages.is_empty() {
        return Err(LegacyError::Empty);
    }
    if messages.iter().any(|m| m.magic != messages[0].magic) {
        return Err(LegacyError::MagicChanges);
    }
    Ok(messages)
}

fn parse_into(
    mut set: Bytes,
    inner: bool,
    budget: &mut usize,
    limit: usize,
    out: &mut Vec<Message>,
) -> Result<(), LegacyError> {
    while set.has_remaining() {
        if set.remaining() < 12 {
            return Err(LegacyError::Truncated("an offset and size"));
        }
        let offset = set.get_i64();
        let size = set.get_i32();
        if size < MESSAGE_BYTES_MIN as i32 {
            return Err(LegacyError::BadSize { offset, size });
        }
        let size = size as usize;
        if set.remaining() < size {
            return Err(LegacyError::Truncated("a message"));
        }
        let mut message = set.split_to(size);
        let crc = message.get_u32();
        if crc32fast::hash(&message) != crc {
            return Err(LegacyError::BadCrc { offset });
        }
        let magic = message.get_i8();
        if !(0..=1).contains(&magic) {
            return Err(LegacyError::BadMagic { offset, magic });
        }
        let attributes = message.get_i8();
        let timestamp = if magic == 1 {
            if message.remaining() < 8 {
                return Err(LegacyError::Truncated("a timestamp"));
            }
            message.get_i64()
        } else {
            -1
        };
        let key = take_bytes(&mut message)?;
        let value = take_bytes(&mut message)?;
        if message.has_remaining() {
            return Err(LegacyError::BadSize {
                offset,
                size: size as i32,
            });
        }
        let codec = attributes & CODEC_MASK;
        let log_append_time = magic == 1 && attributes & LOG_APPEND_TIME_FLAG != 0;
        if codec == 0 {
            out.push(Message {
                offset,
                magic,
                timestamp,
                log_append_time,
                key,
                value,
            });
            continue;
        }
        if inner {
            return Err(LegacyError::NestedCompression { offset });
        }
        let compressed = value.unwrap_or_default();
        let opened = decompress(codec, &compressed, magic, offset, *budget, limit)?;
        *budget -= opened.len();
        let first = out.len();
        parse_into(Bytes::from(opened), true, budget, limit, out)?;
        for message in &mut out[first..] {
            if message.magic != magic {
                return Err(LegacyError::MixedMagic {
                    offset,
                    inner: message.magic,
                });
            }
            if log_append_time {
                message.log_append_time = true;
                message.timestamp = timestamp;
            }
        }
    }
    Ok(())
}

fn take_bytes(message: &mut Bytes) -> Result<Option<Bytes>, LegacyError> {
    if message.remaining() < 4 {
        return Err(LegacyError::Truncated("a length"));
    }
    let length = message.get_i32();
    if length < 0 {
        return Ok(None);
    }
    let length = length as usize;
    if message.remaining() < length {
        return Err(LegacyError::Truncated("a key or value"));
    }
    Ok(Some(message.split_to(length)))
}

/// Decompresses a wrapper's value, refusing to produce more than `budget`.
fn decompress(
    codec: i8,
    compressed: &[u8],
    magic: i8,
    offset: i64,
    budget: usize,
    limit: usize,
) -> Result<Vec<u8>, LegacyError> {
    let failed = |reason: String| LegacyError::Decompression { offset, reason };
    let mut out = Vec::new();
    let read = |reader: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), LegacyError> {
        reader
            .take(budget as u64 + 1)
            .read_to_end(out)
            .map_err(|error| failed(error.to_string()))?;
        Ok(())
    };
    match codec {
        1 => read(&mut flate2::read::GzDecoder::new(compressed), &mut out)?,
        2 => out = snappy(compressed, budget).map_err(failed)?,
        3 => {
            // An LZ4 frame. Clients of Kafka before 0.10 (magic 0) computed
            // its header checksum over the wrong bytes (KAFKA-3160); Kafka
            // does not check it for magic 0, and nor do we.
            let fixed = (magic == 0)
                .then(|| with_lz4_header_checksum(compressed))
                .flatten();
            let frame = fixed.as_deref().unwrap_or(compressed);
            let mut decoder = lz4::Decoder::new(frame).map_err(|e| failed(e.to_string()))?;
            read(&mut decoder, &mut out)?;
        }
        codec => return Err(LegacyError::UnknownCodec { offset, codec }),
    }
    if out.len() > budget {
        return Err(LegacyError::TooLarge { limit });
    }
    Ok(out)
}

/// The LZ4 frame with its header checksum right: the second byte of the
/// XXH32 of the frame descriptor (flags to the optional dictionary id).
/// `None` if it is not an LZ4 frame.
fn with_lz4_header_checksum(frame: &[u8]) -> Option<Vec<u8>> {
    const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];
    if frame.len() < 7 || frame[..4] != LZ4_MAGIC {
        return None;
    }
    let flags = frame[4];
    let mut end = 6;
    if flags & 0x08 != 0 {
        end += 8; // content size
    }
    if flags & 0x01 != 0 {
        end += 4; // dictionary id
    }
    if frame.len() <= end {
        return None;
    }
    let mut fixed = frame.to_vec();
    fixed[end] = (twox_hash::XxHash32::oneshot(0, &frame[4..end]) >> 8) as u8;
    Some(fixed)
}

/// snappy-java's stream (a header, then blocks each with its length), or a
/// raw snappy block as some clients send.
fn snappy(compressed: &[u8], budget: usize) -> Result<Vec<u8>, String> {
    let mut decoder = snap::raw::Decoder::new();
    let mut block = |input: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let length = snap::raw::decompress_len(input).map_err(|e| e.to_string())?;
        if out.len() + length > budget {
            return Err(format!("more than {budget} bytes"));
        }
        let start = out.len();
        out.resize(start + length, 0);
        decoder
            .decompress(input, &mut out[start..])
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    let mut out = Vec::new();
    if !compressed.starts_with(XERIAL_MAGIC) {
        block(compressed, &mut out)?;
        return Ok(out);
    }
    let mut rest = compressed
        .get(XERIAL_HEADER_BYTES..)
        .ok_or("a snappy-java header cut short")?;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err("a snappy-java block length cut short".into());
        }
        let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let data = rest
            .get(4..4 + length)
            .ok_or("a snappy-java block cut short")?;
        block(data, &mut out)?;
        rest = &rest[4 + length..];
    }
    Ok(out)
}

/// The messages as one record batch (v2), uncompressed, with offsets from
/// 0 for the log to assign. v0 messages have no timestamp (-1).
pub fn up_convert(messages: &[Message]) -> Result<Bytes, LegacyError> {
    let log_append_time = messages.iter().any(|m| m.log_append_time);
    let records: Vec<Record> = messages
        .iter()
        .enumerate()
        .map(|(i, message)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: if log_append_time {
                TimestampType::LogAppend
            } else {
                TimestampType::Creation
            },
            offset: i as i64,
            // No producer: the batch's base sequence is -1. (The encoder
            // keeps records in one batch while offset - sequence holds.)
            sequence: i as i32 - 1,
            timestamp: message.timestamp,
            key: message.key.clone(),
            value: message.value.clone(),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|error| LegacyError::Encode(error.to_string()))?;
    Ok(batch.freeze())
}

/// Record batches (as the log holds them, whole) as a message set of
/// `magic` 0 or 1, uncompressed: what Fetch v0-v1 (magic 0) and v2-v3
/// (magic 1) return. Control batches (transaction markers) are left out,
/// as Kafka does. A batch that cannot be decoded ends the set there.
pub fn down_convert(batches: &Bytes, magic: i8) -> Bytes {
    let mut out = BytesMut::new();
    let mut rest = batches.clone();
    while let Ok(header) = crate::batch::BatchHeader::parse(&rest) {
        let size = header.total_size();
        if rest.len() < size {
            break;
        }
        let mut batch = rest.split_to(size);
        if header.is_control() {
            continue;
        }
        let Ok(decoded) = RecordBatchDecoder::decode(&mut batch) else {
            break;
        };
        for record in decoded.records {
            put_message(&mut out, magic, &record);
        }
    }
    out.freeze()
}

fn put_message(out: &mut BytesMut, magic: i8, record: &Record) {
    let mut message = BytesMut::new();
    message.put_i8(magic);
    let log_append_time = record.timestamp_type == TimestampType::LogAppend;
    message.put_i8(if magic == 1 && log_append_time {
        LOG_APPEND_TIME_FLAG
    } else {
        0
    });
    if magic == 1 {
        message.put_i64(record.timestamp);
    }
    for field in [&record.key, &record.value] {
        match field {
            Some(bytes) => {
                message.put_i32(bytes.len() as i32);
                message.put_slice(bytes);
            }
            None => message.put_i32(-1),
        }
    }
    out.put_i64(record.offset);
    out.put_i32(4 + message.len() as i32);
    out.put_u32(crc32fast::hash(&message));
    out.put_slice(&message);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offset, timestamp, key, value.
    type Entry<'a> = (i64, i64, Option<&'a [u8]>, &'a [u8]);

    fn message_set(magic: i8, attributes: i8, entries: &[Entry<'_>]) -> Bytes {
        let mut out = BytesMut::new();
        for (offset, timestamp, key, value) in entries {
            let mut message = BytesMut::new();
            message.put_i8(magic);
            message.put_i8(attributes);
            if magic == 1 {
                message.put_i64(*timestamp);
            }
            match key {
                Some(key) => {
                    message.put_i32(key.len() as i32);
                    message.put_slice(key);
                }
                None => message.put_i32(-1),
            }
            message.put_i32(value.len() as i32);
            message.put_slice(value);
            out.put_i64(*offset);
            out.put_i32(4 + message.len() as i32);
            out.put_u32(crc32fast::hash(&message));
            out.put_slice(&message);
        }
        out.freeze()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn v1_messages_round_trip_through_a_batch() {
        let set = message_set(
            1,
            0,
            &[(0, 1_000, Some(b"k0"), b"v0"), (1, 1_001, None, b"v1")],
        );
        let messages = parse(&set, 1 << 20).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].key, None);
        let batch = up_convert(&messages).unwrap();
        let header = crate::batch::BatchHeader::parse(&batch).unwrap();
        assert_eq!((header.record_count, header.max_timestamp), (2, 1_001));
        header.check_producer_batch().unwrap();
        crate::batch::verify_crc(&batch).unwrap();
        let back = down_convert(&batch, 1);
        let again = parse(&back, 1 << 20).unwrap();
        assert_eq!(again, messages);
    }

    #[test]
    fn a_gzip_wrapper_is_opened_and_v0_has_no_timestamp() {
        let inner = message_set(0, 0, &[(0, 0, None, b"a"), (1, 0, None, b"b")]);
        let wrapper = message_set(0, 1, &[(1, 0, None, &gzip(&inner))]);
        let messages = parse(&wrapper, 1 << 20).unwrap();
        let values: Vec<_> = messages.iter().map(|m| m.value.clone().unwrap()).collect();
        assert_eq!(values, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert!(messages.iter().all(|m| m.timestamp == -1));
    }

    #[test]
    fn decompression_is_bounded() {
        let inner = message_set(1, 0, &[(0, 5, None, &[b'x'; 100_000])]);
        let wrapper = message_set(1, 1, &[(0, 5, None, &gzip(&inner))]);
        assert!(matches!(
            parse(&wrapper, 10_000),
            Err(LegacyError::TooLarge { .. } | LegacyError::Decompression { .. })
        ));
        assert!(parse(&wrapper, 200_000).is_ok());
    }

    #[test]
    fn bad_input_is_refused() {
        let set = message_set(1, 0, &[(0, 1, None, b"v")]);
        let mut corrupt = BytesMut::from(&set[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert_eq!(
            parse(&corrupt.freeze(), 1 << 20),
            Err(LegacyError::BadCrc { offset: 0 })
        );
        assert!(matches!(
            parse(&set.slice(..set.len() - 1), 1 << 20),
            Err(LegacyError::Truncated(_))
        ));
        assert_eq!(parse(&Bytes::new(), 1 << 20), Err(LegacyError::Empty));
        let nested = message_set(
            1,
            1,
            &[(0, 1, None, &gzip(&message_set(1, 1, &[(0, 1, None, b"z")])))],
        );
        assert_eq!(
            parse(&nested, 1 << 20),
            Err(LegacyError::NestedCompression { offset: 0 })
        );
    }
}
