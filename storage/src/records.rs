//! Walking the records of one stored batch for their offsets and timestamps
//! (ListOffsets by timestamp and max timestamp).
//!
//! This does not use `kafka_protocol`'s `RecordBatchDecoder`, for two
//! reasons: it reserves memory for the header's record count before reading
//! a record, and it decompresses the whole batch and allocates every key,
//! value and header. Here the records are streamed out of the decompressor,
//! only the two varints needed are decoded, and the decompressed bytes are
//! capped at [`DECOMPRESSED_BATCH_BYTES_MAX`]. Its decoder also reports
//! baseTimestamp + delta for LogAppendTime batches, where every record's
//! timestamp is the batch's maxTimestamp.

use std::io::{self, Read};

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

/// Visits the records of `batch` (a whole stored batch) in order as
/// `(offset, timestamp)` until `found` returns true, and returns that record.
pub fn find_record(
    batch: &[u8],
    header: &BatchHeader,
    mut found: impl FnMut(i64, i64) -> bool,
) -> Result<Option<(i64, i64)>, RecordsError> {
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
    for index in 0..header.record_count {
        let malformed = |reason: String| RecordsError::Malformed { index, reason };
        let (offset_delta, timestamp_delta) = match read_record(&mut reader) {
            Ok(deltas) => deltas,
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
        let offset = header.base_offset + offset_delta as i64;
        let timestamp = match header.timestamp_type() {
            TimestampType::LogAppendTime => header.max_timestamp,
            TimestampType::CreateTime => header.base_timestamp.saturating_add(timestamp_delta),
        };
        if found(offset, timestamp) {
            return Ok(Some((offset, timestamp)));
        }
    }
    Ok(None)
}

/// Reads one record; returns (offset delta, timestamp delta) and skips the rest.
fn read_record(reader: &mut impl Read) -> io::Result<(i32, i64)> {
    let length = read_varlong(reader)?;
    if length < RECORD_BODY_BYTES_MIN {
        return Err(invalid(format!("record length {length}")));
    }
    let mut body = reader.take(length as u64);
    let mut attributes = [0u8; 1];
    body.read_exact(&mut attributes)?;
    let timestamp_delta = read_varlong(&mut body)?;
    let offset_delta =
        i32::try_from(read_varlong(&mut body)?).map_err(|_| invalid("offset delta".into()))?;
    let rest = body.limit();
    if io::copy(&mut body, &mut io::sink())? != rest {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok((offset_delta, timestamp_delta))
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
    use crate::test_batches::{encode_records, record_with};
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
        let mut zigzag = ((body_bytes << 1) ^ (body_bytes >> 63)) as u64;
        while zigzag >= 0x80 {
            record.push((zigzag as u8) | 0x80);
            zigzag >>= 7;
        }
        record.push(zigzag as u8);
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
