//! Walking the records of one stored batch: offsets and timestamps
//! (ListOffsets by timestamp and max timestamp), keys (the null-key check on
//! compacted logs, the cleaner's key map) and whole record bodies (the
//! cleaner's copies of the records it keeps).
//!
//! This does not use `kafka_protocol`'s `RecordBatchDecoder`, for two
//! reasons: it reserves memory for the header's record count before reading
//! a record, and it decompresses the whole batch and allocates every key,
//! value and header. Here the records are streamed out of the decompressor
//! one at a time, only the fields up to the value are decoded, and the
//! decompressed bytes are capped at [`DECOMPRESSED_BATCH_BYTES_MAX`]. Its
//! decoder also reports baseTimestamp + delta for LogAppendTime batches,
//! where every record's timestamp is the batch's maxTimestamp.

use std::io::{self, Read};
use std::ops::{ControlFlow, Range};

use protocol::batch::{BatchHeader, Compression, TimestampType, BATCH_HEADER_BYTES};

use crate::config::DECOMPRESSED_BATCH_BYTES_MAX;

/// The smallest record body after its length: attributes, timestamp delta,
/// offset delta, key length, value length, header count.
const RECORD_BODY_BYTES_MIN: i64 = 6;
/// Bytes of a varint encoding of an i64, at most.
const VARLONG_BYTES_MAX: usize = 10;
/// Snappy blocks in Xerial framing (Java clients) are 32 KiB; accept larger
/// ones up to this.
const SNAPPY_BLOCK_BYTES_MAX: usize = 4 * 1024 * 1024;
const XERIAL_SNAPPY_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Magic, version and compatible version.
const XERIAL_SNAPPY_HEADER_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("record {index}: {reason}")]
    Malformed { index: i32, reason: String },
    #[error("decompression failed: {0}")]
    Decompress(io::Error),
    #[error("batch decompresses to more than {DECOMPRESSED_BATCH_BYTES_MAX} bytes")]
    TooLarge,
}

/// One record of a batch, as [`walk_records`] shows it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    /// `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Whether the value is null: a tombstone on a compacted log.
    pub is_tombstone: bool,
    /// `None` for a null value.
    pub value: Option<&'a [u8]>,
    /// The whole record, ready to be copied into a batch with the same base
    /// offset and base timestamp: as stored, except that its length varint
    /// is re-encoded in the shortest form.
    pub bytes: &'a [u8],
}

/// Visits the records of `batch` (a whole stored batch) in order as
/// `(offset, timestamp)` until `found` returns true, and returns that record.
pub fn find_record(
    batch: &[u8],
    header: &BatchHeader,
    mut found: impl FnMut(i64, i64) -> bool,
) -> Result<Option<(i64, i64)>, RecordsError> {
    walk_records(batch, header, |record| {
        if found(record.offset, record.timestamp) {
            ControlFlow::Break((record.offset, record.timestamp))
        } else {
            ControlFlow::Continue(())
        }
    })
}

/// Visits the records of `batch` (a whole stored batch) in order until
/// `visit` breaks, and returns what it broke with. One record is held at a
/// time.
pub fn walk_records<T>(
    batch: &[u8],
    header: &BatchHeader,
    mut visit: impl FnMut(&RecordView<'_>) -> ControlFlow<T>,
) -> Result<Option<T>, RecordsError> {
    let records = &batch[BATCH_HEADER_BYTES.min(batch.len())..];
    let compression = header
        .compression()
        .map_err(|error| RecordsError::Malformed {
            index: 0,
            reason: error.to_string(),
        })?;
    let reader = decompressor(compression, records)?;
    // One byte past the cap tells "exactly at the cap" from "over it".
    let mut reader = Counted {
        inner: reader.take(DECOMPRESSED_BATCH_BYTES_MAX + 1),
        read: 0,
    };
    let mut bytes = Vec::new();
    for index in 0..header.record_count {
        let malformed = |reason: String| RecordsError::Malformed { index, reason };
        let fields = match read_record(&mut reader, &mut bytes) {
            Ok(fields) => fields,
            Err(_) if reader.read > DECOMPRESSED_BATCH_BYTES_MAX => {
                return Err(RecordsError::TooLarge)
            }
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                return Err(malformed(error.to_string()))
            }
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(malformed(error.to_string()))
            }
            Err(error) => return Err(RecordsError::Decompress(error)),
        };
        let timestamp = match header.timestamp_type() {
            TimestampType::LogAppendTime => header.max_timestamp,
            TimestampType::CreateTime => {
                header.base_timestamp.saturating_add(fields.timestamp_delta)
            }
        };
        let record = RecordView {
            offset: header.base_offset + fields.offset_delta as i64,
            timestamp,
            key: fields.key.map(|key| &bytes[key]),
            is_tombstone: fields.value.is_none(),
            value: fields.value.map(|value| &bytes[value]),
            bytes: &bytes,
        };
        if let ControlFlow::Break(value) = visit(&record) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// What [`read_record`] decodes of a record.
struct RecordFields {
    offset_delta: i32,
    timestamp_delta: i64,
    /// Where the key lies in the record's bytes; `None` for a null key.
    key: Option<Range<usize>>,
    /// Where the value lies; `None` for a null value (a tombstone).
    value: Option<Range<usize>>,
}

/// Reads one whole record (length varint included) into `record` and
/// decodes its fields up to the value; headers are left undecoded.
fn read_record(reader: &mut impl Read, record: &mut Vec<u8>) -> io::Result<RecordFields> {
    let length = read_varlong(reader)?;
    if length < RECORD_BODY_BYTES_MIN {
        return Err(invalid(format!("record length {length}")));
    }
    record.clear();
    write_varlong(record, length);
    let prefix = record.len();
    // The reader is capped, so a huge claimed length cannot make this grow past the cap.
    reader.take(length as u64).read_to_end(record)?;
    if ((record.len() - prefix) as u64) < length as u64 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut rest: &[u8] = &record[prefix..];
    let mut attributes = [0u8; 1];
    rest.read_exact(&mut attributes)?;
    let timestamp_delta = read_varlong(&mut rest)?;
    let offset_delta =
        i32::try_from(read_varlong(&mut rest)?).map_err(|_| invalid("offset delta".into()))?;
    let key = read_bytes_field(&mut rest, record.len(), "key")?;
    let value = read_bytes_field(&mut rest, record.len(), "value")?;
    Ok(RecordFields {
        offset_delta,
        timestamp_delta,
        key,
        value,
    })
}

/// A length-prefixed byte field (-1 for null): its range in the record,
/// whose unread end is `rest`, and `rest` moved past it.
fn read_bytes_field(
    rest: &mut &[u8],
    record_len: usize,
    what: &str,
) -> io::Result<Option<Range<usize>>> {
    let length = read_varlong(rest)?;
    if length == -1 {
        return Ok(None);
    }
    let length = usize::try_from(length)
        .ok()
        .filter(|&length| length <= rest.len())
        .ok_or_else(|| invalid(format!("{what} length {length}")))?;
    let start = record_len - rest.len();
    *rest = &rest[length..];
    Ok(Some(start..start + length))
}

/// A zigzag varint of up to 64 bits, as records use for all their lengths and deltas.
fn read_varlong(reader: &mut impl Read) -> io::Result<i64> {
    let mut value: u64 = 0;
    for index in 0..VARLONG_BYTES_MAX {
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte)?;
        value |= ((byte[0] & 0x7f) as u64) << (7 * index);
        if byte[0] & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(invalid("varint longer than 10 bytes".into()))
}

/// Appends `value` as a zigzag varint.
pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.read += read as u64;
        Ok(read)
    }
}

fn decompressor<'a>(
    compression: Compression,
    records: &'a [u8],
) -> Result<Box<dyn Read + 'a>, RecordsError> {
    Ok(match compression {
        Compression::None => Box::new(records),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(records)),
        Compression::Lz4 => Box::new(lz4::Decoder::new(records).map_err(RecordsError::Decompress)?),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(records).map_err(RecordsError::Decompress)?)
        }
        Compression::Snappy => Box::new(SnappyReader::new(records)?),
    })
}

/// Snappy as Kafka clients write it: either Xerial framing (a 16-byte
/// header, then blocks of u32 length + raw snappy) or one raw snappy block
/// (librdkafka). Decompresses one block at a time.
struct SnappyReader<'a> {
    framed: &'a [u8],
    block: Vec<u8>,
    at: usize,
}

impl<'a> SnappyReader<'a> {
    fn new(records: &'a [u8]) -> Result<SnappyReader<'a>, RecordsError> {
        if records.len() >= XERIAL_SNAPPY_HEADER_BYTES && records.starts_with(XERIAL_SNAPPY_MAGIC) {
            return Ok(SnappyReader {
                framed: &records[XERIAL_SNAPPY_HEADER_BYTES..],
                block: Vec::new(),
                at: 0,
            });
        }
        let block = decompress_snappy_block(records, DECOMPRESSED_BATCH_BYTES_MAX as usize)?;
        Ok(SnappyReader {
            framed: &[],
            block,
            at: 0,
        })
    }

    fn next_block(&mut self) -> io::Result<bool> {
        if self.framed.is_empty() {
            return Ok(false);
        }
        let Some((length, rest)) = self.framed.split_first_chunk::<4>() else {
            return Err(invalid("torn snappy block length".into()));
        };
        let length = u32::from_be_bytes(*length) as usize;
        if length > rest.len() {
            return Err(invalid("torn snappy block".into()));
        }
        let (block, rest) = rest.split_at(length);
        self.framed = rest;
        self.block = decompress_snappy_block(block, SNAPPY_BLOCK_BYTES_MAX)
            .map_err(|error| invalid(error.to_string()))?;
        self.at = 0;
        Ok(true)
    }
}

fn decompress_snappy_block(block: &[u8], limit: usize) -> Result<Vec<u8>, RecordsError> {
    let length = snap::raw::decompress_len(block)
        .map_err(|error| RecordsError::Decompress(invalid(error.to_string())))?;
    if length > limit {
        return Err(RecordsError::TooLarge);
    }
    let mut out = vec![0; length];
    snap::raw::Decoder::new()
        .decompress(block, &mut out)
        .map_err(|error| RecordsError::Decompress(invalid(error.to_string())))?;
    Ok(out)
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let count = buf.len().min(self.block.len() - self.at);
        buf[..count].copy_from_slice(&self.block[self.at..self.at + count]);
        self.at += count;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_batches::{encode_records, keyed_record, record_with};
    use protocol::batch::{set_base_offset, set_log_append_time};

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn all_records(batch: &[u8]) -> Vec<(i64, i64)> {
        let header = BatchHeader::parse(batch).unwrap();
        let mut seen = Vec::new();
        let last = find_record(batch, &header, |offset, timestamp| {
            seen.push((offset, timestamp));
            false
        })
        .unwrap();
        assert_eq!(last, None);
        seen
    }

    #[test]
    fn walks_every_compression_like_the_decoder() {
        let timestamps = [50, 10, 70, 70, 20];
        for compression in ALL {
            let records: Vec<_> = timestamps
                .iter()
                .enumerate()
                .map(|(i, &t)| record_with(i as i64, t, vec![i as u8; 100 * i]))
                .collect();
            let mut batch = encode_records(&records, compression).to_vec();
            set_base_offset(&mut batch, 1_000);
            let expected: Vec<(i64, i64)> = timestamps
                .iter()
                .enumerate()
                .map(|(i, &t)| (1_000 + i as i64, t))
                .collect();
            assert_eq!(all_records(&batch), expected, "{compression:?}");

            let header = BatchHeader::parse(&batch).unwrap();
            let first_at_least_60 = find_record(&batch, &header, |_, t| t >= 60).unwrap();
            assert_eq!(first_at_least_60, Some((1_002, 70)));

            set_log_append_time(&mut batch, 999);
            assert!(all_records(&batch).iter().all(|&(_, t)| t == 999));
        }
    }

    #[test]
    fn walks_keys_tombstones_and_whole_records() {
        let records = vec![
            keyed_record(0, 10, "a", Some(b"one".to_vec())),
            record_with(1, 11, b"no key".to_vec()),
            keyed_record(2, 12, "", None),
        ];
        for compression in ALL {
            let batch = encode_records(&records, compression);
            let header = BatchHeader::parse(&batch).unwrap();
            let mut seen = Vec::new();
            let mut bytes = Vec::new();
            let walked = walk_records(&batch, &header, |record| {
                seen.push((
                    record.offset,
                    record.key.map(<[u8]>::to_vec),
                    record.is_tombstone,
                ));
                bytes.extend_from_slice(record.bytes);
                ControlFlow::<()>::Continue(())
            });
            assert!(matches!(walked, Ok(None)), "{compression:?}");
            assert_eq!(
                seen,
                vec![
                    (0, Some(b"a".to_vec()), false),
                    (1, None, false),
                    (2, Some(vec![]), true)
                ]
            );
            // The records, copied whole, are the uncompressed records section.
            let plain = encode_records(&records, Compression::None);
            assert_eq!(bytes, plain[BATCH_HEADER_BYTES..], "{compression:?}");
        }
    }

    #[test]
    fn raw_snappy_as_librdkafka_writes_it() {
        let records: Vec<_> = (0..3)
            .map(|i| record_with(i, 5 + i, b"abc".to_vec()))
            .collect();
        let plain = encode_records(&records, Compression::None);
        let raw = snap::raw::Encoder::new()
            .compress_vec(&plain[BATCH_HEADER_BYTES..])
            .unwrap();
        let mut batch = plain[..BATCH_HEADER_BYTES].to_vec();
        batch.extend_from_slice(&raw);
        let length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        batch[22] = (batch[22] & !0b111) | Compression::Snappy as u8;
        assert_eq!(all_records(&batch), vec![(0, 5), (1, 6), (2, 7)]);
    }

    #[test]
    fn garbage_records_are_errors_not_panics() {
        let records: Vec<_> = (0..4).map(|i| record_with(i, i, vec![7; 20])).collect();
        for compression in ALL {
            let batch = encode_records(&records, compression);
            let header = BatchHeader::parse(&batch).unwrap();
            for cut in [BATCH_HEADER_BYTES, BATCH_HEADER_BYTES + 3, batch.len() - 1] {
                let _ = find_record(&batch[..cut], &header, |_, _| false);
            }
            let mut flipped = batch.to_vec();
            for at in (BATCH_HEADER_BYTES..flipped.len()).step_by(3) {
                flipped[at] ^= 0xff;
            }
            let _ = find_record(&flipped, &header, |_, _| false);
            // A count far above what is there ends with an error, without reserving for it.
            let mut huge = header;
            huge.record_count = i32::MAX;
            assert!(find_record(&batch, &huge, |_, _| false).is_err());
        }
    }

    #[test]
    fn decompression_is_capped() {
        // One record claiming a 40 MiB body of zeros: compresses to almost
        // nothing, decompresses past the cap.
        let body_bytes: i64 = 40 * 1024 * 1024;
        let mut record = Vec::new();
        write_varlong(&mut record, body_bytes);
        record.resize(record.len() + body_bytes as usize, 0);
        let mut compressed = Vec::new();
        zstd::stream::copy_encode(&record[..], &mut compressed, 3).unwrap();

        let template = encode_records(&[record_with(0, 0, vec![])], Compression::Zstd);
        let header = BatchHeader::parse(&template).unwrap();
        let mut batch = template[..BATCH_HEADER_BYTES].to_vec();
        batch.extend_from_slice(&compressed);
        assert!(matches!(
            find_record(&batch, &header, |_, _| false),
            Err(RecordsError::TooLarge)
        ));
    }
}
