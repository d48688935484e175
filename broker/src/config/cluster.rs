//! Cluster mode on etcd (`etcd.*`, `broker.session.timeout.ms`,
//! `broker.heartbeat.interval.ms`).

use anyhow::bail;

use super::properties::Properties;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("etcd.endpoints", ""),
    ("etcd.prefix", "/kbroker"),
    ("broker.session.timeout.ms", "9000"),
    ("broker.heartbeat.interval.ms", "2000"),
];

/// How a broker joins a cluster on etcd.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `etcd.endpoints`: comma-separated URLs, e.g. `http://127.0.0.1:2379`.
    pub etcd_endpoints: Vec<String>,
    /// `etcd.prefix`: the cluster's keys, so that clusters can share an etcd.
    pub etcd_prefix: String,
    /// `broker.session.timeout.ms`: a broker whose session is silent this
    /// long is dead to the cluster (the etcd lease TTL).
    pub session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`: how often the session is kept alive.
    pub heartbeat_interval_ms: u64,
}

impl ClusterConfig {
    /// `None` (standalone) unless `etcd.endpoints` is set.
    pub(super) fn from_properties(
        properties: &Properties,
    ) -> anyhow::Result<Option<ClusterConfig>> {
        let etcd_endpoints = properties.list("etcd.endpoints");
        if etcd_endpoints.is_empty() {
            return Ok(None);
        }
        let session_timeout_ms: u64 = properties.positive("broker.session.timeout.ms")?;
        let heartbeat_interval_ms: u64 = properties.positive("broker.heartbeat.interval.ms")?;
        if session_timeout_ms < 2000 {
            bail!("broker.session.timeout.ms must be at least 2000 (etcd's shortest lease)");
        }
        if heartbeat_interval_ms * 2 > session_timeout_ms {
            bail!("broker.heartbeat.interval.ms must be at most half of broker.session.timeout.ms");
        }
        Ok(Some(ClusterConfig {
            etcd_endpoints: etcd_endpoints.into_iter().map(str::to_string).collect(),
            etcd_prefix: properties.text("etcd.prefix").to_string(),
            session_timeout_ms,
            heartbeat_interval_ms,
        }))
    }
}
