//! The storage crate's one error type.

use std::path::PathBuf;

use protocol::batch::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Producer input that is not well-formed v2 batches: torn, bad magic,
    /// bad length, bad CRC.
    #[error("corrupt message: {0}")]
    CorruptMessage(BatchError),
    /// A batch larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: u32 },
    /// Well-formed batches that a producer may not send (no records, offset
    /// deltas that do not match the count, control batches, no batches).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A CreateTime timestamp outside `message.timestamp.before.max.ms` /
    /// `message.timestamp.after.max.ms` of the broker's clock.
    #[error("timestamp {timestamp} of a batch is out of range [{low}, {high}]")]
    InvalidTimestamp { timestamp: i64, low: i64, high: i64 },
    /// A producer batch at an epoch older than its producer's current one.
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// A producer batch whose sequence does not follow its producer's last.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// A producer batch that does not fit the producer's transaction (a
    /// plain batch while its transaction is open).
    #[error("{0}")]
    InvalidTxnState(String),
    /// A transaction marker from a coordinator older than the last one.
    #[error("{0}")]
    TransactionCoordinatorFenced(String),
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// The log's own files hold something they should not (found after
    /// recovery, e.g. by a read): a disk fault or a bug.
    #[error("corrupt log file {path} at byte {position}: {reason}")]
    CorruptLog {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("I/O error on {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    /// Maps a producer batch problem to the error Kafka reports for it:
    /// CORRUPT_MESSAGE for bytes that are not a batch, INVALID_RECORD for a
    /// batch whose contents a producer may not send.
    pub(crate) fn from_producer_batch(error: BatchError) -> StorageError {
        match error {
            BatchError::BadRecordCount { .. }
            | BatchError::BadLastOffsetDelta { .. }
            | BatchError::Empty => StorageError::InvalidRecord(error.to_string()),
            BatchError::Truncated { .. }
            | BatchError::BadMagic(_)
            | BatchError::BadLength(_)
            | BatchError::CrcMismatch { .. }
            | BatchError::BadCompression(_) => StorageError::CorruptMessage(error),
        }
    }
}

/// Attaches a path to I/O errors.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::File {
            path: path.to_path_buf(),
            source,
        })
    }
}
