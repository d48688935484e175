//! Broker configuration with Apache Kafka's property names and defaults.
//!
//! Sources, later ones winning: built-in defaults, a Java-style properties
//! file, then `--override key=value` arguments (as `kafka-server-start.sh
//! server.properties --override key=value`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use storage::{LogConfig, TimestampType};

/// A listener such as `PLAINTEXT://127.0.0.1:9092`. An empty host binds every interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    fn parse(text: &str) -> anyhow::Result<Listener> {
        let (name, address) = text
            .split_once("://")
            .with_context(|| format!("listener {text:?} lacks NAME://"))?;
        let (host, port) = address
            .rsplit_once(':')
            .with_context(|| format!("listener {text:?} lacks :PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port
            .parse()
            .with_context(|| format!("listener {text:?} has a bad port"))?;
        Ok(Listener {
            name: name.to_string(),
            host: host.to_string(),
            port,
        })
    }

    /// The address to bind: an empty host means every interface.
    pub fn bind_address(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// `broker.rack`: replicas of a partition go to different racks.
    pub rack: Option<String>,
    pub listeners: Vec<Listener>,
    /// What Metadata tells clients to connect to, one per listener (by
    /// name): a client is told the addresses of the listener it came in on.
    pub advertised_listeners: Vec<Listener>,
    /// `inter.broker.listener.name`: the listener other brokers use.
    pub inter_broker_listener: String,
    /// Cluster mode, when `etcd.endpoints` is set; standalone otherwise.
    pub cluster: Option<ClusterConfig>,
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
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    /// Upper bound on the record bytes of one fetch response, whatever the client asks.
    pub fetch_max_bytes: usize,
    pub log_retention_check_interval_ms: u64,
    /// `log.cleaner.enable`: whether compacted topics are cleaned.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: the pause between cleaner passes.
    pub log_cleaner_backoff_ms: u64,
    /// The broker-wide defaults of every topic's log config.
    pub log: LogConfig,
    pub groups: GroupConfig,
    pub transactions: TransactionConfig,
    /// The known properties given in the file or as overrides (Kafka's
    /// STATIC_BROKER_CONFIG), by canonical name.
    pub explicit: BTreeMap<String, String>,
}

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

/// Every property we read, with Kafka's default. Unknown keys are warned about.
const DEFAULTS: &[(&str, &str)] = &[
    ("node.id", "1"),
    ("broker.rack", ""),
    ("listeners", "PLAINTEXT://:9092"),
    ("advertised.listeners", ""),
    ("inter.broker.listener.name", ""),
    ("listener.security.protocol.map", ""),
    ("etcd.endpoints", ""),
    ("etcd.prefix", "/kbroker"),
    ("broker.session.timeout.ms", "9000"),
    ("broker.heartbeat.interval.ms", "2000"),
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
    ("log.dirs", ""),
    ("log.dir", "./data"),
    ("num.partitions", "1"),
    ("default.replication.factor", "1"),
    ("auto.create.topics.enable", "true"),
    ("socket.request.max.bytes", "104857600"),
    ("max.connections", "10000"),
    ("fetch.max.bytes", "57671680"),
    ("message.max.bytes", "1048588"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.ms", ""),
    ("log.roll.hours", "168"),
    ("log.retention.ms", ""),
    ("log.retention.minutes", ""),
    ("log.retention.hours", "168"),
    ("log.retention.bytes", "-1"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.index.interval.bytes", "4096"),
    ("log.flush.interval.messages", "9223372036854775807"),
    ("log.flush.interval.ms", ""),
    ("log.message.timestamp.type", "CreateTime"),
    ("log.cleanup.policy", "delete"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.backoff.ms", "15000"),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("log.cleaner.max.compaction.lag.ms", "9223372036854775807"),
    ("log.message.timestamp.before.max.ms", "9223372036854775807"),
    ("log.message.timestamp.after.max.ms", "9223372036854775807"),
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

/// Keys accepted as synonyms of ones above.
const ALIASES: &[(&str, &str)] = &[("broker.id", "node.id")];

/// Properties Kafka knows that we accept and ignore (so common server.properties files load).
const IGNORED: &[&str] = &[
    "process.roles",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "controller.listener.names",
    "num.network.threads",
    "num.io.threads",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "num.recovery.threads.per.data.dir",
    "zookeeper.connect",
    "zookeeper.connection.timeout.ms",
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

/// Every broker property we know, with Kafka's default.
pub fn known_properties() -> impl Iterator<Item = (&'static str, &'static str)> {
    DEFAULTS.iter().copied()
}

impl BrokerConfig {
    /// What this broker registers: its id, rack and advertised listeners.
    pub fn registration(&self) -> coordinator::BrokerRegistration {
        coordinator::BrokerRegistration {
            node_id: self.node_id,
            rack: self.rack.clone(),
            endpoints: self
                .advertised_listeners
                .iter()
                .map(|listener| coordinator::Endpoint {
                    listener: listener.name.clone(),
                    host: listener.host.clone(),
                    port: listener.port,
                })
                .collect(),
            inter_broker_listener: self.inter_broker_listener.clone(),
            epoch: 0,
        }
    }

    /// The topic-config defaults once dynamic broker configs (the cluster's
    /// `cluster`, then this broker's own `broker`, which wins) are applied
    /// over the static ones. Errors name the offending property.
    pub fn log_with_dynamic(
        &self,
        cluster: Option<&BTreeMap<String, String>>,
        broker: Option<&BTreeMap<String, String>>,
    ) -> anyhow::Result<LogConfig> {
        let mut properties = self.explicit.clone();
        for dynamic in [cluster, broker].into_iter().flatten() {
            properties.extend(dynamic.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(BrokerConfig::from_properties(properties)?.log)
    }

    /// Loads the properties file (if any) and applies `key=value` overrides.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> anyhow::Result<BrokerConfig> {
        let mut properties = BTreeMap::new();
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            properties.extend(parse_properties(&text));
        }
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .with_context(|| format!("--override {item:?} is not key=value"))?;
            properties.insert(key.trim().to_string(), value.trim().to_string());
        }
        Self::from_properties(properties)
    }

    pub fn from_properties(given: BTreeMap<String, String>) -> anyhow::Result<BrokerConfig> {
        let mut properties: BTreeMap<String, String> = DEFAULTS
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let mut explicit = BTreeMap::new();
        for (key, value) in given {
            let key = ALIASES
                .iter()
                .find(|(alias, _)| *alias == key)
                .map_or(key, |(_, name)| name.to_string());
            if let Some(slot) = properties.get_mut(&key) {
                explicit.insert(key.clone(), value.clone());
                *slot = value;
            } else if IGNORED.contains(&key.as_str()) {
                tracing::debug!(%key, "configuration accepted and ignored");
            } else {
                tracing::warn!(%key, "the configuration was supplied but isn't a known config");
            }
        }
        let get = |key: &str| properties.get(key).map(String::as_str).unwrap_or("");
        let number = |key: &str| -> anyhow::Result<i64> {
            get(key)
                .parse::<i64>()
                .with_context(|| format!("{key}={:?} is not a number", get(key)))
        };
        let optional = |key: &str| -> anyhow::Result<Option<i64>> {
            if get(key).is_empty() {
                Ok(None)
            } else {
                number(key).map(Some)
            }
        };

        let listeners = get("listeners")
            .split(',')
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(Listener::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if listeners.is_empty() {
            bail!("listeners is empty")
        }
        let mut names = std::collections::BTreeSet::new();
        for listener in &listeners {
            if !names.insert(listener.name.as_str()) {
                bail!("listeners names {} twice", listener.name);
            }
        }
        let protocols = parse_protocol_map(get("listener.security.protocol.map"))?;
        for listener in &listeners {
            let protocol = protocols
                .get(&listener.name)
                .map(String::as_str)
                .unwrap_or(listener.name.as_str());
            if protocol != "PLAINTEXT" {
                bail!(
                    "listener {} uses security protocol {protocol}; only PLAINTEXT is supported (map other names with listener.security.protocol.map, e.g. INTERNAL:PLAINTEXT)",
                    listener.name
                );
            }
        }
        let advertised_given = get("advertised.listeners")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Listener::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(unknown) = advertised_given
            .iter()
            .find(|a| !listeners.iter().any(|l| l.name == a.name))
        {
            bail!(
                "advertised.listeners names {}, which is not in listeners",
                unknown.name
            );
        }
        let advertised_listeners: Vec<Listener> = listeners
            .iter()
            .map(|listener| {
                match advertised_given.iter().find(|a| a.name == listener.name) {
                    Some(advertised) => advertised.clone(),
                    // Kafka advertises the canonical host name; a quick start on one
                    // machine is better served by localhost.
                    None if listener.host.is_empty() || listener.host == "0.0.0.0" => Listener {
                        host: "localhost".into(),
                        ..listener.clone()
                    },
                    None => listener.clone(),
                }
            })
            .collect();
        let inter_broker_listener = match get("inter.broker.listener.name") {
            "" => listeners[0].name.clone(),
            name if listeners.iter().any(|l| l.name == name) => name.to_string(),
            name => bail!("inter.broker.listener.name={name} is not in listeners"),
        };
        let cluster = match get("etcd.endpoints").trim() {
            "" => None,
            endpoints => {
                let session_timeout_ms = positive(
                    number("broker.session.timeout.ms")?,
                    "broker.session.timeout.ms",
                )?;
                let heartbeat_interval_ms = positive(
                    number("broker.heartbeat.interval.ms")?,
                    "broker.heartbeat.interval.ms",
                )?;
                if session_timeout_ms < 2000 {
                    bail!(
                        "broker.session.timeout.ms must be at least 2000 (etcd's shortest lease)"
                    );
                }
                if heartbeat_interval_ms * 2 > session_timeout_ms {
                    bail!("broker.heartbeat.interval.ms must be at most half of broker.session.timeout.ms");
                }
                Some(ClusterConfig {
                    etcd_endpoints: endpoints
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                        .collect(),
                    etcd_prefix: get("etcd.prefix").to_string(),
                    session_timeout_ms,
                    heartbeat_interval_ms,
                })
            }
        };
        let log_dirs = if get("log.dirs").is_empty() {
            get("log.dir")
        } else {
            get("log.dirs")
        };
        let log_dirs: Vec<&str> = log_dirs
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let [log_dir] = log_dirs[..] else {
            bail!("exactly one log directory is supported, got {log_dirs:?}")
        };

        let retention_ms = match (
            optional("log.retention.ms")?,
            optional("log.retention.minutes")?,
        ) {
            (Some(ms), _) => ms,
            (None, Some(minutes)) => minutes * 60_000,
            (None, None) => number("log.retention.hours")? * 3_600_000,
        };
        let segment_ms = match optional("log.roll.ms")? {
            Some(ms) => ms,
            None => number("log.roll.hours")? * 3_600_000,
        };
        let message_timestamp_type = match get("log.message.timestamp.type") {
            "CreateTime" => TimestampType::CreateTime,
            "LogAppendTime" => TimestampType::LogAppendTime,
            other => bail!(
                "log.message.timestamp.type={other:?} is neither CreateTime nor LogAppendTime"
            ),
        };
        let cleanup_policy: Vec<&str> = get("log.cleanup.policy")
            .split(',')
            .map(str::trim)
            .collect();
        if cleanup_policy
            .iter()
            .any(|policy| *policy != "delete" && *policy != "compact")
        {
            bail!("log.cleanup.policy={cleanup_policy:?}: only delete and compact are known");
        }
        let min_cleanable_dirty_ratio: f64 = get("log.cleaner.min.cleanable.ratio")
            .parse()
            .ok()
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .context("log.cleaner.min.cleanable.ratio must be a number in [0, 1]")?;
        let log = LogConfig {
            segment_bytes: positive(number("log.segment.bytes")?, "log.segment.bytes")?,
            segment_ms,
            index_interval_bytes: u32::try_from(number("log.index.interval.bytes")?)
                .context("log.index.interval.bytes")?,
            retention_ms,
            retention_bytes: number("log.retention.bytes")?,
            max_message_bytes: u32::try_from(number("message.max.bytes")?)
                .context("message.max.bytes")?,
            message_timestamp_type,
            cleanup_delete: cleanup_policy.contains(&"delete"),
            cleanup_compact: cleanup_policy.contains(&"compact"),
            min_cleanable_dirty_ratio,
            delete_retention_ms: number("log.cleaner.delete.retention.ms")?,
            min_compaction_lag_ms: number("log.cleaner.min.compaction.lag.ms")?,
            max_compaction_lag_ms: number("log.cleaner.max.compaction.lag.ms")?,
            timestamp_before_max_ms: number("log.message.timestamp.before.max.ms")?,
            timestamp_after_max_ms: number("log.message.timestamp.after.max.ms")?,
            flush_messages: positive(
                number("log.flush.interval.messages")?,
                "log.flush.interval.messages",
            )?,
            flush_ms: optional("log.flush.interval.ms")?.unwrap_or(i64::MAX),
        };
        let num_partitions = i32::try_from(number("num.partitions")?).context("num.partitions")?;
        if num_partitions < 1 {
            bail!("num.partitions must be at least 1");
        }
        let node_id = i32::try_from(number("node.id")?).context("node.id")?;
        if node_id < 0 {
            bail!("node.id must not be negative");
        }
        Ok(BrokerConfig {
            node_id,
            rack: Some(get("broker.rack").to_string()).filter(|rack| !rack.is_empty()),
            listeners,
            advertised_listeners,
            inter_broker_listener,
            cluster,
            unclean_leader_election_enable: parse_bool(
                get("unclean.leader.election.enable"),
                "unclean.leader.election.enable",
            )?,
            auto_leader_rebalance_enable: parse_bool(
                get("auto.leader.rebalance.enable"),
                "auto.leader.rebalance.enable",
            )?,
            leader_imbalance_check_interval_seconds: positive(
                number("leader.imbalance.check.interval.seconds")?,
                "leader.imbalance.check.interval.seconds",
            )?,
            leader_imbalance_per_broker_percentage: u32::try_from(number(
                "leader.imbalance.per.broker.percentage",
            )?)
            .ok()
            .filter(|percentage| *percentage <= 100)
            .context("leader.imbalance.per.broker.percentage must be 0 to 100")?,
            replica_lag_time_max_ms: positive(
                number("replica.lag.time.max.ms")?,
                "replica.lag.time.max.ms",
            )?,
            min_insync_replicas: positive(number("min.insync.replicas")?, "min.insync.replicas")?
                as usize,
            replica_fetch: ReplicaFetchConfig {
                wait_max_ms: i32::try_from(positive(
                    number("replica.fetch.wait.max.ms")?,
                    "replica.fetch.wait.max.ms",
                )?)
                .context("replica.fetch.wait.max.ms")?,
                partition_max_bytes: i32::try_from(positive(
                    number("replica.fetch.max.bytes")?,
                    "replica.fetch.max.bytes",
                )?)
                .context("replica.fetch.max.bytes")?,
                response_max_bytes: i32::try_from(positive(
                    number("replica.fetch.response.max.bytes")?,
                    "replica.fetch.response.max.bytes",
                )?)
                .context("replica.fetch.response.max.bytes")?,
            },
            high_watermark_checkpoint_interval_ms: positive(
                number("replica.high.watermark.checkpoint.interval.ms")?,
                "replica.high.watermark.checkpoint.interval.ms",
            )?,
            log_dir: PathBuf::from(log_dir),
            num_partitions,
            default_replication_factor: i16::try_from(number("default.replication.factor")?)
                .context("default.replication.factor")?,
            auto_create_topics_enable: parse_bool(
                get("auto.create.topics.enable"),
                "auto.create.topics.enable",
            )?,
            socket_request_max_bytes: positive(
                number("socket.request.max.bytes")?,
                "socket.request.max.bytes",
            )? as usize,
            max_connections: positive(number("max.connections")?, "max.connections")? as usize,
            fetch_max_bytes: positive(number("fetch.max.bytes")?, "fetch.max.bytes")? as usize,
            log_cleaner_enable: parse_bool(get("log.cleaner.enable"), "log.cleaner.enable")?,
            log_cleaner_backoff_ms: positive(
                number("log.cleaner.backoff.ms")?,
                "log.cleaner.backoff.ms",
            )?,
            log_retention_check_interval_ms: positive(
                number("log.retention.check.interval.ms")?,
                "log.retention.check.interval.ms",
            )?,
            log,
            groups: GroupConfig {
                offsets_topic_replication_factor: i16::try_from(positive(
                    number("offsets.topic.replication.factor")?,
                    "offsets.topic.replication.factor",
                )?)
                .context("offsets.topic.replication.factor")?,
                initial_rebalance_delay_ms: u64::try_from(number(
                    "group.initial.rebalance.delay.ms",
                )?)
                .context("group.initial.rebalance.delay.ms")?,
                min_session_timeout_ms: i32::try_from(number("group.min.session.timeout.ms")?)
                    .context("group.min.session.timeout.ms")?,
                max_session_timeout_ms: i32::try_from(number("group.max.session.timeout.ms")?)
                    .context("group.max.session.timeout.ms")?,
                max_size: positive(number("group.max.size")?, "group.max.size")? as usize,
                offsets_topic_partitions: i32::try_from(positive(
                    number("offsets.topic.num.partitions")?,
                    "offsets.topic.num.partitions",
                )?)
                .context("offsets.topic.num.partitions")?,
                offsets_topic_segment_bytes: positive(
                    number("offsets.topic.segment.bytes")?,
                    "offsets.topic.segment.bytes",
                )?,
                offsets_retention_ms: positive(
                    number("offsets.retention.minutes")?,
                    "offsets.retention.minutes",
                )? as i64
                    * 60_000,
                offsets_retention_check_interval_ms: positive(
                    number("offsets.retention.check.interval.ms")?,
                    "offsets.retention.check.interval.ms",
                )?,
                offset_metadata_max_bytes: u32::try_from(number("offset.metadata.max.bytes")?)
                    .context("offset.metadata.max.bytes")?
                    as usize,
            },
            transactions: TransactionConfig {
                producer_id_expiration_ms: positive(
                    number("producer.id.expiration.ms")?,
                    "producer.id.expiration.ms",
                )? as i64,
                producer_id_expiration_check_interval_ms: positive(
                    number("producer.id.expiration.check.interval.ms")?,
                    "producer.id.expiration.check.interval.ms",
                )?,
                max_timeout_ms: i32::try_from(positive(
                    number("transaction.max.timeout.ms")?,
                    "transaction.max.timeout.ms",
                )?)
                .context("transaction.max.timeout.ms")?,
                transactional_id_expiration_ms: positive(
                    number("transactional.id.expiration.ms")?,
                    "transactional.id.expiration.ms",
                )? as i64,
                state_log_partitions: i32::try_from(positive(
                    number("transaction.state.log.num.partitions")?,
                    "transaction.state.log.num.partitions",
                )?)
                .context("transaction.state.log.num.partitions")?,
                state_log_replication_factor: i16::try_from(positive(
                    number("transaction.state.log.replication.factor")?,
                    "transaction.state.log.replication.factor",
                )?)
                .context("transaction.state.log.replication.factor")?,
                state_log_min_isr: positive(
                    number("transaction.state.log.min.isr")?,
                    "transaction.state.log.min.isr",
                )? as usize,
                state_log_segment_bytes: positive(
                    number("transaction.state.log.segment.bytes")?,
                    "transaction.state.log.segment.bytes",
                )?,
                abort_timed_out_interval_ms: positive(
                    number("transaction.abort.timed.out.transaction.cleanup.interval.ms")?,
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                )?,
                remove_expired_interval_ms: positive(
                    number("transaction.remove.expired.transaction.cleanup.interval.ms")?,
                    "transaction.remove.expired.transaction.cleanup.interval.ms",
                )?,
            },
            explicit,
        })
    }
}

/// `NAME:PROTOCOL,...`
fn parse_protocol_map(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (name, protocol) = entry.split_once(':').with_context(|| {
                format!("listener.security.protocol.map entry {entry:?} is not NAME:PROTOCOL")
            })?;
            Ok((
                name.trim().to_string(),
                protocol.trim().to_ascii_uppercase(),
            ))
        })
        .collect()
}

fn positive(value: i64, key: &str) -> anyhow::Result<u64> {
    if value <= 0 {
        bail!("{key} must be positive, got {value}");
    }
    Ok(value as u64)
}

fn parse_bool(text: &str, key: &str) -> anyhow::Result<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => bail!("{key}={text:?} is not true or false"),
    }
}

/// Parses Java properties: `key=value`, `key: value` or `key value`;
/// `#` and `!` comments; a trailing backslash continues the line.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut properties = BTreeMap::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            logical.push_str(continued);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let split = entry.find(['=', ':', ' ', '\t']).unwrap_or(entry.len());
        let key = entry[..split].trim();
        let value = entry[split..].trim_start_matches([' ', '\t']);
        let value = value.strip_prefix(['=', ':']).unwrap_or(value).trim();
        properties.insert(key.to_string(), value.to_string());
    }
    properties
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> anyhow::Result<BrokerConfig> {
        BrokerConfig::from_properties(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_listen_on_9092_with_a_local_data_dir() {
        let config = config(&[]).unwrap();
        assert_eq!(config.listeners[0].bind_address(), "0.0.0.0:9092");
        assert_eq!(config.advertised_listeners[0].host, "localhost");
        assert!(
            config.cluster.is_none(),
            "standalone without etcd.endpoints"
        );
        assert_eq!(config.log_dir, PathBuf::from("./data"));
        assert_eq!(config.log.retention_ms, 168 * 3_600_000);
        assert_eq!(config.log.max_message_bytes, 1_048_588);
        assert_eq!(config.socket_request_max_bytes, 100 * 1024 * 1024);
        assert!(config.auto_create_topics_enable);
    }

    #[test]
    fn kafka_precedence_of_retention_and_roll_settings() {
        let config = config(&[
            ("log.retention.minutes", "2"),
            ("log.roll.ms", "5000"),
            ("broker.id", "7"),
        ])
        .unwrap();
        assert_eq!(config.log.retention_ms, 120_000);
        assert_eq!(config.log.segment_ms, 5000);
        assert_eq!(config.node_id, 7);
        let config =
            super::tests::config(&[("log.retention.ms", "10"), ("log.retention.minutes", "2")])
                .unwrap();
        assert_eq!(config.log.retention_ms, 10);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(config(&[("num.partitions", "zero")]).is_err());
        assert!(config(&[("num.partitions", "0")]).is_err());
        assert!(config(&[("listeners", "nonsense")]).is_err());
        assert!(config(&[("log.dirs", "/a,/b")]).is_err());
        assert!(config(&[("auto.create.topics.enable", "yes")]).is_err());
    }

    #[test]
    fn listeners_are_advertised_by_name() {
        let config = config(&[
            (
                "listeners",
                "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092",
            ),
            (
                "advertised.listeners",
                "EXTERNAL://127.0.0.1:19092,INTERNAL://broker1:9092",
            ),
            (
                "listener.security.protocol.map",
                "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
            ),
            ("inter.broker.listener.name", "INTERNAL"),
            ("etcd.endpoints", "http://etcd1:2379, http://etcd2:2379"),
        ])
        .unwrap();
        let by_name = |name: &str| {
            config
                .advertised_listeners
                .iter()
                .find(|l| l.name == name)
                .cloned()
                .unwrap()
        };
        assert_eq!(
            (by_name("INTERNAL").host, by_name("INTERNAL").port),
            ("broker1".to_string(), 9092)
        );
        assert_eq!(by_name("EXTERNAL").host, "127.0.0.1");
        assert_eq!(config.inter_broker_listener, "INTERNAL");
        let cluster = config.cluster.unwrap();
        assert_eq!(
            cluster.etcd_endpoints,
            ["http://etcd1:2379", "http://etcd2:2379"]
        );
        assert_eq!(cluster.session_timeout_ms, 9000);
        assert!(super::tests::config(&[("listeners", "SSL://:9093")]).is_err());
        assert!(super::tests::config(&[("advertised.listeners", "OTHER://h:1")]).is_err());
        assert!(super::tests::config(&[
            ("etcd.endpoints", "http://e:2379"),
            ("broker.session.timeout.ms", "3000"),
            ("broker.heartbeat.interval.ms", "2000"),
        ])
        .is_err());
    }

    #[test]
    fn properties_syntax() {
        let parsed = parse_properties("# comment\n! other\na=1\nb: 2\nc 3\nlong=x,\\\n  y\n\n");
        assert_eq!(parsed["a"], "1");
        assert_eq!(parsed["b"], "2");
        assert_eq!(parsed["c"], "3");
        assert_eq!(parsed["long"], "x,y");
    }
}
