//! The broker-wide defaults of every topic's log config (`log.*`,
//! `message.max.bytes`): Kafka's names for what topics call `segment.bytes`,
//! `retention.ms`, ... The ones in [`DYNAMIC_BROKER_CONFIGS`] may change at
//! run time.

use anyhow::{bail, Context};
use storage::{LogConfig, TimestampType};

use super::properties::Properties;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("message.max.bytes", "1048588"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.ms", ""),
    ("log.roll.hours", "168"),
    ("log.retention.ms", ""),
    ("log.retention.minutes", ""),
    ("log.retention.hours", "168"),
    ("log.retention.bytes", "-1"),
    ("log.index.interval.bytes", "4096"),
    ("log.flush.interval.messages", "9223372036854775807"),
    ("log.flush.interval.ms", ""),
    ("log.message.timestamp.type", "CreateTime"),
    ("log.cleanup.policy", "delete"),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("log.cleaner.max.compaction.lag.ms", "9223372036854775807"),
    ("log.message.timestamp.before.max.ms", "9223372036854775807"),
    ("log.message.timestamp.after.max.ms", "9223372036854775807"),
];

/// The broker properties that may change at run time (AlterConfigs on a
/// broker resource), as in Kafka: the defaults of topic configs.
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &[
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.max.compaction.lag.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.min.compaction.lag.ms",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.index.interval.bytes",
    "log.message.timestamp.after.max.ms",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.type",
    "log.retention.bytes",
    "log.retention.ms",
    "log.roll.ms",
    "log.segment.bytes",
    "message.max.bytes",
];

/// The log section, with Kafka's precedence: `log.retention.ms` over
/// `.minutes` over `.hours`, `log.roll.ms` over `log.roll.hours`.
pub(super) fn from_properties(properties: &Properties) -> anyhow::Result<LogConfig> {
    let retention_ms = match (
        properties.optional_int("log.retention.ms")?,
        properties.optional_int("log.retention.minutes")?,
    ) {
        (Some(ms), _) => ms,
        (None, Some(minutes)) => minutes.saturating_mul(60_000),
        (None, None) => properties
            .int::<i64>("log.retention.hours")?
            .saturating_mul(3_600_000),
    };
    let segment_ms = match properties.optional_int("log.roll.ms")? {
        Some(ms) => ms,
        None => properties
            .int::<i64>("log.roll.hours")?
            .saturating_mul(3_600_000),
    };
    let message_timestamp_type = match properties.text("log.message.timestamp.type") {
        "CreateTime" => TimestampType::CreateTime,
        "LogAppendTime" => TimestampType::LogAppendTime,
        other => {
            bail!("log.message.timestamp.type={other:?} is neither CreateTime nor LogAppendTime")
        }
    };
    let cleanup_policy: Vec<&str> = properties
        .text("log.cleanup.policy")
        .split(',')
        .map(str::trim)
        .collect();
    if cleanup_policy
        .iter()
        .any(|policy| *policy != "delete" && *policy != "compact")
    {
        bail!("log.cleanup.policy={cleanup_policy:?}: only delete and compact are known");
    }
    let min_cleanable_dirty_ratio: f64 = properties
        .text("log.cleaner.min.cleanable.ratio")
        .parse()
        .ok()
        .filter(|ratio| (0.0..=1.0).contains(ratio))
        .context("log.cleaner.min.cleanable.ratio must be a number in [0, 1]")?;
    Ok(LogConfig {
        segment_bytes: properties.positive("log.segment.bytes")?,
        segment_ms,
        index_interval_bytes: properties.int("log.index.interval.bytes")?,
        retention_ms,
        retention_bytes: properties.int("log.retention.bytes")?,
        max_message_bytes: properties.int("message.max.bytes")?,
        message_timestamp_type,
        cleanup_delete: cleanup_policy.contains(&"delete"),
        cleanup_compact: cleanup_policy.contains(&"compact"),
        min_cleanable_dirty_ratio,
        delete_retention_ms: properties.int("log.cleaner.delete.retention.ms")?,
        min_compaction_lag_ms: properties.int("log.cleaner.min.compaction.lag.ms")?,
        max_compaction_lag_ms: properties.int("log.cleaner.max.compaction.lag.ms")?,
        timestamp_before_max_ms: properties.int("log.message.timestamp.before.max.ms")?,
        timestamp_after_max_ms: properties.int("log.message.timestamp.after.max.ms")?,
        flush_messages: properties.positive("log.flush.interval.messages")?,
        flush_ms: properties
            .optional_int("log.flush.interval.ms")?
            .unwrap_or(i64::MAX),
    })
}
