//! The TCP server: binds the listeners, joins the cluster, accepts
//! connections up to `max.connections`, applies cluster metadata as it
//! changes, runs the periodic log tasks, and shuts down cleanly on
//! cancellation.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::connection::{self, Session};
use crate::principal::ANONYMOUS;
use crate::tls::ReloadingAcceptor;

/// A client that has not finished its TLS handshake by then is dropped
/// (it holds a connection slot meanwhile).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's controlled shutdown, on etcd: this broker's registration says it
/// is shutting down, and the controller moves every partition it leads to
/// another in-sync replica and takes it out of the ISRs. It keeps serving
/// meanwhile (clients are answered NOT_LEADER_OR_FOLLOWER with the new
/// leader), waits until it leads nothing another replica could lead — at
/// most `controlled.shutdown.max.retries` × `controlled.shutdown.retry.backoff.ms`
/// — and until its own view has the new leaders, then lingers a moment
/// for the other brokers', which come from the same etcd events. What no
/// other in-sync replica can lead is logged and goes offline with it.
async fn controlled_shutdown(broker: &Arc<Broker>) {
    let config = &broker.config;
    if config.cluster.is_none() || !config.controlled_shutdown_enable {
        return;
    }
    if !broker.store().session_valid() {
        tracing::info!("controlled shutdown skipped: this broker cannot prove its etcd session (it leads nothing)");
        return;
    }
    let me = config.node_id;
    // (partitions another in-sync replica can take, those none can)
    let leading = |metadata: &coordinator::ClusterMetadata| {
        let mut movable = Vec::new();
        let mut stuck = Vec::new();
        for topic in metadata.topics.values() {
            for partition in topic.partitions.iter().filter(|p| p.leader == me) {
                let other = partition.isr.iter().any(|id| {
                    *id != me
                        && metadata
                            .brokers
                            .get(id)
                            .is_some_and(|broker| !broker.shutting_down)
                });
                let name = format!("{}-{}", topic.name, partition.partition);
                if other {
                    movable.push(name);
                } else {
                    stuck.push(name);
                }
            }
        }
        (movable, stuck)
    };
    let started = tokio::time::Instant::now();
    let budget = Duration::from_millis(
        config.controlled_shutdown_retry_backoff_ms
            * u64::from(config.controlled_shutdown_max_retries),
    );
    let deadline = started + budget;
    let (movable, _) = leading(&broker.metadata());
    tracing::info!(
        leading = movable.len(),
        "controlled shutdown: handing leadership to other in-sync replicas"
    );
    let mut attempts = 0;
    loop {
        attempts += 1;
        match broker.store().begin_controlled_shutdown().await {
            Ok(()) => break,
            Err(error) if attempts < config.controlled_shutdown_max_retries => {
                tracing::warn!(%error, attempts, "controlled shutdown: could not say so in the cluster metadata; retrying");
                tokio::time::sleep(Duration::from_millis(
                    config.controlled_shutdown_retry_backoff_ms,
                ))
                .await;
            }
            Err(error) => {
                tracing::warn!(%error, "controlled shutdown: could not say so in the cluster metadata; shutting down without it");
                return;
            }
        }
    }
    let stuck = loop {
        let (movable, stuck) = leading(&broker.metadata());
        if movable.is_empty() {
            break stuck;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(still_leading = ?movable, budget_ms = budget.as_millis() as u64, "controlled shutdown: leadership did not move in time; shutting down anyway");
            break stuck;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if !stuck.is_empty() {
        tracing::warn!(partitions = ?stuck, "controlled shutdown: no other in-sync replica can lead these; they go offline with this broker");
    }
    // This broker's own partitions learn the new leaders (its answers name
    // them); the other brokers apply the same etcd events meanwhile.
    let applying = broker.clone();
    let _ = tokio::task::spawn_blocking(move || applying.wait_applied()).await;
    tokio::time::sleep(CONTROLLED_SHUTDOWN_LINGER).await;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "controlled shutdown: leadership moved"
    );
}

/// How long a broker in controlled shutdown keeps answering after its
/// leadership moved: in-flight requests are answered with the new leaders,
/// and the others' watches deliver the change.
const CONTROLLED_SHUTDOWN_LINGER: Duration = Duration::from_millis(500);

/// Binds every listener, joins the cluster (registers this broker: from
/// now on it is alive to the others), then serves until `signal` (SIGTERM
/// or SIGINT). Then: a controlled shutdown (leadership handed to other
/// in-sync replicas while the listeners still answer); stop accepting, let
/// in-flight requests finish, leave the cluster (others take over what is
/// left at once), close the logs.
pub async fn run(broker: Arc<Broker>, signal: CancellationToken) -> anyhow::Result<()> {
    // What every task stops on: cancelled only once leadership has moved.
    let shutdown = CancellationToken::new();
    let mut listeners = Vec::new();
    for listener in &broker.config.listeners {
        // TLS material is read before anything binds: a listener that
        // cannot have it stops the broker, never falls back to plaintext.
        let tls = match &listener.ssl {
            Some(ssl) => Some(Arc::new(
                ReloadingAcceptor::new(
                    &listener.name,
                    ssl,
                    Some(crate::tls::Dynamic {
                        config: broker.config.clone(),
                        store: broker.store().clone(),
                    }),
                )
                .with_context(|| format!("listener {}", listener.name))?,
            )),
            None => None,
        };
        let address = listener.bind_address();
        let socket = TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding {address}"))?;
        tracing::info!(listener = %listener.name, address = %socket.local_addr()?, security_protocol = listener.security_protocol.name(), "listening");
        listeners.push((Arc::<str>::from(listener.name.as_str()), socket, tls));
    }
    let tracker = TaskTracker::new();
    // The metrics listener answers /health while the broker joins.
    if let Some(address) = &broker.config.metrics_listener {
        let socket = TcpListener::bind(address).await.with_context(|| {
            format!("binding the metrics listener {address} (metrics.listener; empty turns it off)")
        })?;
        tracing::info!(address = %socket.local_addr()?, "metrics listener: /metrics, /health, /ready");
        tracker.spawn(crate::exporter::http::serve(
            socket,
            broker.clone(),
            shutdown.clone(),
        ));
    }
    tracker.spawn(crate::broker::cluster_view::run(
        broker.clone(),
        shutdown.clone(),
    ));
    tokio::select! {
        joined = broker.store().join() => joined.context("joining the cluster")?,
        _ = signal.cancelled() => {
            shutdown.cancel();
            tracker.close();
            tracker.wait().await;
            return Ok(());
        }
    }
    let connections = Arc::new(Semaphore::new(broker.config.max_connections));
    for (name, socket, tls) in listeners {
        tracker.spawn(accept_loop(
            socket,
            tls,
            name,
            broker.clone(),
            connections.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    tracker.spawn(retention_loop(broker.clone(), shutdown.clone()));
    if broker.config.log_cleaner_enable {
        tracker.spawn(cleaner_loop(broker.clone(), shutdown.clone()));
    }
    tracker.spawn(group_timer_loop(broker.clone(), shutdown.clone()));
    tracker.spawn(crate::broker::replication::maintain_isr(
        broker.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(crate::broker::replication::checkpoint_high_watermarks(
        broker.clone(),
        Duration::from_millis(
            broker
                .config
                .replication
                .high_watermark_checkpoint_interval_ms,
        ),
        shutdown.clone(),
    ));
    let expiring = broker.clone();
    tracker.spawn(every(
        broker.config.groups.offsets_retention_check_interval_ms,
        shutdown.clone(),
        move || expiring.groups.expire_offsets(now_ms()),
    ));
    tracker.spawn(crate::broker::txn_markers::run(
        broker.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(transaction_timers(broker.clone(), shutdown.clone()));
    let expiring = broker.clone();
    tracker.spawn(every(
        broker
            .config
            .transactions
            .producer_id_expiration_check_interval_ms,
        shutdown.clone(),
        move || expiring.expire_producers(now_ms()),
    ));

    broker.metrics.set_ready();
    signal.cancelled().await;
    broker.metrics.set_not_ready();
    controlled_shutdown(&broker).await;
    shutdown.cancel();
    tracing::info!("shutting down: finishing in-flight requests");
    // Requests waiting on a rebalance are answered NOT_COORDINATOR now.
    broker.groups.shutdown();
    tracker.close();
    tracker.wait().await;
    broker.store().leave().await;
    let closing = broker.clone();
    tokio::task::spawn_blocking(move || closing.close()).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn accept_loop(
    socket: TcpListener,
    tls: Option<Arc<ReloadingAcceptor>>,
    listener: Arc<str>,
    broker: Arc<Broker>,
    connections: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE; back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        let listener = listener.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let session = |principal: String| Session {
                peer,
                listener: listener.clone(),
                principal,
            };
            match tls {
                None => {
                    let halves = stream.into_split();
                    let session = session(ANONYMOUS.to_string());
                    connection::serve(halves, session, broker, shutdown).await;
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    let handshake = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => handshake,
                    };
                    match handshake {
                        Ok(Ok(stream)) => match tls.principal(stream.get_ref().1) {
                            Ok(principal) => {
                                let halves = tokio::io::split(stream);
                                connection::serve(halves, session(principal), broker, shutdown)
                                    .await;
                            }
                            Err(reason) => {
                                tracing::info!(%peer, listener = &*listener, %reason, "no principal for the client certificate; closing the connection");
                            }
                        },
                        Ok(Err(error)) => {
                            tracing::info!(%peer, listener = &*listener, %error, "TLS handshake failed; closing the connection");
                        }
                        Err(_) => {
                            tracing::info!(%peer, listener = &*listener, timeout = ?TLS_HANDSHAKE_TIMEOUT, "TLS handshake took too long; closing the connection");
                        }
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn retention_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let period = Duration::from_millis(broker.config.log_retention_check_interval_ms);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                let broker = broker.clone();
                let _ = tokio::task::spawn_blocking(move || broker.enforce_retention()).await;
            }
        }
    }
}

/// Compacts `cleanup.policy=compact` topics every `log.cleaner.backoff.ms`.
/// A partition is locked while it is cleaned (appends to it wait).
async fn cleaner_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let period = Duration::from_millis(broker.config.log_cleaner_backoff_ms);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {
                let broker = broker.clone();
                let _ = tokio::task::spawn_blocking(move || broker.clean_logs()).await;
            }
        }
    }
}

/// How often group sessions and rebalance phases are checked.
const GROUP_TICK: Duration = Duration::from_millis(50);

async fn group_timer_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(GROUP_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => broker.groups.tick(std::time::Instant::now(), now_ms()),
        }
    }
}

/// Runs `action` every `period_ms` (first after one period) until shutdown.
async fn every(period_ms: u64, shutdown: CancellationToken, mut action: impl FnMut()) {
    let mut ticks = tokio::time::interval(Duration::from_millis(period_ms));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => action(),
        }
    }
}

/// Aborts transactions past their timeout (every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`) and
/// forgets expired transactional ids (every
/// `transaction.remove.expired.transaction.cleanup.interval.ms`).
async fn transaction_timers(broker: Arc<Broker>, shutdown: CancellationToken) {
    let config = broker.transactions.config();
    let mut aborts =
        tokio::time::interval(Duration::from_millis(config.abort_timed_out_interval_ms));
    let mut expiry =
        tokio::time::interval(Duration::from_millis(config.remove_expired_interval_ms));
    aborts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = aborts.tick() => broker.transactions.abort_timed_out().await,
            _ = expiry.tick() => broker.transactions.expire_transactional_ids().await,
        }
    }
}
