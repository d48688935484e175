//! One partition of a topic as this broker sees it: its state as last
//! applied (leader, epochs, replicas, ISR) and, where this broker holds a
//! replica, its log. [`Partition::lead`] is the one place that decides
//! whether this broker acts as the partition's leader; `leader` holds the
//! leader's side of replication (follower progress, the high watermark,
//! ISR decisions, acks=all waits).

mod leader;

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use bytes::Bytes;
use coordinator::{MetadataStore, PartitionMetadata};
use storage::{AppendInfo, PartitionLog, RollSync, StorageError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::errors::{AppendError, NotLeader, PartitionClosed};
pub(crate) use leader::LeaderProgress;

/// This broker, as its partitions see it: which node it is, and whether
/// it may act as a leader now (it can prove its session).
pub(crate) struct LocalNode {
    pub node_id: i32,
    store: Arc<dyn MetadataStore>,
    /// Bumped after every append and every move of a high watermark, so
    /// that waiting fetches re-check.
    appended: watch::Sender<u64>,
}

impl LocalNode {
    pub(crate) fn new(node_id: i32, store: Arc<dyn MetadataStore>) -> LocalNode {
        LocalNode {
            node_id,
            store,
            appended: watch::channel(0).0,
        }
    }

    pub(crate) fn session_valid(&self) -> bool {
        self.store.session_valid()
    }

    /// Whether this broker may act as the leader of a partition in
    /// `state`: named its leader, and in the session the state names it
    /// in sync in. After a restart (or a lost session) it waits to be
    /// elected anew, its log possibly short of what it had acknowledged;
    /// not registered (yet, or again), it does not lead at all.
    pub(crate) fn named_leader(&self, state: &PartitionMetadata) -> bool {
        state.leader == self.node_id
            && self
                .store
                .broker_epoch()
                .is_some_and(|epoch| !state.restarted_since_in_sync(self.node_id, epoch))
    }

    pub(crate) fn notify_appended(&self) {
        self.appended
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    pub(crate) fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }
}

/// One partition of a topic: its state as last applied and, if this
/// broker holds a replica, its log.
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    node: Arc<LocalNode>,
    state: RwLock<PartitionMetadata>,
    /// `None` where this broker holds no replica, and once the partition
    /// is closed (shutdown or deletion).
    log: Mutex<Option<PartitionLog>>,
    /// What the leader knows of its followers (see `replication`).
    progress: Mutex<LeaderProgress>,
    /// Bumped when the high watermark or the state changes, for requests
    /// that wait on them (acks=all).
    changes: watch::Sender<u64>,
}

impl Partition {
    pub(crate) fn new(
        topic: Arc<str>,
        topic_id: Uuid,
        node: Arc<LocalNode>,
        state: PartitionMetadata,
        log: Option<PartitionLog>,
    ) -> Partition {
        Partition {
            topic,
            topic_id,
            index: state.partition,
            node,
            state: RwLock::new(state),
            log: Mutex::new(log),
            progress: Mutex::new(Default::default()),
            changes: watch::channel(0).0,
        }
    }

    pub(crate) fn progress(&self) -> parking_lot::MutexGuard<'_, LeaderProgress> {
        self.progress.lock()
    }

    pub(crate) fn node(&self) -> &LocalNode {
        &self.node
    }

    pub(crate) fn notify_changed(&self) {
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The partition's state as this broker last applied it.
    pub fn state(&self) -> PartitionMetadata {
        self.state.read().clone()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.read().leader_epoch
    }

    pub(crate) fn set_state(&self, state: PartitionMetadata) {
        *self.state.write() = state;
        self.notify_changed();
    }

    /// Whether this broker holds an open replica of the partition.
    pub fn is_hosted(&self) -> bool {
        self.log.lock().is_some()
    }

    /// Runs `action` on this broker's replica of the log. Logs are touched
    /// with blocking file I/O that is short (page cache writes, positional
    /// reads), so this runs on the calling task.
    pub fn with_log<T>(
        &self,
        action: impl FnOnce(&mut PartitionLog) -> T,
    ) -> Result<T, PartitionClosed> {
        let mut log = self.log.lock();
        match log.as_mut() {
            Some(log) => Ok(action(log)),
            None => Err(PartitionClosed {
                topic: self.topic.clone(),
                partition: self.index,
            }),
        }
    }

    /// Runs `action` on the log if this broker leads the partition now: it
    /// is the leader in the state applied last, it can prove its session,
    /// and its replica is open. The state cannot change while `action`
    /// runs, so what it does happens at that leader epoch.
    pub fn lead<T>(
        &self,
        action: impl FnOnce(&mut PartitionLog, &PartitionMetadata) -> T,
    ) -> Result<T, NotLeader> {
        let state = self.state.read();
        let not_leader = || NotLeader {
            topic: self.topic.clone(),
            partition: self.index,
            leader: state.leader,
            leader_epoch: state.leader_epoch,
        };
        if !self.node.named_leader(&state) || !self.node.session_valid() {
            return Err(not_leader());
        }
        self.with_log(|log| action(log, &state))
            .map_err(|_| not_leader())
    }

    /// Runs `action` on the log if this broker still follows `leader` at
    /// `leader_epoch` — the state cannot change while it runs — so that an
    /// answer to a fetch sent to a former leader, or before this broker
    /// became leader itself, never touches the log.
    pub fn as_follower<T>(
        &self,
        leader: i32,
        leader_epoch: i32,
        action: impl FnOnce(&mut PartitionLog) -> T,
    ) -> Option<T> {
        let state = self.state.read();
        if state.leader != leader
            || state.leader_epoch != leader_epoch
            || state.leader == self.node.node_id
        {
            return None;
        }
        self.with_log(action).ok()
    }

    /// Appends producer batches as the leader, at its leader epoch, and
    /// moves the high watermark if the ISR allows (at once when the leader
    /// is the whole ISR). With `min_insync_replicas` (acks=all) the append
    /// is refused while the ISR is smaller (NOT_ENOUGH_REPLICAS). When the
    /// append rolled a segment, the sealed segment is fsynced on a blocking
    /// thread, without the log's lock, and the recovery point moves after.
    /// Returns the append and the leader epoch it happened at.
    pub fn append(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
        min_insync_replicas: Option<usize>,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        self.append_verified(records, now_ms, min_insync_replicas, None)
    }

    /// [`Self::append`]; `verified` is the guard of a transaction verified
    /// with its coordinator, for a transactional batch that starts its
    /// transaction in this partition.
    pub fn append_verified(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
        min_insync_replicas: Option<usize>,
        verified: Option<u64>,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        self.append_with(min_insync_replicas, |log, leader_epoch| match verified {
            None => log.append_as_leader(records, leader_epoch, now_ms),
            Some(guard) => log.append_as_leader_verified(records, leader_epoch, now_ms, guard),
        })
    }

    /// [`Self::append`] of batches a coordinator writes for a producer
    /// (transactional offset commits): only the producer's epoch is checked.
    pub fn append_as_coordinator(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        self.append_with(None, |log, leader_epoch| {
            log.append_as_coordinator(records, leader_epoch, now_ms)
        })
    }

    /// Appends a transaction marker (WriteTxnMarkers) as the leader.
    pub fn append_marker(
        self: &Arc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        marker: storage::Marker,
        now_ms: i64,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        self.append_with(None, |log, leader_epoch| {
            log.append_marker(producer_id, producer_epoch, marker, leader_epoch, now_ms)
        })
    }

    fn append_with(
        self: &Arc<Self>,
        min_insync_replicas: Option<usize>,
        append: impl FnOnce(&mut PartitionLog, i32) -> Result<AppendInfo, StorageError>,
    ) -> Result<Result<(AppendInfo, i32), AppendError>, NotLeader> {
        let (appended, sync) = self.lead(|log, state| {
            if min_insync_replicas.is_some_and(|min| state.isr.len() < min) {
                return (
                    Err(AppendError::NotEnoughReplicas {
                        isr: state.isr.len(),
                        required: min_insync_replicas.unwrap_or(0),
                    }),
                    Ok(None),
                );
            }
            let appended = append(log, state.leader_epoch);
            if appended.is_ok() {
                self.advance_high_watermark(log, state);
            }
            (
                appended
                    .map(|info| (info, state.leader_epoch))
                    .map_err(AppendError::Storage),
                log.take_roll_sync(),
            )
        })?;
        if appended.is_ok() {
            // Waiting fetches (consumers, and followers, which replicate
            // it: acks=all and internal writes wait for them) look again.
            self.node.notify_appended();
        }
        // The log's lock is released: the sync may take it again.
        self.start_roll_sync(sync);
        Ok(appended)
    }

    /// Runs what [`PartitionLog::take_roll_sync`] returned on a blocking
    /// thread, once the log's lock is released.
    pub(crate) fn start_roll_sync(self: &Arc<Self>, sync: Result<Option<RollSync>, StorageError>) {
        match sync {
            Ok(Some(sync)) => self.spawn_roll_sync(sync),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(topic = %self.topic, partition = self.index, %error, "preparing the fsync of a rolled segment failed; the next flush does it");
            }
        }
    }

    /// Runs what [`PartitionLog::take_after_lock`] returned, here: call it
    /// after the log's lock is released, on a thread that may block.
    pub(crate) fn run_after_lock(&self, after_lock: storage::checkpoint::AfterLock) {
        if let Err(error) = after_lock.run() {
            tracing::warn!(topic = %self.topic, partition = self.index, %error, "writing checkpoints or removing deleted segments failed; the next open does it");
        }
    }

    fn spawn_roll_sync(self: &Arc<Self>, sync: RollSync) {
        let partition = self.clone();
        let run = move || {
            if let Err(error) = sync.run() {
                // The segments stay unflushed; the next flush (or close) retries.
                tracing::error!(topic = %partition.topic, partition = partition.index, %error, "fsync of a rolled segment failed");
                return;
            }
            let completed = partition.with_log(|log| {
                let completed = log.complete_roll_sync(sync.up_to);
                (completed, log.take_after_lock())
            });
            let completed =
                completed.map(|(completed, after_lock)| completed.and(after_lock.run()));
            if let Ok(Err(error)) = completed {
                tracing::error!(topic = %partition.topic, partition = partition.index, %error, "moving the recovery point failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(run);
            }
            // No runtime (a tool or test calling in directly): do it here.
            Err(_) => run(),
        }
    }

    pub(crate) fn put_log(&self, log: PartitionLog) {
        *self.log.lock() = Some(log);
    }

    pub(crate) fn take_log(&self) -> Option<PartitionLog> {
        self.log.lock().take()
    }
}
