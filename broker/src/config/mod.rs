//! Broker configuration with Apache Kafka's property names and defaults.
//!
//! Sources, later ones winning: built-in defaults, a Java-style properties
//! file, then `--override key=value` arguments (as `kafka-server-start.sh
//! server.properties --override key=value`).
//!
//! One reader ([`properties::Properties`]) holds every known key with its
//! value; each section lists its keys with Kafka's defaults once, in its own
//! file, and builds its part of [`BrokerConfig`] from the properties on its
//! own: [`listeners`], [`cluster`] (etcd), [`replication`], [`log`] (the
//! topic-config defaults), [`groups`], [`transactions`]; the server's own
//! keys are below.

mod authorizer;
mod cluster;
mod groups;
mod listeners;
mod log;
mod properties;
mod replication;
mod sasl;
mod ssl;
mod transactions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use storage::LogConfig;

pub use authorizer::AuthorizerConfig;
pub use client::properties::parse as parse_properties;
pub use cluster::ClusterConfig;
pub use groups::GroupConfig;
pub use listeners::{Listener, SecurityProtocol};
pub use log::DYNAMIC_BROKER_CONFIGS;
use properties::Properties;
pub use replication::{ReplicaFetchConfig, ReplicationConfig};
pub use sasl::{InterBrokerSasl, Mechanism, SaslConfig};
pub use ssl::{
    dynamic_listener_ssl, is_dynamic_security_config, is_sensitive, ClientAuth, Keystore, Pem,
    PrincipalRule, Secret, SslConfig, TlsVersion,
};
pub use transactions::TransactionConfig;

/// The server's own keys (identity, data directory, topic creation,
/// request and connection limits, the log manager's tasks).
const SERVER_DEFAULTS: &[(&str, &str)] = &[
    ("node.id", "1"),
    ("broker.rack", ""),
    ("log.dirs", ""),
    ("log.dir", "./data"),
    ("num.partitions", "1"),
    ("default.replication.factor", "1"),
    ("auto.create.topics.enable", "true"),
    ("socket.request.max.bytes", "104857600"),
    ("max.connections", "10000"),
    ("fetch.max.bytes", "57671680"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.backoff.ms", "15000"),
    ("controlled.shutdown.enable", "true"),
    ("controlled.shutdown.max.retries", "3"),
    ("controlled.shutdown.retry.backoff.ms", "5000"),
    // Ours: where Prometheus scrapes. Unset: port 9404 on the host of the
    // first listener; empty: off.
    ("metrics.listener", ""),
];

/// Every section's table, in the order DescribeConfigs lists them.
const SECTIONS: &[&[(&str, &str)]] = &[
    SERVER_DEFAULTS,
    listeners::DEFAULTS,
    cluster::DEFAULTS,
    replication::DEFAULTS,
    ssl::DEFAULTS,
    sasl::DEFAULTS,
    authorizer::DEFAULTS,
    log::DEFAULTS,
    groups::DEFAULTS,
    transactions::DEFAULTS,
];

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
    /// How this broker authenticates to the others when the inter-broker
    /// listener is a SASL one.
    pub inter_broker_sasl: Option<InterBrokerSasl>,
    /// Cluster mode, when `etcd.endpoints` is set; standalone otherwise.
    pub cluster: Option<ClusterConfig>,
    pub replication: ReplicationConfig,
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
    /// `controlled.shutdown.enable`: on SIGTERM, hand leadership to other
    /// in-sync replicas before closing (cluster mode).
    pub controlled_shutdown_enable: bool,
    /// `controlled.shutdown.max.retries` × `controlled.shutdown.retry.backoff.ms`:
    /// the longest a controlled shutdown waits for leadership to move.
    pub controlled_shutdown_max_retries: u32,
    pub controlled_shutdown_retry_backoff_ms: u64,
    /// `metrics.listener`: the address the metrics HTTP listener binds
    /// (`host:port`); `None` when it is off.
    pub metrics_listener: Option<String>,
    /// The broker-wide defaults of every topic's log config.
    pub log: LogConfig,
    pub groups: GroupConfig,
    pub transactions: TransactionConfig,
    pub authorizer: AuthorizerConfig,
    /// The known properties given in the file or as overrides (Kafka's
    /// STATIC_BROKER_CONFIG), by canonical name.
    pub explicit: BTreeMap<String, String>,
}

/// Every broker property we know, with Kafka's default.
pub fn known_properties() -> impl Iterator<Item = (&'static str, &'static str)> {
    SECTIONS.iter().flat_map(|section| section.iter().copied())
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
            shutting_down: false,
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
        let mut given = self.explicit.clone();
        for dynamic in [cluster, broker].into_iter().flatten() {
            given.extend(dynamic.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        log::from_properties(&Properties::new(SECTIONS.iter().copied().flatten(), given))
    }

    /// The SSL settings of `listener` once dynamic broker configs (the
    /// cluster's, then this broker's) are applied over the static ones:
    /// `listener.name.<l>.ssl.*` changed through AlterConfigs (KIP-226).
    pub fn ssl_with_dynamic(
        &self,
        listener: &str,
        cluster: Option<&BTreeMap<String, String>>,
        broker: Option<&BTreeMap<String, String>>,
    ) -> anyhow::Result<SslConfig> {
        let mut given = self.explicit.clone();
        for dynamic in [cluster, broker].into_iter().flatten() {
            given.extend(dynamic.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        SslConfig::from_properties(
            &Properties::new(SECTIONS.iter().copied().flatten(), given),
            listener,
        )
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
        let properties = Properties::new(SECTIONS.iter().copied().flatten(), given);
        let listeners = listeners::Listeners::from_properties(&properties)?;
        let log_dirs = match properties.list("log.dirs") {
            dirs if dirs.is_empty() => properties.list("log.dir"),
            dirs => dirs,
        };
        let [log_dir] = log_dirs[..] else {
            bail!("exactly one log directory is supported, got {log_dirs:?}")
        };
        let node_id: i32 = properties.int("node.id")?;
        if node_id < 0 {
            bail!("node.id must not be negative");
        }
        let num_partitions: i32 = properties.int("num.partitions")?;
        if num_partitions < 1 {
            bail!("num.partitions must be at least 1");
        }
        let metrics_listener = metrics_listener(&properties, &listeners.listeners)?;
        Ok(BrokerConfig {
            node_id,
            rack: Some(properties.text("broker.rack").to_string()).filter(|rack| !rack.is_empty()),
            listeners: listeners.listeners,
            advertised_listeners: listeners.advertised,
            inter_broker_listener: listeners.inter_broker,
            inter_broker_sasl: listeners.inter_broker_sasl,
            cluster: ClusterConfig::from_properties(&properties)?,
            replication: ReplicationConfig::from_properties(&properties)?,
            log_dir: PathBuf::from(log_dir),
            num_partitions,
            default_replication_factor: properties.int("default.replication.factor")?,
            auto_create_topics_enable: properties.bool("auto.create.topics.enable")?,
            socket_request_max_bytes: properties.positive("socket.request.max.bytes")?,
            max_connections: properties.positive("max.connections")?,
            fetch_max_bytes: properties.positive("fetch.max.bytes")?,
            log_retention_check_interval_ms: properties
                .positive("log.retention.check.interval.ms")?,
            log_cleaner_enable: properties.bool("log.cleaner.enable")?,
            log_cleaner_backoff_ms: properties.positive("log.cleaner.backoff.ms")?,
            metrics_listener,
            controlled_shutdown_enable: properties.bool("controlled.shutdown.enable")?,
            controlled_shutdown_max_retries: properties
                .positive("controlled.shutdown.max.retries")?,
            controlled_shutdown_retry_backoff_ms: properties
                .positive("controlled.shutdown.retry.backoff.ms")?,
            log: log::from_properties(&properties)?,
            groups: GroupConfig::from_properties(&properties)?,
            transactions: TransactionConfig::from_properties(&properties)?,
            authorizer: AuthorizerConfig::from_properties(&properties)?,
            explicit: properties.explicit,
        })
    }
}

/// `metrics.listener`: `http://host:port`; unset, port 9404 on the host of
/// the first listener (brokers on 127.0.0.1, .2 and .3 do not collide);
/// empty, off.
fn metrics_listener(
    properties: &Properties,
    listeners: &[Listener],
) -> anyhow::Result<Option<String>> {
    const DEFAULT_PORT: u16 = 9404;
    let Some(given) = properties.explicit.get("metrics.listener") else {
        let host = listeners
            .first()
            .map(|listener| listener.host.as_str())
            .unwrap_or_default();
        return Ok(Some(listeners::bind_address(host, DEFAULT_PORT)));
    };
    let given = given.trim();
    if given.is_empty() {
        return Ok(None);
    }
    let Some(address) = given.strip_prefix("http://") else {
        bail!("metrics.listener={given}: give http://host:port (or nothing to turn it off)");
    };
    let address = address.trim_end_matches('/');
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("metrics.listener={given} lacks :PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("metrics.listener={given} has a bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Some(listeners::bind_address(host, port)))
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
    fn ssl_listeners_take_their_own_settings_over_the_plain_ones() {
        let config = config(&[
            ("listeners", "PLAINTEXT://:9092,SSL://:9093,SECURE://:9094"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,SSL:SSL,SECURE:SSL",
            ),
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", "/etc/kbroker/broker.pem"),
            ("ssl.key.password", "secret"),
            ("listener.name.secure.ssl.client.auth", "required"),
            ("listener.name.secure.ssl.truststore.type", "PEM"),
            (
                "listener.name.secure.ssl.truststore.location",
                "/etc/kbroker/ca.pem",
            ),
        ])
        .unwrap();
        let ssl = |name: &str| {
            config
                .listeners
                .iter()
                .find(|l| l.name == name)
                .unwrap()
                .ssl
                .clone()
        };
        assert!(ssl("PLAINTEXT").is_none());
        let open = ssl("SSL").unwrap();
        let secure = ssl("SECURE").unwrap();
        assert_eq!(open.client_auth, ClientAuth::None);
        assert!(open.truststore.is_none());
        assert_eq!(secure.client_auth, ClientAuth::Required);
        assert_eq!(
            secure.truststore,
            Some(Pem::File {
                property: "listener.name.secure.ssl.truststore.location".into(),
                path: "/etc/kbroker/ca.pem".into()
            })
        );
        assert_eq!(
            secure.key_password.as_ref().map(Secret::expose),
            Some("secret")
        );
        assert!(
            !format!("{secure:?}").contains("secret"),
            "Debug shows the password"
        );
        assert!(is_sensitive("ssl.key.password"));
        assert!(is_sensitive("listener.name.secure.ssl.keystore.key"));
        assert!(!is_sensitive("ssl.keystore.location"));
    }

    #[test]
    fn ssl_settings_that_cannot_work_are_errors_naming_the_property() {
        let error = |pairs: &[(&str, &str)]| {
            let mut all = vec![("listeners", "SSL://:9093")];
            all.extend_from_slice(pairs);
            format!("{:#}", config(&all).unwrap_err())
        };
        assert!(error(&[("ssl.keystore.location", "/k.jks")]).contains("ssl.keystore.type=JKS"));
        assert!(error(&[]).contains("ssl.keystore.location"));
        let pem = [
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", "/k.pem"),
        ];
        assert!(error(&[pem[0], pem[1], ("ssl.client.auth", "required")]).contains("truststore"));
        assert!(error(&[pem[0], pem[1], ("ssl.enabled.protocols", "TLSv1.1")]).contains("TLSv1.1"));
        assert!(error(&[pem[0], pem[1], ("ssl.client.auth", "maybe")]).contains("ssl.client.auth"));
        // Brokers speak TLS to each other, not SASL (yet).
        let mut cluster = vec![
            ("listeners", "SSL://:9093"),
            ("etcd.endpoints", "http://e:2379"),
        ];
        cluster.extend_from_slice(&pem);
        assert_eq!(config(&cluster).unwrap().inter_broker_listener, "SSL");
        let sasl = config(&[
            ("listeners", "SASL_PLAINTEXT://:9094"),
            ("etcd.endpoints", "http://e:2379"),
            ("sasl.enabled.mechanisms", "PLAIN"),
            (
                "listener.name.sasl_plaintext.plain.sasl.jaas.config",
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_a=\"b\";",
            ),
        ]);
        assert!(format!("{:#}", sasl.unwrap_err()).contains("inter-broker"));
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
