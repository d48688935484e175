//! RecordBatch v2 headers: parsing, CRC-32C, and the few in-place edits a
//! broker makes to a batch it stores. Never decompresses, never does I/O.
//!
//! Layout of a v2 batch (all integers big-endian):
//!
//! | at | field                | type |
//! |----|----------------------|------|
//! | 0  | baseOffset           | i64  |
//! | 8  | batchLength          | i32  | bytes after this field: total size = batchLength + 12
//! | 12 | partitionLeaderEpoch | i32  |
//! | 16 | magic                | i8   | 2
//! | 17 | crc                  | u32  | CRC-32C (Castagnoli) of bytes 21..end
//! | 21 | attributes           | i16  |
//! | 23 | lastOffsetDelta      | i32  |
//! | 27 | baseTimestamp        | i64  |
//! | 35 | maxTimestamp         | i64  |
//! | 43 | producerId           | i64  |
//! | 51 | producerEpoch        | i16  |
//! | 53 | baseSequence         | i32  |
//! | 57 | recordCount          | i32  |
//! | 61 | records...           |      |
//!
//! Only baseOffset, batchLength and partitionLeaderEpoch lie outside the CRC,
//! so a broker can assign offsets and stamp the leader epoch without
//! recomputing it; setting LogAppendTime changes covered bytes and does.

use bytes::Bytes;
pub use kafka_protocol::records::Compression;

/// Bytes of a v2 batch header; records start here.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the part counted by batchLength: baseOffset and batchLength.
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
/// The smallest legal batchLength: a header with no records.
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32;
/// The only message format this broker stores.
pub const MAGIC_V2: i8 = 2;
/// The smallest encoded record: length, attributes, timestamp delta, offset
/// delta, key length, value length and header count, one byte each.
pub const RECORD_BYTES_MIN: usize = 7;

pub const BASE_OFFSET_AT: usize = 0;
pub const BATCH_LENGTH_AT: usize = 8;
pub const PARTITION_LEADER_EPOCH_AT: usize = 12;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
/// The CRC covers everything from here to the end of the batch.
pub const ATTRIBUTES_AT: usize = 21;
pub const LAST_OFFSET_DELTA_AT: usize = 23;
pub const BASE_TIMESTAMP_AT: usize = 27;
pub const MAX_TIMESTAMP_AT: usize = 35;
pub const PRODUCER_ID_AT: usize = 43;
pub const PRODUCER_EPOCH_AT: usize = 51;
pub const BASE_SEQUENCE_AT: usize = 53;
pub const RECORD_COUNT_AT: usize = 57;

const _: () = assert!(RECORD_COUNT_AT + 4 == BATCH_HEADER_BYTES);
const _: () = assert!(CRC_AT + 4 == ATTRIBUTES_AT);

pub const ATTRIBUTE_COMPRESSION_MASK: i16 = 0b111;
pub const ATTRIBUTE_LOG_APPEND_TIME: i16 = 1 << 3;
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 1 << 4;
pub const ATTRIBUTE_CONTROL: i16 = 1 << 5;
pub const ATTRIBUTE_DELETE_HORIZON: i16 = 1 << 6;

/// What a batch's timestamps mean (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Set by the producer.
    #[default]
    CreateTime,
    /// Set by the broker when the batch was appended; every record of the
    /// batch then has the batch's maxTimestamp.
    LogAppendTime,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: {needed} bytes needed, {available} present")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    BadMagic(i8),
    #[error("bad record batch length {0}")]
    BadLength(i32),
    #[error("record batch CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("bad record count {record_count} for a batch with {records_bytes} bytes of records")]
    BadRecordCount {
        record_count: i32,
        records_bytes: usize,
    },
    #[error("bad last offset delta {last_offset_delta} for {record_count} records")]
    BadLastOffsetDelta {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error("unknown compression codec {0}")]
    BadCompression(i16),
    #[error("no record batches")]
    Empty,
}

/// The fixed-size header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses and sanity-checks the header at the start of `bytes`. Only the
    /// first [`BATCH_HEADER_BYTES`] are read: whether the whole batch is
    /// present is the caller's business (see [`Batches`]), and so is the CRC
    /// (see [`verify_crc`]).
    ///
    /// Accepts what a log may legally hold after compaction (fewer records
    /// than the offset range, even none); [`BatchHeader::check_producer_batch`]
    /// adds what a producer must send.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let header: &[u8; BATCH_HEADER_BYTES] = bytes
            .get(..BATCH_HEADER_BYTES)
            .and_then(|head| head.try_into().ok())
            .ok_or(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            })?;
        let parsed = BatchHeader {
            base_offset: read_i64(header, BASE_OFFSET_AT),
            batch_length: read_i32(header, BATCH_LENGTH_AT),
            partition_leader_epoch: read_i32(header, PARTITION_LEADER_EPOCH_AT),
            magic: header[MAGIC_AT] as i8,
            crc: read_i32(header, CRC_AT) as u32,
            attributes: read_i16(header, ATTRIBUTES_AT),
            last_offset_delta: read_i32(header, LAST_OFFSET_DELTA_AT),
            base_timestamp: read_i64(header, BASE_TIMESTAMP_AT),
            max_timestamp: read_i64(header, MAX_TIMESTAMP_AT),
            producer_id: read_i64(header, PRODUCER_ID_AT),
            producer_epoch: read_i16(header, PRODUCER_EPOCH_AT),
            base_sequence: read_i32(header, BASE_SEQUENCE_AT),
            record_count: read_i32(header, RECORD_COUNT_AT),
        };
        parsed.check()?;
        Ok(parsed)
    }

    fn check(&self) -> Result<(), BatchError> {
        // Magic first: a v0/v1 message set has a different layout, so its
        // other fields are meaningless.
        if self.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(self.magic));
        }
        if self.batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::BadLength(self.batch_length));
        }
        self.compression()?;
        let records_bytes = self.records_bytes();
        let count_fits = match self.compression()? {
            // Every record takes at least RECORD_BYTES_MIN bytes.
            Compression::None => {
                (self.record_count as i64) * (RECORD_BYTES_MIN as i64) <= records_bytes as i64
            }
            // Compressed records can be smaller than a byte each; the offset
            // range (checked below) bounds the count instead.
            _ => true,
        };
        if self.record_count < 0 || !count_fits {
            return Err(BatchError::BadRecordCount {
                record_count: self.record_count,
                records_bytes,
            });
        }
        if self.last_offset_delta < 0 || self.last_offset_delta < self.record_count - 1 {
            return Err(BatchError::BadLastOffsetDelta {
                last_offset_delta: self.last_offset_delta,
                record_count: self.record_count,
            });
        }
        Ok(())
    }

    /// What a producer must send on top of [`BatchHeader::parse`]'s checks:
    /// at least one record, and offset deltas 0..recordCount (compaction is
    /// the only thing that leaves gaps, and it runs on the broker).
    pub fn check_producer_batch(&self) -> Result<(), BatchError> {
        if self.record_count < 1 {
            return Err(BatchError::BadRecordCount {
                record_count: self.record_count,
                records_bytes: self.records_bytes(),
            });
        }
        if self.last_offset_delta != self.record_count - 1 {
            return Err(BatchError::BadLastOffsetDelta {
                last_offset_delta: self.last_offset_delta,
                record_count: self.record_count,
            });
        }
        Ok(())
    }

    /// Bytes of the whole batch, header included.
    pub fn total_size(&self) -> usize {
        self.batch_length.max(0) as usize + BATCH_LENGTH_PREFIX_BYTES
    }

    /// Bytes of the records section (compressed, if the batch is).
    pub fn records_bytes(&self) -> usize {
        self.total_size().saturating_sub(BATCH_HEADER_BYTES)
    }

    /// The offset of the batch's last record (or of the last record it had
    /// before compaction).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        match self.attributes & ATTRIBUTE_COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::BadCompression(other)),
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }
}

/// CRC-32C of a whole batch as the header's crc field should hold it.
/// `batch` must hold at least the header.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// The same CRC when the header and records are in separate buffers.
pub fn compute_crc_parts(header: &[u8; BATCH_HEADER_BYTES], records: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[ATTRIBUTES_AT..]), records)
}

/// Checks that `batch` is exactly one whole batch and that its CRC matches.
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() != header.total_size() {
        return Err(BatchError::Truncated {
            needed: header.total_size(),
            available: batch.len(),
        });
    }
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(())
}

/// Sets baseOffset (outside the CRC). `batch` must hold at least the header.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Sets partitionLeaderEpoch (outside the CRC). `batch` must hold at least the header.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Marks a whole batch as LogAppendTime with `timestamp` as its maxTimestamp
/// and recomputes the CRC.
pub fn set_log_append_time(batch: &mut [u8], timestamp: i64) {
    let (header, records) = batch.split_at_mut(BATCH_HEADER_BYTES);
    let header: &mut [u8; BATCH_HEADER_BYTES] =
        header.try_into().expect("split at the header size");
    set_log_append_time_parts(header, records, timestamp);
}

/// [`set_log_append_time`] for a header kept apart from its records, so that
/// the records need not be copied to change the header.
pub fn set_log_append_time_parts(
    header: &mut [u8; BATCH_HEADER_BYTES],
    records: &[u8],
    timestamp: i64,
) {
    let attributes = read_i16(header, ATTRIBUTES_AT) | ATTRIBUTE_LOG_APPEND_TIME;
    header[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    header[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = compute_crc_parts(header, records);
    header[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Splits concatenated batches, checking every length against the bytes
/// present. Yields `(header, whole batch)`; does not check CRCs.
///
/// After the first error the iterator ends. [`Batches::valid_bytes`] then
/// says where the well-formed prefix ends, which is what log recovery needs;
/// producer input is rejected as a whole on any error (see [`split_batches`]).
#[derive(Debug, Clone)]
pub struct Batches {
    bytes: Bytes,
    position: usize,
    failed: bool,
}

impl Batches {
    pub fn new(bytes: Bytes) -> Batches {
        Batches {
            bytes,
            position: 0,
            failed: false,
        }
    }

    /// Bytes of the whole, well-formed batches yielded so far.
    pub fn valid_bytes(&self) -> usize {
        self.position
    }
}

impl Iterator for Batches {
    type Item = Result<(BatchHeader, Bytes), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.position..];
        let parsed = BatchHeader::parse(rest).and_then(|header| {
            if header.total_size() > rest.len() {
                Err(BatchError::Truncated {
                    needed: header.total_size(),
                    available: rest.len(),
                })
            } else {
                Ok(header)
            }
        });
        match parsed {
            Ok(header) => {
                let start = self.position;
                self.position += header.total_size();
                Some(Ok((header, self.bytes.slice(start..self.position))))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

impl std::iter::FusedIterator for Batches {}

/// Splits producer input into batches: all of it must be whole, well-formed
/// batches, and there must be at least one. CRCs are not checked here.
pub fn split_batches(records: &Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let batches = Batches::new(records.clone()).collect::<Result<Vec<_>, _>>()?;
    if batches.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(batches)
}

/// How many whole, well-formed batches `records` holds (an error if any
/// bytes are left over).
pub fn count_batches(records: &Bytes) -> Result<usize, BatchError> {
    Batches::new(records.clone()).try_fold(0, |count, batch| batch.map(|_| count + 1))
}

fn read_i16(bytes: &[u8; BATCH_HEADER_BYTES], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn read_i32(bytes: &[u8; BATCH_HEADER_BYTES], at: usize) -> i32 {
    i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_i64(bytes: &[u8; BATCH_HEADER_BYTES], at: usize) -> i64 {
    i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType as WireTimestampType,
    };
    use proptest::prelude::*;

    fn record(offset: i64, timestamp: i64, value: &[u8]) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: WireTimestampType::Creation,
            offset,
            // The encoder starts a new batch whenever offset - sequence
            // changes; this keeps one batch with baseSequence -1.
            sequence: offset as i32 - 1,
            timestamp,
            key: Some(Bytes::from_static(b"key")),
            value: Some(Bytes::copy_from_slice(value)),
            headers: IndexMap::new(),
        }
    }

    fn encode(records: &[Record], compression: Compression) -> Bytes {
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

    fn batch(count: usize, compression: Compression) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| record(i as i64, 1_000 + i as i64, format!("value-{i}").as_bytes()))
            .collect();
        encode(&records, compression)
    }

    const ALL_COMPRESSIONS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn parses_what_the_encoder_writes() {
        for compression in ALL_COMPRESSIONS {
            let bytes = batch(3, compression);
            let header = BatchHeader::parse(&bytes).unwrap();
            assert_eq!(header.base_offset, 0);
            assert_eq!(header.total_size(), bytes.len());
            assert_eq!(header.magic, MAGIC_V2);
            assert_eq!(header.record_count, 3);
            assert_eq!(header.last_offset_delta, 2);
            assert_eq!(header.last_offset(), 2);
            assert_eq!(header.base_timestamp, 1_000);
            assert_eq!(header.max_timestamp, 1_002);
            assert_eq!(header.compression().unwrap(), compression);
            assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
            assert!(!header.is_transactional() && !header.is_control());
            header.check_producer_batch().unwrap();
            verify_crc(&bytes).unwrap();
        }
    }

    #[test]
    fn reads_flags() {
        let mut transactional = record(0, 5, b"v");
        transactional.transactional = true;
        transactional.producer_id = 7;
        transactional.producer_epoch = 3;
        transactional.sequence = 11;
        let bytes = encode(&[transactional], Compression::None);
        let header = BatchHeader::parse(&bytes).unwrap();
        assert!(header.is_transactional());
        assert!(!header.is_control());
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (7, 3, 11)
        );

        let mut control = record(0, 5, b"v");
        control.control = true;
        let header = BatchHeader::parse(&encode(&[control], Compression::None)).unwrap();
        assert!(header.is_control());
    }

    #[test]
    fn rejects_bad_headers() {
        let good = batch(2, Compression::None);
        assert_eq!(
            BatchHeader::parse(&good[..60]),
            Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: 60
            })
        );

        let mut bad = good.to_vec();
        bad[MAGIC_AT] = 1;
        assert_eq!(BatchHeader::parse(&bad), Err(BatchError::BadMagic(1)));

        let mut bad = good.to_vec();
        bad[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(BatchHeader::parse(&bad), Err(BatchError::BadLength(48)));
        bad[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(BatchHeader::parse(&bad), Err(BatchError::BadLength(-1)));

        let mut bad = good.to_vec();
        bad[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(
            BatchHeader::parse(&bad),
            Err(BatchError::BadRecordCount {
                record_count: -1,
                ..
            })
        ));
        // More records than the uncompressed records section can hold.
        bad[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&1_000i32.to_be_bytes());
        assert!(matches!(
            BatchHeader::parse(&bad),
            Err(BatchError::BadRecordCount {
                record_count: 1_000,
                ..
            })
        ));

        let mut bad = good.to_vec();
        bad[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            BatchHeader::parse(&bad),
            Err(BatchError::BadLastOffsetDelta {
                last_offset_delta: 0,
                record_count: 2
            })
        );

        let mut bad = good.to_vec();
        bad[ATTRIBUTES_AT + 1] |= 0b101;
        assert_eq!(BatchHeader::parse(&bad), Err(BatchError::BadCompression(5)));
    }

    #[test]
    fn producer_batches_need_records_and_dense_offsets() {
        let good = batch(2, Compression::None);
        let mut header = BatchHeader::parse(&good).unwrap();
        header.last_offset_delta = 5;
        assert!(header.check().is_ok(), "a compacted batch may have gaps");
        assert!(matches!(
            header.check_producer_batch(),
            Err(BatchError::BadLastOffsetDelta { .. })
        ));
        header.record_count = 0;
        assert!(header.check().is_ok(), "a compacted batch may be empty");
        assert!(matches!(
            header.check_producer_batch(),
            Err(BatchError::BadRecordCount { .. })
        ));
    }

    #[test]
    fn crc_detects_changes_inside_and_ignores_outside() {
        let good = batch(3, Compression::Lz4);
        for at in [
            ATTRIBUTES_AT,
            MAX_TIMESTAMP_AT,
            BATCH_HEADER_BYTES,
            good.len() - 1,
        ] {
            let mut bad = good.to_vec();
            bad[at] ^= 0x40;
            // A flipped attribute bit may also make the header invalid; either way it is caught.
            assert!(verify_crc(&bad).is_err(), "flip at {at}");
        }
        let mut bad = good.to_vec();
        bad[good.len() - 1] ^= 1;
        assert!(matches!(
            verify_crc(&bad),
            Err(BatchError::CrcMismatch { .. })
        ));
        assert!(matches!(
            verify_crc(&good[..good.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));

        let mut moved = good.to_vec();
        set_base_offset(&mut moved, 1 << 40);
        set_partition_leader_epoch(&mut moved, 17);
        verify_crc(&moved).unwrap();
        let header = BatchHeader::parse(&moved).unwrap();
        assert_eq!(header.base_offset, 1 << 40);
        assert_eq!(header.last_offset(), (1 << 40) + 2);
        assert_eq!(header.partition_leader_epoch, 17);
    }

    #[test]
    fn log_append_time_is_set_and_decodable() {
        for compression in ALL_COMPRESSIONS {
            let mut bytes = batch(4, compression).to_vec();
            set_base_offset(&mut bytes, 100);
            set_log_append_time(&mut bytes, 987_654);
            verify_crc(&bytes).unwrap();
            let header = BatchHeader::parse(&bytes).unwrap();
            assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
            assert_eq!(header.max_timestamp, 987_654);
            assert_eq!(header.base_timestamp, 1_000, "the first timestamp is kept");
            assert_eq!(header.compression().unwrap(), compression);

            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(bytes)).unwrap();
            assert_eq!(decoded.records.len(), 4);
            assert_eq!(decoded.records[3].offset, 103);
            assert!(decoded
                .records
                .iter()
                .all(|r| r.timestamp_type == WireTimestampType::LogAppend));
        }
    }

    #[test]
    fn split_header_and_records_give_the_same_crc() {
        let bytes = batch(3, Compression::Zstd);
        let mut whole = bytes.to_vec();
        set_log_append_time(&mut whole, 42);
        let mut header: [u8; BATCH_HEADER_BYTES] = bytes[..BATCH_HEADER_BYTES].try_into().unwrap();
        set_log_append_time_parts(&mut header, &bytes[BATCH_HEADER_BYTES..], 42);
        assert_eq!(&whole[..BATCH_HEADER_BYTES], &header[..]);
        assert_eq!(
            compute_crc_parts(&header, &bytes[BATCH_HEADER_BYTES..]),
            compute_crc(&whole)
        );
    }

    #[test]
    fn splits_concatenated_batches_and_finds_the_valid_prefix() {
        let first = batch(1, Compression::None);
        let second = batch(5, Compression::Gzip);
        let mut joined = BytesMut::new();
        joined.extend_from_slice(&first);
        joined.extend_from_slice(&second);
        let joined = joined.freeze();

        let split = split_batches(&joined).unwrap();
        assert_eq!(split.len(), 2);
        assert_eq!(split[0].1, first);
        assert_eq!(split[1].1, second);
        assert_eq!(split[1].0.record_count, 5);
        assert_eq!(count_batches(&joined), Ok(2));

        // A torn tail: the first batch is still usable by recovery.
        let torn = joined.slice(..joined.len() - 3);
        let mut batches = Batches::new(torn.clone());
        assert!(batches.next().unwrap().is_ok());
        assert!(matches!(
            batches.next(),
            Some(Err(BatchError::Truncated { .. }))
        ));
        assert!(batches.next().is_none());
        assert_eq!(batches.valid_bytes(), first.len());
        assert!(matches!(
            split_batches(&torn),
            Err(BatchError::Truncated { .. })
        ));
        assert!(count_batches(&torn).is_err());

        assert_eq!(split_batches(&Bytes::new()), Err(BatchError::Empty));
        assert_eq!(count_batches(&Bytes::new()), Ok(0));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let bytes = Bytes::from(bytes);
            let _ = BatchHeader::parse(&bytes);
            let _ = verify_crc(&bytes);
            let mut batches = Batches::new(bytes.clone());
            let mut seen = 0;
            for (header, batch) in batches.by_ref().flatten() {
                prop_assert_eq!(header.total_size(), batch.len());
                seen += batch.len();
            }
            prop_assert_eq!(batches.valid_bytes(), seen);
            prop_assert!(seen <= bytes.len());
            let _ = count_batches(&bytes);
        }

        #[test]
        fn garbage_header_on_a_real_batch_never_panics(
            at in 0usize..BATCH_HEADER_BYTES,
            value in any::<u8>(),
        ) {
            let mut bytes = batch(2, Compression::None).to_vec();
            bytes[at] = value;
            if let Ok(header) = BatchHeader::parse(&bytes) {
                let _ = header.compression();
                let _ = header.last_offset();
            }
            let _ = verify_crc(&bytes);
            let _ = split_batches(&Bytes::from(bytes));
        }

        #[test]
        fn encoder_batches_round_trip(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..20),
            compression_index in 0usize..5,
            base_offset in 0i64..(1 << 50),
            epoch in -1i32..1000,
            append_time in proptest::option::of(0i64..(1 << 42)),
        ) {
            let compression = ALL_COMPRESSIONS[compression_index];
            let records: Vec<Record> =
                values.iter().enumerate().map(|(i, value)| record(i as i64, 10 * i as i64, value)).collect();
            let mut bytes = encode(&records, compression).to_vec();
            let header = BatchHeader::parse(&bytes).unwrap();
            prop_assert_eq!(header.record_count as usize, values.len());
            prop_assert_eq!(header.total_size(), bytes.len());
            header.check_producer_batch().unwrap();
            verify_crc(&bytes).unwrap();

            set_base_offset(&mut bytes, base_offset);
            set_partition_leader_epoch(&mut bytes, epoch);
            if let Some(time) = append_time {
                set_log_append_time(&mut bytes, time);
            }
            verify_crc(&bytes).unwrap();
            let header = BatchHeader::parse(&bytes).unwrap();
            prop_assert_eq!(header.base_offset, base_offset);
            prop_assert_eq!(header.partition_leader_epoch, epoch);
            prop_assert_eq!(header.last_offset(), base_offset + values.len() as i64 - 1);

            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(bytes)).unwrap();
            prop_assert_eq!(decoded.records.len(), values.len());
            for (i, decoded) in decoded.records.iter().enumerate() {
                prop_assert_eq!(decoded.offset, base_offset + i as i64);
                prop_assert_eq!(decoded.partition_leader_epoch, epoch);
                prop_assert_eq!(decoded.value.as_deref(), Some(&values[i][..]));
                // The crate's decoder reports baseTimestamp + delta even for
                // LogAppendTime; clients use maxTimestamp then.
                prop_assert_eq!(decoded.timestamp, 10 * i as i64);
                let expected_type = if append_time.is_some() { WireTimestampType::LogAppend } else { WireTimestampType::Creation };
                prop_assert_eq!(decoded.timestamp_type, expected_type);
            }
        }
    }
}
