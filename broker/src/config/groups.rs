//! The group coordinator (`group.*`, `offsets.*`, `offset.metadata.max.bytes`).

use super::properties::Properties;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("group.max.size", "2147483647"),
    ("offsets.topic.num.partitions", "50"),
    ("offsets.topic.replication.factor", "3"),
    ("offsets.topic.segment.bytes", "104857600"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("offset.metadata.max.bytes", "4096"),
];

/// The group coordinator's settings (Kafka's `group.*` and `offsets.*`).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.topic.replication.factor`, capped by the live brokers.
    pub offsets_topic_replication_factor: i16,
    pub initial_rebalance_delay_ms: u64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_size: usize,
    pub offsets_topic_partitions: i32,
    pub offsets_topic_segment_bytes: u64,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub offset_metadata_max_bytes: usize,
}

impl GroupConfig {
    pub(super) fn from_properties(properties: &Properties) -> anyhow::Result<GroupConfig> {
        let offsets_retention_minutes: i64 = properties.positive("offsets.retention.minutes")?;
        Ok(GroupConfig {
            offsets_topic_replication_factor: properties
                .positive("offsets.topic.replication.factor")?,
            initial_rebalance_delay_ms: properties.int("group.initial.rebalance.delay.ms")?,
            min_session_timeout_ms: properties.int("group.min.session.timeout.ms")?,
            max_session_timeout_ms: properties.int("group.max.session.timeout.ms")?,
            max_size: properties.positive("group.max.size")?,
            offsets_topic_partitions: properties.positive("offsets.topic.num.partitions")?,
            offsets_topic_segment_bytes: properties.positive("offsets.topic.segment.bytes")?,
            offsets_retention_ms: offsets_retention_minutes.saturating_mul(60_000),
            offsets_retention_check_interval_ms: properties
                .positive("offsets.retention.check.interval.ms")?,
            offset_metadata_max_bytes: properties.int::<u32>("offset.metadata.max.bytes")? as usize,
        })
    }
}
