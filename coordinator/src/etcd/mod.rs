//! Cluster metadata in etcd (cluster mode: `etcd.endpoints` is set).
//!
//! - [`keys`]: the key layout and the JSON records.
//! - [`cache`]: this broker's copy of the keys and the snapshot derived from it.
//! - [`watch`]: the watch that keeps the cache current (no polling).
//! - [`session`]: the lease, the broker's registration under it, keep-alives.
//! - [`controller`]: the controller, which runs in the broker that wins
//!   etcd's election (it uses the store's guarded writes, and the store
//!   spawns it: one component).
//!
//! Who writes what (every write an etcd transaction):
//! - a broker writes its own registration, under its own lease;
//! - any broker creates a topic (only if the name is free), deletes one or
//!   changes its configs or partition count (only if the topic key is still
//!   at the revision the change was computed from), and writes dynamic
//!   broker configs — as brokers wrote ZooKeeper in Kafka's ZooKeeper mode;
//! - only the controller changes a partition's leader, and only while its
//!   election key exists at the revision it won with;
//! - a partition's leader changes its ISR, only while its registration is
//!   the one of its current session;
//! - every partition write compares the partition key's revision (or, for a
//!   partition never written, that the key is absent and the topic is the
//!   same incarnation): a change computed from a stale state is refused.

pub mod cache;
pub mod controller;
pub mod keys;
pub(crate) mod session;
pub(crate) mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, DeleteOptions, Txn, TxnOp};
use tokio::sync::watch as channel;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::model::{
    BrokerRegistration, ClusterMetadata, ElectionType, IsrChange, NewTopic, PartitionMetadata,
    TopicMetadata,
};
use crate::security::{AclBinding, ScramChange};
use crate::{placement, CoordinatorError, ElectionResults, MetadataStore};
use cache::{Cache, KeyRevision};
use controller::ControllerSeat;
use keys::{Keys, PartitionRecord, TopicRecord};

/// etcd's default `--max-txn-ops` is 128.
const OPS_PER_TXN: usize = 100;
/// Longest one etcd request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a change waits to show in this broker's snapshot after etcd
/// accepted it.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// How often a change computed from a stale snapshot is tried again.
const CONFLICT_RETRIES: usize = 5;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Cluster mode settings (Kafka's names where Kafka has one).
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `etcd.endpoints`: URLs such as `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// `etcd.prefix`: the keys of this cluster, so that clusters can share an etcd.
    pub prefix: String,
    /// `broker.session.timeout.ms`: the lease TTL; a broker silent that long is dead.
    pub session_timeout: Duration,
    /// `broker.heartbeat.interval.ms`: how often the lease is kept alive.
    pub heartbeat_interval: Duration,
    pub registration: BrokerRegistration,
    /// Where the previous session's lease id is remembered.
    pub data_dir: PathBuf,
    pub controller: ControllerConfig,
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `unclean.leader.election.enable` (topics may override it).
    pub unclean_leader_election: bool,
    /// `auto.leader.rebalance.enable`
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`
    pub leader_imbalance_check_interval: Duration,
    /// `leader.imbalance.per.broker.percentage`
    pub leader_imbalance_percentage: u32,
}

pub struct EtcdStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: EtcdConfig,
    pub client: Client,
    pub keys: Keys,
    pub cache: Mutex<Cache>,
    pub metadata: channel::Sender<Arc<ClusterMetadata>>,
    pub session: session::Session,
    /// Set while this broker is the controller.
    pub seat: Mutex<Option<ControllerSeat>>,
    pub shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Unclean leader elections written as controller.
    pub unclean_elections: std::sync::atomic::AtomicU64,
}

impl EtcdStore {
    /// Connects to etcd, retrying with backoff (and saying so) until it
    /// answers; creates the cluster id if the cluster is new; reads the
    /// cluster's keys and starts watching them. The broker is not
    /// registered yet: that is [`MetadataStore::join`].
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, CoordinatorError> {
        if config.endpoints.is_empty() {
            return Err(CoordinatorError::Unavailable(
                "etcd.endpoints names no endpoint".into(),
            ));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(config.endpoints.clone(), Some(options))
            .await
            .map_err(|error| {
                CoordinatorError::Unavailable(format!(
                    "etcd.endpoints {:?}: {error}",
                    config.endpoints
                ))
            })?;
        let keys = Keys::new(&config.prefix);
        let inner = Arc::new(Inner {
            cache: Mutex::new(Cache::new(keys.clone())),
            keys,
            client,
            metadata: channel::channel(Arc::new(ClusterMetadata::new_cluster())).0,
            session: session::Session::new(),
            seat: Mutex::new(None),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            unclean_elections: std::sync::atomic::AtomicU64::new(0),
            config,
        });
        let mut failures = 0u32;
        let read_at = loop {
            match start(&inner).await {
                Ok(revision) => break revision,
                Err(error) => {
                    failures += 1;
                    let wait = backoff(failures);
                    tracing::error!(endpoints = ?inner.config.endpoints, %error, retry_in = ?wait, "etcd is unreachable");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let snapshot = inner.metadata.borrow().clone();
        tracing::info!(
            cluster_id = %snapshot.cluster_id,
            topics = snapshot.topics.len(),
            brokers = snapshot.brokers.len(),
            revision = read_at,
            "connected to etcd"
        );
        inner.tasks.spawn(watch::run(inner.clone(), read_at));
        Ok(EtcdStore { inner })
    }

    /// The controller seat this broker holds, if it is the controller.
    pub fn controller_seat(&self) -> Option<ControllerSeat> {
        self.inner.seat.lock().clone()
    }

    /// Writes a partition's state as the controller holding `seat`. The
    /// controller's own path; public so that a test can show that etcd
    /// refuses a seat that has been lost ([`CoordinatorError::NotController`]).
    pub async fn write_as_controller(
        &self,
        seat: &ControllerSeat,
        topic: &str,
        state: PartitionMetadata,
    ) -> Result<(), CoordinatorError> {
        let write = self
            .inner
            .planned_write(topic, state)
            .ok_or_else(|| CoordinatorError::UnknownTopic(topic.to_string()))?;
        controller::write(&self.inner, seat, vec![write])
            .await
            .map(|_| ())
    }
}

/// Creates the cluster id if there is none, then reads everything.
async fn start(inner: &Inner) -> Result<i64, CoordinatorError> {
    let mut client = inner.client.clone();
    let key = inner.keys.cluster_id();
    let txn = Txn::new()
        .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, crate::model::new_cluster_id(), None)]);
    let created = timed(client.txn(txn)).await.map_err(unavailable)?;
    if created.succeeded() {
        tracing::info!("created a new cluster in etcd");
    }
    watch::load(inner).await
}

impl Inner {
    fn node_id(&self) -> i32 {
        self.config.registration.node_id
    }

    fn snapshot(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    /// Waits until this broker's snapshot shows etcd's `revision`.
    pub(crate) async fn applied(&self, revision: i64) {
        let mut receiver = self.metadata.subscribe();
        let waited = tokio::time::timeout(
            APPLY_WAIT,
            receiver.wait_for(|snapshot| snapshot.revision >= revision),
        )
        .await;
        if waited.is_err() {
            tracing::warn!(
                revision,
                "a change etcd accepted has not reached this broker's metadata yet"
            );
        }
    }

    /// The compares that make a write of this partition's state fail if
    /// the state changed since the cache saw it: the partition key's
    /// revision, or for a partition never written, that it is still absent
    /// and the topic is the same incarnation. `None` if the topic is gone.
    pub(crate) fn partition_guard(
        &self,
        cache: &Cache,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
    ) -> Option<Vec<Compare>> {
        let key = self.keys.partition(topic_id, partition);
        if let Some(revision) = cache.partition_revision(topic_id, partition) {
            return Some(vec![Compare::mod_revision(
                key,
                CompareOp::Equal,
                revision.modified,
            )]);
        }
        let topic_revision = cache.topic_revision(topic)?;
        if cache.topic_record(topic)?.topic_id != topic_id {
            return None;
        }
        Some(vec![
            Compare::version(key, CompareOp::Equal, 0),
            Compare::create_revision(
                self.keys.topic(topic),
                CompareOp::Equal,
                topic_revision.create,
            ),
        ])
    }

    /// `state` of a partition of `topic` as a guarded write, computed
    /// against the cache as it is now.
    pub(crate) fn planned_write(
        &self,
        topic: &str,
        state: PartitionMetadata,
    ) -> Option<PartitionWrite> {
        let cache = self.cache.lock();
        let topic_id = cache.topic_record(topic)?.topic_id;
        let guard = self.partition_guard(&cache, topic, topic_id, state.partition)?;
        Some(PartitionWrite {
            key: self.keys.partition(topic_id, state.partition),
            guard,
            record: PartitionRecord::from(&state),
            topic: topic.to_string(),
            partition: state.partition,
        })
    }

    /// Read-modify-write of a topic record, compared on its revision, tried
    /// again (against a fresher snapshot) if it changed meanwhile.
    async fn update_topic(
        &self,
        name: &str,
        change: impl Fn(
            &ClusterMetadata,
            &TopicRecord,
            KeyRevision,
        ) -> Result<TopicRecord, CoordinatorError>,
    ) -> Result<i64, CoordinatorError> {
        for _ in 0..CONFLICT_RETRIES {
            let (snapshot, record, revision) = {
                let cache = self.cache.lock();
                let record = cache
                    .topic_record(name)
                    .cloned()
                    .ok_or_else(|| CoordinatorError::UnknownTopic(name.to_string()))?;
                let revision = cache.topic_revision(name).expect("a record has a revision");
                (cache.current().clone(), record, revision)
            };
            let next = change(&snapshot, &record, revision)?;
            let key = self.keys.topic(name);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    revision.modified,
                )])
                .and_then([TxnOp::put(
                    key,
                    serde_json::to_vec(&next).expect("record serializes"),
                    None,
                )]);
            let response = self.txn(txn).await?;
            let written_at = response
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision);
            if response.succeeded() {
                self.applied(written_at).await;
                return Ok(written_at);
            }
            // Someone else changed the topic: wait for that change, then recompute.
            self.applied(revision.modified + 1).await;
        }
        Err(CoordinatorError::Unavailable(format!(
            "topic {name} kept changing while this change was made"
        )))
    }

    /// Writes keys that no compare guards (last writer wins: dynamic
    /// configs, credentials, ACLs), at most [`OPS_PER_TXN`] per
    /// transaction, and waits until this broker's snapshot shows them.
    async fn write_unguarded(&self, ops: Vec<TxnOp>) -> Result<(), CoordinatorError> {
        let mut last_revision = None;
        for chunk in ops.chunks(OPS_PER_TXN) {
            let response = self.txn(Txn::new().and_then(chunk.to_vec())).await?;
            let wrote = response.op_responses().iter().any(|op| match op {
                etcd_client::TxnOpResponse::Put(_) => true,
                etcd_client::TxnOpResponse::Delete(deleted) => deleted.deleted() > 0,
                _ => false,
            });
            if wrote {
                last_revision = response.header().map(etcd_client::ResponseHeader::revision);
            }
        }
        // A delete of nothing changes no key this broker watches: there is
        // nothing to wait for.
        if let Some(revision) = last_revision {
            self.applied(revision).await;
        }
        Ok(())
    }

    pub(crate) async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, CoordinatorError> {
        let mut client = self.client.clone();
        timed(client.txn(txn)).await.map_err(unavailable)
    }
}

/// The writes of SCRAM credential changes.
fn scram_ops(keys: &Keys, changes: Vec<ScramChange>) -> Vec<TxnOp> {
    changes
        .into_iter()
        .map(|change| {
            let key = keys.scram(&change.mechanism, &change.user);
            match change.credential {
                Some(credential) => TxnOp::put(
                    key,
                    serde_json::to_vec(&credential).expect("a credential serializes"),
                    None,
                ),
                None => TxnOp::delete(key, None),
            }
        })
        .collect()
}

/// Writes SCRAM credentials straight into etcd, for the first users of a
/// cluster before any broker serves SASL (as `kafka-storage.sh format
/// --add-scram` does): no registration, no session.
pub async fn bootstrap_scram_credentials(
    endpoints: &[String],
    prefix: &str,
    changes: Vec<ScramChange>,
) -> Result<(), CoordinatorError> {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    let mut client = Client::connect(endpoints, Some(options))
        .await
        .map_err(|error| {
            CoordinatorError::Unavailable(format!("etcd.endpoints {endpoints:?}: {error}"))
        })?;
    let ops = scram_ops(&Keys::new(prefix), changes);
    for chunk in ops.chunks(OPS_PER_TXN) {
        timed(client.txn(Txn::new().and_then(chunk.to_vec())))
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

/// A partition state to write, with the compares that guard it.
pub struct PartitionWrite {
    pub key: String,
    pub guard: Vec<Compare>,
    pub record: PartitionRecord,
    pub topic: String,
    pub partition: i32,
}

#[async_trait]
impl MetadataStore for EtcdStore {
    fn snapshot(&self) -> Arc<ClusterMetadata> {
        self.inner.snapshot()
    }

    fn unclean_leader_elections(&self) -> u64 {
        self.inner
            .unclean_elections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn subscribe(&self) -> channel::Receiver<Arc<ClusterMetadata>> {
        self.inner.metadata.subscribe()
    }

    /// Provable, and this broker's snapshot shows its own current
    /// registration: after registering again (a lost session), it does not
    /// act on the state it saw before until it has caught up with
    /// everything that changed meanwhile (leaders moved away from it).
    fn session_valid(&self) -> bool {
        self.inner.session.valid()
            && self
                .inner
                .session
                .current()
                .is_some_and(|lease| self.inner.metadata.borrow().revision >= lease.broker_epoch)
    }

    fn broker_epoch(&self) -> Option<i64> {
        self.inner.session.current().map(|lease| lease.broker_epoch)
    }

    fn subscribe_broker_epoch(&self) -> Option<channel::Receiver<Option<i64>>> {
        Some(self.inner.session.broker_epoch.subscribe())
    }

    async fn join(&self) -> Result<(), CoordinatorError> {
        let inner = &self.inner;
        inner.tasks.spawn(session::run(inner.clone()));
        let mut lease = inner.session.lease.subscribe();
        tokio::select! {
            registered = lease.wait_for(Option::is_some) => {
                registered.map_err(|_| CoordinatorError::Unavailable("the session task ended".into()))?;
            }
            _ = inner.shutdown.cancelled() => {
                return Err(CoordinatorError::Unavailable("shutting down".into()));
            }
        }
        if let Some(lease) = inner.session.current() {
            // Until this broker's registration is in its own snapshot, it
            // would not see itself among the live brokers.
            inner.applied(lease.broker_epoch).await;
        }
        inner.tasks.spawn(controller::run(inner.clone()));
        Ok(())
    }

    async fn begin_controlled_shutdown(&self) -> Result<(), CoordinatorError> {
        session::mark_shutting_down(&self.inner).await
    }

    async fn leave(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        inner.tasks.close();
        if tokio::time::timeout(REQUEST_TIMEOUT, inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("etcd tasks did not stop in time");
        }
        // Revoking the lease deletes the registration and the controller
        // candidacy with it: others see this broker gone, and elect, now.
        session::revoke(inner).await;
    }

    async fn create_topic(
        &self,
        request: NewTopic,
        validate_only: bool,
    ) -> Result<Arc<TopicMetadata>, CoordinatorError> {
        let snapshot = self.snapshot();
        let planned = placement::plan_topic(&snapshot, &request, random_start())?;
        if validate_only {
            return Ok(Arc::new(planned));
        }
        let record = TopicRecord {
            topic_id: planned.topic_id,
            assignment: planned
                .partitions
                .iter()
                .map(|p| p.replicas.clone())
                .collect(),
            assigned_at: vec![snapshot.revision; planned.partitions.len()],
            configs: planned.configs.clone(),
        };
        let key = self.inner.keys.topic(&request.name);
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                serde_json::to_vec(&record).expect("record serializes"),
                None,
            )]);
        let response = self.inner.txn(txn).await?;
        if !response.succeeded() {
            return Err(CoordinatorError::TopicExists(request.name));
        }
        self.inner
            .applied(
                response
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision),
            )
            .await;
        tracing::info!(topic = %planned.name, topic_id = %planned.topic_id, partitions = planned.partitions.len(), "created topic in etcd");
        Ok(self
            .snapshot()
            .topics
            .get(&request.name)
            .cloned()
            .unwrap_or_else(|| Arc::new(planned)))
    }

    async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<Arc<TopicMetadata>, CoordinatorError> {
        let start = random_start();
        let plan = |snapshot: &ClusterMetadata| {
            let topic = snapshot
                .topics
                .get(name)
                .ok_or_else(|| CoordinatorError::UnknownTopic(name.to_string()))?;
            placement::plan_partitions(snapshot, topic, count, assignment.as_deref(), start)
        };
        if validate_only {
            return plan(&self.snapshot()).map(Arc::new);
        }
        self.inner
            .update_topic(name, |snapshot, record, revision| {
                let grown = plan(snapshot)?;
                let mut next = record.clone();
                // A record from before `assigned_at` was kept: its
                // partitions were planned when the topic was created.
                next.assigned_at
                    .resize(record.assignment.len(), revision.create);
                next.assigned_at
                    .resize(grown.partitions.len(), snapshot.revision);
                next.assignment.extend(
                    grown.partitions[record.assignment.len()..]
                        .iter()
                        .map(|p| p.replicas.clone()),
                );
                Ok(next)
            })
            .await?;
        self.snapshot()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| CoordinatorError::UnknownTopic(name.to_string()))
    }

    async fn delete_topic(&self, name: &str) -> Result<Arc<TopicMetadata>, CoordinatorError> {
        let (topic, revision) = {
            let cache = self.inner.cache.lock();
            let topic = cache
                .current()
                .topics
                .get(name)
                .cloned()
                .ok_or_else(|| CoordinatorError::UnknownTopic(name.to_string()))?;
            (
                topic,
                cache.topic_revision(name).expect("a topic has a revision"),
            )
        };
        let key = self.inner.keys.topic(name);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision.modified,
            )])
            .and_then([
                TxnOp::delete(key, None),
                TxnOp::delete(
                    self.inner.keys.partitions_of(topic.topic_id),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            ]);
        let response = self.inner.txn(txn).await?;
        if !response.succeeded() {
            return Err(CoordinatorError::Unavailable(format!(
                "topic {name} changed while it was being deleted; try again"
            )));
        }
        self.inner
            .applied(
                response
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision),
            )
            .await;
        Ok(topic)
    }

    async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), CoordinatorError> {
        self.inner
            .update_topic(name, |_, record, _| {
                Ok(TopicRecord {
                    configs: configs.clone(),
                    ..record.clone()
                })
            })
            .await
            .map(|_| ())
    }

    async fn set_broker_configs(
        &self,
        resource: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), CoordinatorError> {
        let key = self.inner.keys.broker_configs(resource);
        let op = if configs.is_empty() {
            TxnOp::delete(key, None)
        } else {
            TxnOp::put(
                key,
                serde_json::to_vec(&configs).expect("configs serialize"),
                None,
            )
        };
        self.inner.write_unguarded(vec![op]).await
    }

    async fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<ElectionResults, CoordinatorError> {
        controller::elect(&self.inner, election, partitions).await
    }

    async fn alter_scram_credentials(
        &self,
        changes: Vec<ScramChange>,
    ) -> Result<(), CoordinatorError> {
        let ops = scram_ops(&self.inner.keys, changes);
        self.inner.write_unguarded(ops).await
    }

    async fn create_acls(&self, acls: Vec<AclBinding>) -> Result<(), CoordinatorError> {
        let ops = acls
            .iter()
            .map(|acl| {
                TxnOp::put(
                    self.inner.keys.acl(acl),
                    serde_json::to_vec(acl).expect("an ACL serializes"),
                    None,
                )
            })
            .collect();
        self.inner.write_unguarded(ops).await
    }

    async fn delete_acls(&self, acls: Vec<AclBinding>) -> Result<(), CoordinatorError> {
        let ops = acls
            .iter()
            .map(|acl| TxnOp::delete(self.inner.keys.acl(acl), None))
            .collect();
        self.inner.write_unguarded(ops).await
    }

    /// Compare-and-swap on `<p>/producer-ids`: read the next free id, write
    /// it moved on by `count` only if nobody wrote the key meanwhile.
    async fn allocate_producer_ids(&self, count: i64) -> Result<i64, CoordinatorError> {
        let key = self.inner.keys.producer_ids();
        let mut backoff = BACKOFF_MIN;
        for _ in 0..CONFLICT_RETRIES * 4 {
            let mut client = self.inner.client.clone();
            let current = timed(client.get(key.clone(), None))
                .await
                .map_err(unavailable)?;
            let (first, guard) = match current.kvs().first() {
                Some(kv) => {
                    let record: keys::ProducerIdsRecord = serde_json::from_slice(kv.value())
                        .map_err(|error| CoordinatorError::Corrupt {
                            path: key.clone(),
                            reason: error.to_string(),
                        })?;
                    let guard =
                        Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision());
                    (record.next, guard)
                }
                None => (0, Compare::version(key.clone(), CompareOp::Equal, 0)),
            };
            let next = first.checked_add(count).ok_or_else(|| {
                CoordinatorError::Unavailable("producer ids are exhausted".into())
            })?;
            let record = keys::ProducerIdsRecord { next };
            let put = TxnOp::put(
                key.clone(),
                serde_json::to_vec(&record).expect("a record serializes"),
                None,
            );
            let response = self
                .inner
                .txn(Txn::new().when([guard]).and_then([put]))
                .await?;
            if response.succeeded() {
                return Ok(first);
            }
            // Another broker took a block meanwhile.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        Err(CoordinatorError::Unavailable(
            "allocating producer ids kept conflicting with other brokers".into(),
        ))
    }

    async fn alter_isr(&self, change: IsrChange) -> Result<PartitionMetadata, CoordinatorError> {
        let inner = &self.inner;
        let lease = inner
            .session
            .current()
            .filter(|_| inner.session.valid())
            .ok_or_else(|| {
                CoordinatorError::Unavailable("this broker has no etcd session".into())
            })?;
        // The state checked and the revision compared come from one look
        // at the cache: a leader change in between cannot be written over.
        let (next, write) = {
            let cache = inner.cache.lock();
            let next = crate::check_isr_change(cache.current(), inner.node_id(), &change)?;
            let guard = inner
                .partition_guard(&cache, &change.topic, change.topic_id, change.partition)
                .ok_or_else(|| CoordinatorError::UnknownTopic(change.topic.clone()))?;
            let write = PartitionWrite {
                key: inner.keys.partition(change.topic_id, change.partition),
                guard,
                record: PartitionRecord::from(&next),
                topic: change.topic.clone(),
                partition: change.partition,
            };
            (next, write)
        };
        // A zombie of an earlier session of this broker is refused too.
        let mut compares = write.guard;
        compares.push(Compare::create_revision(
            inner.keys.broker(inner.node_id()),
            CompareOp::Equal,
            lease.broker_epoch,
        ));
        let txn = Txn::new().when(compares).and_then([TxnOp::put(
            write.key,
            serde_json::to_vec(&write.record).expect("record serializes"),
            None,
        )]);
        let response = inner.txn(txn).await?;
        if !response.succeeded() {
            return Err(CoordinatorError::Fenced(format!(
                "{}-{}: the partition or this broker's session changed",
                change.topic, change.partition
            )));
        }
        inner
            .applied(
                response
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision),
            )
            .await;
        Ok(next)
    }
}

/// Where replica placement starts, so that topics do not all lead on one broker.
fn random_start() -> usize {
    (Uuid::new_v4().as_u128() % 1_000_003) as usize
}

pub(crate) fn unavailable(error: etcd_client::Error) -> CoordinatorError {
    CoordinatorError::Unavailable(error.to_string())
}

/// An etcd request that gives up after [`REQUEST_TIMEOUT`].
pub(crate) async fn timed<T>(
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, etcd_client::Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result,
        Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from etcd within {REQUEST_TIMEOUT:?}"),
        ))),
    }
}

/// The pause before retry number `failures` (from 1): doubling, capped.
pub(crate) fn backoff(failures: u32) -> Duration {
    BACKOFF_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }
}
