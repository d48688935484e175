//! Per-partition log settings (Kafka's topic-level names in the comments) and
//! the limits that hold whatever the settings say.

pub use protocol::batch::TimestampType;

/// Log settings; `Default` gives Kafka's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    /// Clamped to [`SEGMENT_BYTES_MAX`].
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch is older than this.
    pub segment_ms: i64,
    /// `index.interval.bytes`: log bytes between two index entries.
    pub index_interval_bytes: u32,
    /// `cleanup.policy` contains `delete`: retention by time and size
    /// applies. (A `compact`-only log keeps its segments: compaction, not
    /// retention, bounds it.)
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: [`crate::PartitionLog::clean`]
    /// keeps the latest record of each key, and appends must give every
    /// record a key.
    pub cleanup_compact: bool,
    /// `min.cleanable.dirty.ratio`: clean when the uncleaned bytes are at
    /// least this share of the cleanable bytes.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: segments holding a record newer than this are
    /// not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: clean, whatever the dirty ratio, when an
    /// uncleaned record is older than this.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone (a record with a null
    /// value) outlives its first clean, so that consumers can see it.
    pub delete_retention_ms: i64,
    /// `retention.ms`: delete segments whose newest record is older; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the log is larger; -1 = no limit.
    pub retention_bytes: i64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u32,
    /// `message.timestamp.type`.
    pub message_timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: with CreateTime, how far before
    /// the broker's clock a batch's timestamps may be.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: with CreateTime, how far after it.
    pub timestamp_after_max_ms: i64,
    /// `flush.messages`: fsync after this many records; the default never does.
    pub flush_messages: u64,
    /// `flush.ms`: fsync when the last fsync is this old (checked on append);
    /// the default never does.
    pub flush_ms: i64,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            cleanup_delete: true,
            cleanup_compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: DAY_MS,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            flush_messages: i64::MAX as u64,
            flush_ms: i64::MAX,
        }
    }
}

impl LogConfig {
    /// `segment.bytes` as used: positions in the offset index are `u32`, and
    /// Kafka's own setting is an `int`.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(1, SEGMENT_BYTES_MAX)
    }
}

/// The largest segment size a config can ask for.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Each index of a segment is bounded like Kafka's `segment.index.bytes`
/// default; a full index rolls the segment.
pub const SEGMENT_INDEX_BYTES_MAX: usize = 10 * 1024 * 1024;
/// The most bytes one `read` returns, whatever `max_bytes` asks, unless a
/// single batch is larger and at least one batch was asked for.
pub const READ_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Log bytes read per system call when recovery scans a segment.
pub const RECOVERY_CHUNK_BYTES: usize = 1024 * 1024;
/// Log bytes read per system call when looking for a batch from an index entry.
pub const LOOKUP_CHUNK_BYTES: usize = 16 * 1024;
/// The most bytes a compressed batch may decompress to when its records are
/// walked (timestamp lookups): beyond it the batch is treated as opaque.
pub const DECOMPRESSED_BATCH_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// The most key bytes the cleaner's map of latest offsets holds: a clean
/// covers fewer segments rather than exceed it (but always at least one).
pub const CLEANER_KEY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The largest checkpoint file read back (leader epochs, offsets).
pub const CHECKPOINT_FILE_BYTES_MAX: u64 = 1024 * 1024;

const _: () = assert!(
    SEGMENT_BYTES_MAX <= u32::MAX as u64,
    "file positions are u32 in the offset index"
);
const _: () = assert!(LOOKUP_CHUNK_BYTES >= protocol::batch::BATCH_HEADER_BYTES);
const _: () = assert!(RECOVERY_CHUNK_BYTES >= protocol::batch::BATCH_HEADER_BYTES);
