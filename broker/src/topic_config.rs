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

/// Every topic config Kafka defines that we accept. Values are validated;
/// those that shape the log are applied by [`log_config`].
const TOPIC_CONFIGS: &[(&str, Kind)] = &[
    ("cleanup.policy", Kind::List(&["delete", "compact"])),
    (
        "compression.type",
        Kind::Choice(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
    ),
    ("delete.retention.ms", NON_NEGATIVE),
    ("file.delete.delay.ms", NON_NEGATIVE),
    (
        "flush.messages",
        Kind::Long {
            min: 1,
            max: i64::MAX,
        },
    ),
    ("flush.ms", NON_NEGATIVE),
    ("index.interval.bytes", INT_NON_NEGATIVE),
    (
        "max.compaction.lag.ms",
        Kind::Long {
            min: 1,
            max: i64::MAX,
        },
    ),
    ("max.message.bytes", INT_NON_NEGATIVE),
    ("message.downconversion.enable", Kind::Boolean),
    ("message.timestamp.after.max.ms", NON_NEGATIVE),
    ("message.timestamp.before.max.ms", NON_NEGATIVE),
    ("message.timestamp.difference.max.ms", NON_NEGATIVE),
    (
        "message.timestamp.type",
        Kind::Choice(&["CreateTime", "LogAppendTime"]),
    ),
    ("min.cleanable.dirty.ratio", Kind::Ratio),
    ("min.compaction.lag.ms", NON_NEGATIVE),
    (
        "min.insync.replicas",
        Kind::Long {
            min: 1,
            max: i32::MAX as i64,
        },
    ),
    ("preallocate", Kind::Boolean),
    ("retention.bytes", LONG),
    (
        "retention.ms",
        Kind::Long {
            min: -1,
            max: i64::MAX,
        },
    ),
    (
        "segment.bytes",
        Kind::Long {
            min: 14,
            max: i32::MAX as i64,
        },
    ),
    (
        "segment.index.bytes",
        Kind::Long {
            min: 4,
            max: i32::MAX as i64,
        },
    ),
    ("segment.jitter.ms", NON_NEGATIVE),
    (
        "segment.ms",
        Kind::Long {
            min: 1,
            max: i64::MAX,
        },
    ),
    ("unclean.leader.election.enable", Kind::Boolean),
];

/// Checks one topic config; the error says why, for the INVALID_CONFIG message.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some((_, kind)) = TOPIC_CONFIGS.iter().find(|(known, _)| *known == name) else {
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
pub fn log_config(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
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
    if let Some(value) = long("flush.messages") {
        config.flush_messages = value.max(1) as u64;
    }
    if let Some(value) = long("flush.ms") {
        config.flush_ms = value;
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
