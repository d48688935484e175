//! `kbroker`: parses the command line and runs the broker.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use broker::broker::Broker;
use broker::config::BrokerConfig;
use clap::Parser;
use coordinator::etcd::{ControllerConfig, EtcdConfig, EtcdStore};
use coordinator::MetadataStore;
use tokio_util::sync::CancellationToken;

/// A Kafka-compatible broker.
///
/// Configuration uses Apache Kafka's property names, from an optional
/// properties file and `--override key=value` arguments, as
/// `kafka-server-start.sh server.properties --override key=value` does.
/// With no arguments it listens on port 9092 and keeps its data in ./data.
///
/// `kbroker admin --help` shows the admin tool (topics and consumer groups).
#[derive(Debug, Parser)]
#[command(name = "kbroker", version)]
struct Arguments {
    /// A server.properties file.
    config: Option<PathBuf>,
    /// A `key=value` property that overrides the file (repeatable).
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

/// Writes what a cluster needs before its first start: SCRAM credentials
/// (as `kafka-storage.sh format --add-scram`), into etcd when
/// `etcd.endpoints` is set, else into the data directory.
#[derive(Debug, Parser)]
#[command(name = "kbroker format")]
struct Format {
    /// The broker's server.properties (for etcd.endpoints, etcd.prefix, log.dirs).
    config: Option<PathBuf>,
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// `SCRAM-SHA-256=[name=alice,password=alice-secret]` (repeatable;
    /// `iterations=N` optional, 4096 by default).
    #[arg(
        long = "add-scram",
        value_name = "MECHANISM=[name=..,password=..]",
        required = true
    )]
    add_scram: Vec<String>,
}

fn format(arguments: &Format) -> anyhow::Result<()> {
    let config = BrokerConfig::load(arguments.config.as_deref(), &arguments.overrides)?;
    let changes = arguments
        .add_scram
        .iter()
        .map(|argument| broker::format::parse_add_scram(argument))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(broker::format::add_scram(&config, changes))
}

fn main() -> anyhow::Result<()> {
    // `kbroker admin ...` is the admin tool.
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("admin") {
        admin::main(args.skip(1));
    }
    if args.peek().map(String::as_str) == Some("format") {
        return format(&Format::parse_from(std::env::args().skip(1)));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let arguments = Arguments::parse();
    let config = BrokerConfig::load(arguments.config.as_deref(), &arguments.overrides)?;
    tracing::info!(node_id = config.node_id, log_dir = %config.log_dir.display(), "starting");
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let store = tokio::select! {
            store = open_store(&config) => store?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let opening = config.clone();
        let broker = tokio::task::spawn_blocking(move || Broker::open(opening, store))
            .await?
            .context("opening logs")?;
        broker::server::run(Arc::new(broker), shutdown).await
    })
}

/// The metadata store: etcd when `etcd.endpoints` is set (waiting, and
/// saying so, until etcd answers), else the file in the data directory.
async fn open_store(config: &BrokerConfig) -> anyhow::Result<Arc<dyn MetadataStore>> {
    let Some(cluster) = &config.cluster else {
        tracing::info!("standalone mode: no etcd.endpoints, metadata in the data directory");
        let store = coordinator::StandaloneStore::open(&config.log_dir, config.registration())
            .context("opening metadata")?;
        return Ok(Arc::new(store));
    };
    tracing::info!(endpoints = ?cluster.etcd_endpoints, prefix = %cluster.etcd_prefix, "cluster mode: joining through etcd");
    let store = EtcdStore::connect(EtcdConfig {
        endpoints: cluster.etcd_endpoints.clone(),
        prefix: cluster.etcd_prefix.clone(),
        session_timeout: Duration::from_millis(cluster.session_timeout_ms),
        heartbeat_interval: Duration::from_millis(cluster.heartbeat_interval_ms),
        registration: config.registration(),
        data_dir: config.log_dir.clone(),
        controller: ControllerConfig {
            unclean_leader_election: config.replication.unclean_leader_election_enable,
            auto_leader_rebalance: config.replication.auto_leader_rebalance_enable,
            leader_imbalance_check_interval: Duration::from_secs(
                config.replication.leader_imbalance_check_interval_seconds,
            ),
            leader_imbalance_percentage: config.replication.leader_imbalance_per_broker_percentage,
        },
    })
    .await
    .context("connecting to etcd")?;
    Ok(Arc::new(store))
}

/// Every segment holds its log file open, and every connection a socket:
/// raise the soft limit on open files to the hard one, as Kafka's operators
/// are told to (`ulimit -n`).
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open files limit"),
            Err(error) => {
                tracing::warn!(%error, soft, hard, "could not raise the open files limit");
            }
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open files limit"),
        Err(error) => tracing::warn!(%error, "could not read the open files limit"),
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
