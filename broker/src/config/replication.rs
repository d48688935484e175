//! Replication and leadership (`replica.*`, `min.insync.replicas`,
//! `unclean.leader.election.enable`, `auto.leader.rebalance.enable`,
//! `leader.imbalance.*`).

use super::properties::Properties;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("unclean.leader.election.enable", "false"),
    ("auto.leader.rebalance.enable", "true"),
    ("leader.imbalance.check.interval.seconds", "300"),
    ("leader.imbalance.per.broker.percentage", "10"),
    ("min.insync.replicas", "1"),
    ("replica.lag.time.max.ms", "30000"),
    ("replica.fetch.wait.max.ms", "500"),
    ("replica.fetch.max.bytes", "1048576"),
    ("replica.fetch.response.max.bytes", "10485760"),
    ("replica.high.watermark.checkpoint.interval.ms", "5000"),
];

#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// `unclean.leader.election.enable`: the default for topics.
    pub unclean_leader_election_enable: bool,
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_seconds: u64,
    pub leader_imbalance_per_broker_percentage: u32,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for
    /// this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `min.insync.replicas`: the default for topics.
    pub min_insync_replicas: usize,
    /// `replica.fetch.*`: how followers fetch.
    pub replica_fetch: ReplicaFetchConfig,
    /// `replica.high.watermark.checkpoint.interval.ms`
    pub high_watermark_checkpoint_interval_ms: u64,
}

/// The replica fetchers' settings (Kafka's `replica.fetch.*`).
#[derive(Debug, Clone, Copy)]
pub struct ReplicaFetchConfig {
    /// `replica.fetch.wait.max.ms`
    pub wait_max_ms: i32,
    /// `replica.fetch.max.bytes`: per partition.
    pub partition_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`
    pub response_max_bytes: i32,
}

impl ReplicationConfig {
    pub(super) fn from_properties(properties: &Properties) -> anyhow::Result<ReplicationConfig> {
        Ok(ReplicationConfig {
            unclean_leader_election_enable: properties.bool("unclean.leader.election.enable")?,
            auto_leader_rebalance_enable: properties.bool("auto.leader.rebalance.enable")?,
            leader_imbalance_check_interval_seconds: properties
                .positive("leader.imbalance.check.interval.seconds")?,
            leader_imbalance_per_broker_percentage: properties
                .int_in("leader.imbalance.per.broker.percentage", 0..=100)?,
            replica_lag_time_max_ms: properties.positive("replica.lag.time.max.ms")?,
            min_insync_replicas: properties.positive("min.insync.replicas")?,
            replica_fetch: ReplicaFetchConfig {
                wait_max_ms: properties.positive("replica.fetch.wait.max.ms")?,
                partition_max_bytes: properties.positive("replica.fetch.max.bytes")?,
                response_max_bytes: properties.positive("replica.fetch.response.max.bytes")?,
            },
            high_watermark_checkpoint_interval_ms: properties
                .positive("replica.high.watermark.checkpoint.interval.ms")?,
        })
    }
}
