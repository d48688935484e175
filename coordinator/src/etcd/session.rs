//! This broker's session: an etcd lease it keeps alive, and its
//! registration under `<p>/brokers/<node id>` attached to that lease. The
//! broker is alive to the cluster exactly as long as the key exists: when
//! the broker stops (or is cut off) the lease expires and etcd deletes it.
//!
//! The broker also keeps its own account, on the monotonic clock: a
//! keep-alive sent at `t` and answered proves the lease lives until at least
//! `t + TTL`, so the session counts as valid until `t + TTL - margin`. Past
//! that the broker cannot prove it, stops acting as leader, and keeps trying;
//! an answer with TTL 0 means the lease is gone, and the broker registers
//! again under a new lease (a new broker epoch).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;

use super::{backoff, timed, Inner};
use crate::{BrokerRegistration, CoordinatorError};

/// The previous session's lease id, in the data directory: a broker
/// restarted after a crash ends its old session at once instead of waiting
/// for it to expire.
const LEASE_FILE_NAME: &str = "etcd-session-lease";

/// A lease this broker holds, and the epoch of the registration under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub id: i64,
    pub broker_epoch: i64,
}

pub(crate) struct Session {
    base: Instant,
    /// Nanoseconds after `base` until which the session is provably alive; 0: never.
    valid_until: AtomicU64,
    pub lease: watch::Sender<Option<Lease>>,
    /// The broker epoch of `lease`, for those outside this crate.
    pub broker_epoch: watch::Sender<Option<i64>>,
}

impl Session {
    pub(crate) fn new() -> Session {
        Session {
            base: Instant::now(),
            valid_until: AtomicU64::new(0),
            lease: watch::channel(None).0,
            broker_epoch: watch::channel(None).0,
        }
    }

    pub(crate) fn valid(&self) -> bool {
        let until = self.valid_until.load(Ordering::Acquire);
        until != 0 && (self.base.elapsed().as_nanos() as u64) < until
    }

    fn extend(&self, until: Instant) {
        let nanos = until.saturating_duration_since(self.base).as_nanos() as u64;
        self.valid_until.fetch_max(nanos.max(1), Ordering::AcqRel);
    }

    fn invalidate(&self) {
        self.valid_until.store(0, Ordering::Release);
    }

    pub(crate) fn current(&self) -> Option<Lease> {
        *self.lease.borrow()
    }

    /// The session now held (or none).
    fn publish(&self, lease: Option<Lease>) {
        self.lease.send_replace(lease);
        self.broker_epoch
            .send_replace(lease.map(|lease| lease.broker_epoch));
    }
}

/// `KBROKER_FAILPOINT_SESSION_PUBLISH_DELAY_MS`: a fault-injection point
/// for tests, never set in production — the pause between registering in
/// etcd and this broker taking the new session as its own.
fn publish_delay() -> Option<Duration> {
    std::env::var("KBROKER_FAILPOINT_SESSION_PUBLISH_DELAY_MS")
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

/// How long before the lease's expiry (as this broker reckons it) the
/// broker stops counting on it.
pub(crate) fn margin(ttl: Duration) -> Duration {
    ttl / 4
}

/// Registers this broker and keeps its session alive until shutdown,
/// registering again whenever the lease is lost.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut previous = read_lease_file(&inner.config.data_dir);
    let mut failures = 0u32;
    while !inner.shutdown.is_cancelled() {
        let lease = match establish(&inner, previous).await {
            Ok(lease) => lease,
            Err(error) => {
                failures += 1;
                let pause = backoff(failures);
                tracing::warn!(%error, retry_in = ?pause, "could not register this broker in etcd");
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        failures = 0;
        previous = Some(lease.id);
        write_lease_file(&inner.config.data_dir, lease.id);
        tracing::info!(
            node_id = inner.config.registration.node_id,
            lease = format!("{:x}", lease.id),
            broker_epoch = lease.broker_epoch,
            "registered in etcd"
        );
        if let Some(delay) = publish_delay() {
            // Fault injection: the registration is in etcd (the watch may
            // deliver it, and an election naming this broker) before this
            // broker knows its own session.
            tracing::warn!(?delay, "failpoint: publishing the session late");
            tokio::time::sleep(delay).await;
        }
        inner.session.publish(Some(lease));
        keep_alive(&inner, lease.id).await;
        if inner.shutdown.is_cancelled() {
            // `revoke` ends the session.
            return;
        }
        inner.session.invalidate();
        inner.session.publish(None);
        tracing::warn!(
            lease = format!("{:x}", lease.id),
            "the etcd session is lost; registering again"
        );
    }
}

/// Grants a lease and registers under it. A registration left by this
/// broker's previous session (the lease in the data directory) is ended
/// first; one by another session means another broker has this node id,
/// or an earlier one has not expired yet: wait for it.
async fn establish(inner: &Inner, previous: Option<i64>) -> Result<Lease, etcd_client::Error> {
    let ttl = inner.config.session_timeout;
    let ttl_seconds = ttl.as_secs().max(1) as i64;
    let mut client = inner.client.clone();
    let granted_at = Instant::now();
    let granted = timed(client.lease_grant(ttl_seconds, None)).await?;
    let lease = granted.id();
    inner
        .session
        .extend(granted_at + Duration::from_secs(granted.ttl().max(0) as u64) - margin(ttl));
    let key = inner.keys.broker(inner.config.registration.node_id);
    let value = serde_json::to_vec(&inner.config.registration).expect("registration serializes");
    let mut waiting_logged = false;
    loop {
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let response = timed(client.txn(txn)).await?;
        if response.succeeded() {
            let revision = response
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision);
            return Ok(Lease {
                id: lease,
                broker_epoch: revision,
            });
        }
        let existing = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| (kv.lease(), kv.create_revision())),
            _ => None,
        });
        match existing {
            None => continue, // expired in between
            Some((holder, create_revision)) if holder == lease => {
                return Ok(Lease {
                    id: lease,
                    broker_epoch: create_revision,
                })
            }
            Some((holder, _)) if Some(holder) == previous => {
                tracing::info!(
                    lease = format!("{holder:x}"),
                    "ending this broker's previous etcd session"
                );
                timed(client.lease_revoke(holder)).await?;
            }
            Some((holder, _)) => {
                if !waiting_logged {
                    tracing::error!(
                        node_id = inner.config.registration.node_id,
                        lease = format!("{holder:x}"),
                        "node.id is registered by another session: another broker has this node.id, or an earlier run's session has not expired; waiting"
                    );
                    waiting_logged = true;
                }
                tokio::select! {
                    _ = inner.shutdown.cancelled() => {
                        let _ = timed(client.lease_revoke(lease)).await;
                        return Err(etcd_client::Error::InvalidArgs("shutting down".into()));
                    }
                    _ = tokio::time::sleep(inner.config.heartbeat_interval) => {}
                }
            }
        }
    }
}

/// Whether etcd answers that `lease` no longer exists (LeaseTimeToLive
/// gives TTL -1 for an expired or revoked lease), as opposed to not
/// answering: asked when a keep-alive stream cannot be opened, whatever
/// the error says.
async fn lease_gone(inner: &Inner, lease: i64) -> bool {
    let mut client = inner.client.lease_client();
    matches!(timed(client.time_to_live(lease, None)).await, Ok(answer) if answer.ttl() <= 0)
}

/// Sends keep-alives every heartbeat interval until the lease is gone (an
/// answer with TTL 0) or shutdown.
async fn keep_alive(inner: &Inner, lease: i64) {
    let ttl = inner.config.session_timeout;
    let interval = inner.config.heartbeat_interval;
    let mut stream = None;
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if stream.is_none() {
            let mut client = inner.client.lease_client();
            match timed(client.keep_alive(lease)).await {
                Ok(opened) => stream = Some(opened),
                // etcd answered, and the lease has expired meanwhile (cut
                // off from etcd longer than the TTL): register again.
                Err(error) if lease_gone(inner, lease).await => {
                    tracing::warn!(%error, "the etcd lease has expired");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, valid = inner.session.valid(), "etcd keep-alive stream failed");
                    continue;
                }
            }
        }
        let Some((keeper, responses)) = stream.as_mut() else {
            continue;
        };
        let sent = Instant::now();
        let answer = async {
            keeper.keep_alive().await?;
            responses.message().await
        };
        match tokio::time::timeout(interval.max(Duration::from_millis(500)), answer).await {
            Ok(Ok(Some(response))) if response.ttl() > 0 => {
                let ttl_granted = Duration::from_secs(response.ttl() as u64).min(ttl);
                inner.session.extend(sent + ttl_granted - margin(ttl));
            }
            Ok(Ok(Some(_))) => return, // TTL 0: the lease expired
            Ok(Ok(None) | Err(_)) | Err(_) => {
                if inner.session.valid() {
                    tracing::warn!("etcd keep-alive failed; retrying");
                } else {
                    tracing::warn!("etcd keep-alive failed and the session can no longer be proven: not acting as leader until etcd answers");
                }
                stream = None;
            }
        }
    }
}

/// Marks this broker's registration as shutting down (controlled
/// shutdown), under the same lease: its epoch (the key's create revision)
/// stays. Refused when the registration is not this session's.
pub(crate) async fn mark_shutting_down(inner: &Inner) -> Result<(), CoordinatorError> {
    let Some(lease) = inner.session.current() else {
        return Err(CoordinatorError::Unavailable(
            "not registered: no etcd session".into(),
        ));
    };
    let key = inner.keys.broker(inner.config.registration.node_id);
    let registration = BrokerRegistration {
        shutting_down: true,
        ..inner.config.registration.clone()
    };
    let value = serde_json::to_vec(&registration).expect("registration serializes");
    let txn = Txn::new()
        .when([Compare::lease(key.clone(), CompareOp::Equal, lease.id)])
        .and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease.id)),
        )]);
    let mut client = inner.client.clone();
    let response = timed(client.txn(txn))
        .await
        .map_err(|error| CoordinatorError::Unavailable(error.to_string()))?;
    if !response.succeeded() {
        return Err(CoordinatorError::Unavailable(
            "the registration is not this session's".into(),
        ));
    }
    Ok(())
}

/// Ends the session now (clean shutdown): the registration and the
/// controller candidacy vanish at once.
pub(crate) async fn revoke(inner: &Inner) {
    if let Some(lease) = inner.session.current() {
        let mut client = inner.client.clone();
        match timed(client.lease_revoke(lease.id)).await {
            Ok(_) => tracing::info!(lease = format!("{:x}", lease.id), "ended the etcd session"),
            Err(error) => {
                tracing::warn!(%error, "could not end the etcd session; it expires by itself");
            }
        }
        inner.session.invalidate();
        remove_lease_file(&inner.config.data_dir);
    }
}

fn lease_file(dir: &Path) -> PathBuf {
    dir.join(LEASE_FILE_NAME)
}

fn read_lease_file(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(lease_file(dir)).ok()?;
    i64::from_str_radix(text.trim(), 16).ok()
}

fn write_lease_file(dir: &Path, lease: i64) {
    if let Err(error) = std::fs::write(lease_file(dir), format!("{lease:x}\n")) {
        tracing::warn!(%error, "could not remember the etcd session in the data directory");
    }
}

fn remove_lease_file(dir: &Path) {
    let _ = std::fs::remove_file(lease_file(dir));
}
