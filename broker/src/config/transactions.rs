//! Idempotent and transactional producers (`producer.id.*`, `transaction.*`).

use super::properties::Properties;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("producer.id.expiration.ms", "86400000"),
    ("producer.id.expiration.check.interval.ms", "600000"),
    ("transaction.max.timeout.ms", "900000"),
    ("transactional.id.expiration.ms", "604800000"),
    ("transaction.state.log.num.partitions", "50"),
    ("transaction.state.log.replication.factor", "3"),
    ("transaction.state.log.min.isr", "2"),
    ("transaction.state.log.segment.bytes", "104857600"),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "10000",
    ),
    (
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        "3600000",
    ),
];

/// Idempotent and transactional producers (Kafka's `producer.id.*` and
/// `transaction.*`).
#[derive(Debug, Clone)]
pub struct TransactionConfig {
    /// `producer.id.expiration.ms`: a producer silent this long (and with no
    /// open transaction) is forgotten by the partitions it wrote to.
    pub producer_id_expiration_ms: i64,
    pub producer_id_expiration_check_interval_ms: u64,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a
    /// producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: a transactional id unused this
    /// long is forgotten by its coordinator.
    pub transactional_id_expiration_ms: i64,
    /// `transaction.state.log.*`: the `__transaction_state` topic.
    pub state_log_partitions: i32,
    pub state_log_replication_factor: i16,
    pub state_log_min_isr: usize,
    pub state_log_segment_bytes: u64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`
    pub abort_timed_out_interval_ms: u64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`
    pub remove_expired_interval_ms: u64,
}

impl TransactionConfig {
    pub(super) fn from_properties(properties: &Properties) -> anyhow::Result<TransactionConfig> {
        Ok(TransactionConfig {
            producer_id_expiration_ms: properties.positive("producer.id.expiration.ms")?,
            producer_id_expiration_check_interval_ms: properties
                .positive("producer.id.expiration.check.interval.ms")?,
            max_timeout_ms: properties.positive("transaction.max.timeout.ms")?,
            transactional_id_expiration_ms: properties
                .positive("transactional.id.expiration.ms")?,
            state_log_partitions: properties.positive("transaction.state.log.num.partitions")?,
            state_log_replication_factor: properties
                .positive("transaction.state.log.replication.factor")?,
            state_log_min_isr: properties.positive("transaction.state.log.min.isr")?,
            state_log_segment_bytes: properties.positive("transaction.state.log.segment.bytes")?,
            abort_timed_out_interval_ms: properties
                .positive("transaction.abort.timed.out.transaction.cleanup.interval.ms")?,
            remove_expired_interval_ms: properties
                .positive("transaction.remove.expired.transaction.cleanup.interval.ms")?,
        })
    }
}
