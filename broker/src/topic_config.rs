//! Topic-level configs: the names Kafka uses, validation, and how they turn
//! into a partition's [`LogConfig`].

use std::collections::BTreeMap;

use storage::{LogConfig, TimestampType};

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer in `[min, max]`.
    Long {
        min: i64,
        max: i64,
    },
    /// A fraction in `[0, 1]`.
    Ratio,
    Boolean,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// A comma-separated list of the listed words.
    List(&'static [&'static str]),
    /// Any text.
    Text,
}

const LONG: Kind = Kind::Long {
    min: i64::MIN,
    max: i64::MAX,
};
const NON_NEGATIVE: Kind = Kind::Long {
    min: 0,
    max: i64::MAX,
};
const INT_NON_NEGATIVE: Kind = Kind::Long {
    min: 0,
    max: i32::MAX as i64,
};

/// Kafka's config types, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub(crate) enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One topic config: how it is checked and described, and which broker
/// configs give its default.
pub(crate) struct TopicConfigDef {
    pub name: &'static str,
    kind: Kind,
    pub config_type: ConfigType,
    /// Broker configs that set the default, first one winning; each with
    /// the factor that turns its value into this config's unit.
    pub synonyms: &'static [(&'static str, i64)],
    /// Kafka's default when no synonym is set.
    pub default: &'static str,
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    kind: Kind,
    config_type: ConfigType,
    synonyms: &'static [(&'static str, i64)],
    default: &'static str,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        kind,
        config_type,
        synonyms,
        default,
        doc,
    }
}

const INT_POSITIVE: Kind = Kind::Long {
    min: 1,
    max: i32::MAX as i64,
};
const LONG_POSITIVE: Kind = Kind::Long {
    min: 1,
    max: i64::MAX,
};
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Every topic config Kafka defines that we accept, sorted by name. Values
/// are validated; those that shape the log are applied by [`log_config`].
pub(crate) const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def("cleanup.policy", Kind::List(&["delete", "compact"]), ConfigType::List,
        &[("log.cleanup.policy", 1)], "delete",
        "What happens to old segments: \"delete\" removes them by retention time and size, \"compact\" keeps the latest record of each key; both may be given."),
    def("compression.type", Kind::Choice(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]), ConfigType::String,
        &[("compression.type", 1)], "producer",
        "The codec of stored batches; \"producer\" keeps the one the producer used."),
    def("delete.retention.ms", NON_NEGATIVE, ConfigType::Long,
        &[("log.cleaner.delete.retention.ms", 1)], "86400000",
        "How long tombstones of a compacted topic stay readable."),
    def("file.delete.delay.ms", NON_NEGATIVE, ConfigType::Long,
        &[("log.segment.delete.delay.ms", 1)], "60000",
        "How long a deleted segment's files wait before removal."),
    def("flush.messages", LONG_POSITIVE, ConfigType::Long,
        &[("log.flush.interval.messages", 1)], "9223372036854775807",
        "Sync the log to disk after this many records; the default leaves it to the OS."),
    def("flush.ms", NON_NEGATIVE, ConfigType::Long,
        &[("log.flush.interval.ms", 1)], "9223372036854775807",
        "Sync the log to disk when the oldest unsynced record is this old."),
    def("follower.replication.throttled.replicas", Kind::Text, ConfigType::List,
        &[], "",
        "Replicas whose follower fetches are throttled (partition:broker pairs, or *)."),
    def("index.interval.bytes", INT_NON_NEGATIVE, ConfigType::Int,
        &[("log.index.interval.bytes", 1)], "4096",
        "Bytes of log between two entries of the offset index."),
    def("leader.replication.throttled.replicas", Kind::Text, ConfigType::List,
        &[], "",
        "Replicas whose leader-side replication is throttled (partition:broker pairs, or *)."),
    def("max.compaction.lag.ms", LONG_POSITIVE, ConfigType::Long,
        &[("log.cleaner.max.compaction.lag.ms", 1)], "9223372036854775807",
        "The longest a record may stay uncompacted."),
    def("max.message.bytes", INT_NON_NEGATIVE, ConfigType::Int,
        &[("message.max.bytes", 1)], "1048588",
        "The largest record batch the topic accepts."),
    def("message.downconversion.enable", Kind::Boolean, ConfigType::Boolean,
        &[("log.message.downconversion.enable", 1)], "true",
        "Whether fetches of old clients may be down-converted."),
    def("message.timestamp.after.max.ms", NON_NEGATIVE, ConfigType::Long,
        &[("log.message.timestamp.after.max.ms", 1)], "9223372036854775807",
        "How far in the future a CreateTime timestamp may be."),
    def("message.timestamp.before.max.ms", NON_NEGATIVE, ConfigType::Long,
        &[("log.message.timestamp.before.max.ms", 1)], "9223372036854775807",
        "How far in the past a CreateTime timestamp may be."),
    def("message.timestamp.difference.max.ms", NON_NEGATIVE, ConfigType::Long,
        &[("log.message.timestamp.difference.max.ms", 1)], "9223372036854775807",
        "Deprecated: the largest difference between a CreateTime timestamp and the broker's clock."),
    def("message.timestamp.type", Kind::Choice(&["CreateTime", "LogAppendTime"]), ConfigType::String,
        &[("log.message.timestamp.type", 1)], "CreateTime",
        "Whether stored timestamps are the producer's (CreateTime) or the broker's (LogAppendTime)."),
    def("min.cleanable.dirty.ratio", Kind::Ratio, ConfigType::Double,
        &[("log.cleaner.min.cleanable.ratio", 1)], "0.5",
        "The share of uncompacted log that makes the cleaner compact it."),
    def("min.compaction.lag.ms", NON_NEGATIVE, ConfigType::Long,
        &[("log.cleaner.min.compaction.lag.ms", 1)], "0",
        "The shortest a record stays uncompacted."),
    def("min.insync.replicas", INT_POSITIVE, ConfigType::Int,
        &[("min.insync.replicas", 1)], "1",
        "With acks=all, the fewest in-sync replicas a write needs."),
    def("preallocate", Kind::Boolean, ConfigType::Boolean,
        &[("log.preallocate", 1)], "false",
        "Whether new segment files are preallocated."),
    def("retention.bytes", LONG, ConfigType::Long,
        &[("log.retention.bytes", 1)], "-1",
        "The most bytes a partition keeps before old segments are deleted; -1 is no limit."),
    def("retention.ms", Kind::Long { min: -1, max: i64::MAX }, ConfigType::Long,
        &[("log.retention.ms", 1), ("log.retention.minutes", MINUTE_MS), ("log.retention.hours", HOUR_MS)], "604800000",
        "How long records are kept before their segment is deleted; -1 is forever."),
    def("segment.bytes", Kind::Long { min: 14, max: i32::MAX as i64 }, ConfigType::Int,
        &[("log.segment.bytes", 1)], "1073741824",
        "The size at which a segment file is closed and a new one started."),
    def("segment.index.bytes", Kind::Long { min: 4, max: i32::MAX as i64 }, ConfigType::Int,
        &[("log.index.size.max.bytes", 1)], "10485760",
        "The largest offset index of a segment."),
    def("segment.jitter.ms", NON_NEGATIVE, ConfigType::Long,
        &[("log.roll.jitter.ms", 1), ("log.roll.jitter.hours", HOUR_MS)], "0",
        "A random delay subtracted from segment.ms, so that segments do not all roll at once."),
    def("segment.ms", LONG_POSITIVE, ConfigType::Long,
        &[("log.roll.ms", 1), ("log.roll.hours", HOUR_MS)], "604800000",
        "The age at which a segment is closed even if not full."),
    def("unclean.leader.election.enable", Kind::Boolean, ConfigType::Boolean,
        &[("unclean.leader.election.enable", 1)], "false",
        "Whether a replica outside the ISR may become leader, at the cost of losing data."),
];

/// The definition of a topic config.
pub(crate) fn definition(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// Checks one topic config; the error says why, for the INVALID_CONFIG message.
pub(crate) fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(TopicConfigDef { kind, .. }) = definition(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    let invalid = || format!("Invalid value {value} for configuration {name}");
    match *kind {
        Kind::Long { min, max } => {
            let number: i64 = value.trim().parse().map_err(|_| invalid())?;
            if number < min || number > max {
                return Err(format!("{}: value must be in [{min}, {max}]", invalid()));
            }
        }
        Kind::Ratio => {
            let ratio: f64 = value.trim().parse().map_err(|_| invalid())?;
            if !(0.0..=1.0).contains(&ratio) {
                return Err(invalid());
            }
        }
        Kind::Boolean => {
            if !value.trim().eq_ignore_ascii_case("true")
                && !value.trim().eq_ignore_ascii_case("false")
            {
                return Err(invalid());
            }
        }
        Kind::Choice(choices) => {
            if !choices.contains(&value.trim()) {
                return Err(format!("{}: must be one of {choices:?}", invalid()));
            }
        }
        Kind::Text => {}
        Kind::List(choices) => {
            if !value
                .split(',')
                .map(str::trim)
                .all(|item| choices.contains(&item))
            {
                return Err(format!("{}: items must be among {choices:?}", invalid()));
            }
        }
    }
    Ok(())
}

/// The log config of a topic: the broker's defaults with the topic's overrides.
/// Overrides were validated when they were stored.
pub(crate) fn log_config(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut config = defaults.clone();
    let long = |name: &str| {
        overrides
            .get(name)
            .and_then(|value| value.trim().parse::<i64>().ok())
    };
    if let Some(value) = long("segment.bytes") {
        config.segment_bytes = value.max(14) as u64;
    }
    if let Some(value) = long("segment.ms") {
        config.segment_ms = value;
    }
    if let Some(value) = long("index.interval.bytes") {
        config.index_interval_bytes = value.clamp(0, u32::MAX as i64) as u32;
    }
    if let Some(value) = long("retention.ms") {
        config.retention_ms = value;
    }
    if let Some(value) = long("retention.bytes") {
        config.retention_bytes = value;
    }
    if let Some(value) = long("max.message.bytes") {
        config.max_message_bytes = value.clamp(0, u32::MAX as i64) as u32;
    }
    if let Some(value) = long("message.timestamp.before.max.ms") {
        config.timestamp_before_max_ms = value;
    }
    if let Some(value) = long("message.timestamp.after.max.ms") {
        config.timestamp_after_max_ms = value;
    }
    if let Some(value) = long("flush.messages") {
        config.flush_messages = value.max(1) as u64;
    }
    if let Some(value) = long("flush.ms") {
        config.flush_ms = value;
    }
    if let Some(policy) = overrides.get("cleanup.policy") {
        let has = |wanted: &str| policy.split(',').any(|item| item.trim() == wanted);
        config.cleanup_delete = has("delete");
        config.cleanup_compact = has("compact");
    }
    if let Some(value) = long("delete.retention.ms") {
        config.delete_retention_ms = value;
    }
    if let Some(value) = long("min.compaction.lag.ms") {
        config.min_compaction_lag_ms = value;
    }
    if let Some(value) = long("max.compaction.lag.ms") {
        config.max_compaction_lag_ms = value;
    }
    if let Some(ratio) = overrides
        .get("min.cleanable.dirty.ratio")
        .and_then(|value| value.trim().parse::<f64>().ok())
    {
        config.min_cleanable_dirty_ratio = ratio;
    }
    match overrides.get("message.timestamp.type").map(String::as_str) {
        Some("LogAppendTime") => config.message_timestamp_type = TimestampType::LogAppendTime,
        Some("CreateTime") => config.message_timestamp_type = TimestampType::CreateTime,
        _ => {}
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names_types_and_ranges() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("no.such.config", "1").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "compact,shred").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("segment.bytes", "13").is_err());
    }

    #[test]
    fn overrides_shape_the_log_config() {
        let overrides = BTreeMap::from([
            ("segment.bytes".to_string(), "1024".to_string()),
            (
                "message.timestamp.type".to_string(),
                "LogAppendTime".to_string(),
            ),
        ]);
        let config = log_config(&LogConfig::default(), &overrides);
        assert_eq!(config.segment_bytes, 1024);
        assert_eq!(config.message_timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(config.retention_ms, LogConfig::default().retention_ms);
    }
}
