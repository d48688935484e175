//! The transaction coordinator, as Kafka's: each transactional id belongs to
//! one partition of `__transaction_state` (Java's hash of the id, as for
//! groups), and the leader of that partition coordinates it. Its state —
//! producer id and epoch, timeout, the transaction's partitions, and where
//! it stands (Empty, Ongoing, PrepareCommit/Abort, CompleteCommit/Abort) —
//! is written to that partition and replicated before it is acted on; a
//! broker that becomes the partition's leader replays it and finishes the
//! transactions it finds half-ended.
//!
//! Ending a transaction: EndTxn writes PrepareCommit (or PrepareAbort) and
//! answers; then the markers are written to every partition of the
//! transaction (`crate::broker::txn_markers`), and CompleteCommit (CompleteAbort) is written.
//! Meanwhile requests for the transactional id get CONCURRENT_TRANSACTIONS
//! and retry. A transaction open longer than its timeout is aborted by the
//! coordinator with the producer's epoch bumped, which fences that producer.
//!
//! Concurrency: the state of each transactional id changes under the one
//! lock, but is written to the log without it. A transactional id with a
//! write in flight is `pending`: other requests for it get
//! CONCURRENT_TRANSACTIONS until the write is done.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use tokio::sync::mpsc;

use super::log::{decode_key, encode_key, TxnState, TxnValue};
use crate::clock::now_ms;
use crate::config::TransactionConfig;
use crate::errors::AppendError;
use crate::errors::KafkaResult;
use crate::internal_topics::{internal_batch, partition_for};
use crate::partition::Partition;
use crate::topics::Topic;

/// Longest a write to `__transaction_state` waits for its replicas.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest EndTxn waits for the markers after PrepareCommit/PrepareAbort is
/// written. Kafka answers at once and lets the producer's next request meet
/// CONCURRENT_TRANSACTIONS (librdkafka then backs off 100 ms: ten
/// transactions a second); answering once the markers are in costs the
/// markers' round trips and no more. Past this the answer goes anyway: the
/// outcome is decided, and the markers follow in the background.
const END_TXN_MARKER_WAIT: Duration = Duration::from_secs(5);
/// An epoch this high is not bumped: the producer gets a new id instead.
const EPOCH_MAX: i16 = i16::MAX - 1;

/// A transactional id's state, as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the latest bump, so that a retried InitProducerId
    /// (KIP-360) gets the same answer again. -1: none.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// A change is being written: other requests wait (CONCURRENT_TRANSACTIONS).
    pub pending: bool,
}

impl TxnMetadata {
    fn value(&self) -> TxnValue {
        let mut partitions: Vec<(String, Vec<i32>)> = Vec::new();
        for (topic, partition) in &self.partitions {
            match partitions.last_mut() {
                Some((last, indexes)) if last == topic => indexes.push(*partition),
                _ => partitions.push((topic.clone(), vec![*partition])),
            }
        }
        TxnValue {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions,
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
        }
    }

    fn from_value(value: TxnValue) -> TxnMetadata {
        TxnMetadata {
            producer_id: value.producer_id,
            producer_epoch: value.producer_epoch,
            last_producer_epoch: -1,
            timeout_ms: value.timeout_ms,
            state: value.state,
            partitions: value
                .partitions
                .into_iter()
                .flat_map(|(topic, indexes)| {
                    indexes.into_iter().map(move |index| (topic.clone(), index))
                })
                .collect(),
            start_ms: value.start_ms,
            last_update_ms: value.last_update_ms,
            pending: false,
        }
    }
}

/// A transaction whose markers are to be written (it is in PrepareCommit
/// or PrepareAbort): what `markers` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
    pub coordinator_epoch: i32,
}

/// A transaction as DescribeTransactions and ListTransactions show it.
#[derive(Debug, Clone)]
pub struct TxnListing {
    pub transactional_id: String,
    pub metadata: TxnMetadata,
}

pub struct TransactionCoordinator {
    config: TransactionConfig,
    txns: Mutex<HashMap<String, TxnMetadata>>,
    /// `__transaction_state`, once it exists.
    state_topic: Mutex<Option<Arc<Topic>>>,
    /// The partitions of `__transaction_state` this broker leads and has
    /// loaded, with the leader epoch it loaded them at: the coordinator
    /// epoch its markers carry.
    owned: Mutex<BTreeMap<i32, i32>>,
    completions: mpsc::UnboundedSender<Completion>,
    completions_rx: Mutex<Option<mpsc::UnboundedReceiver<Completion>>>,
    /// Bumped after every state change, for requests that wait on one.
    changes: tokio::sync::watch::Sender<u64>,
}

impl TransactionCoordinator {
    pub fn new(config: TransactionConfig) -> TransactionCoordinator {
        let (completions, completions_rx) = mpsc::unbounded_channel();
        TransactionCoordinator {
            config,
            txns: Mutex::new(HashMap::new()),
            state_topic: Mutex::new(None),
            owned: Mutex::new(BTreeMap::new()),
            completions,
            completions_rx: Mutex::new(Some(completions_rx)),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn config(&self) -> &TransactionConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TxnMetadata>> {
        self.txns.lock()
    }

    fn owned(&self) -> MutexGuard<'_, BTreeMap<i32, i32>> {
        self.owned.lock()
    }

    /// The transactions to finish, for the one task that writes markers.
    pub fn take_completions(&self) -> Option<mpsc::UnboundedReceiver<Completion>> {
        self.completions_rx.lock().take()
    }

    pub fn state_topic(&self) -> Option<Arc<Topic>> {
        self.state_topic.lock().clone()
    }

    pub fn set_state_topic(&self, topic: Arc<Topic>) {
        *self.state_topic.lock() = Some(topic);
    }

    fn partition_index(&self, transactional_id: &str) -> Option<i32> {
        let count = self.state_topic()?.partitions.len() as i32;
        Some(partition_for(transactional_id, count))
    }

    fn partition_of(&self, transactional_id: &str) -> Option<Arc<Partition>> {
        let topic = self.state_topic()?;
        let index = partition_for(transactional_id, topic.partitions.len() as i32);
        topic.partitions.get(index as usize).cloned()
    }

    /// The coordinator epoch for `transactional_id`, if this broker
    /// coordinates it (leads its partition of `__transaction_state`).
    pub fn coordinator_epoch(&self, transactional_id: &str) -> Option<i32> {
        let index = self.partition_index(transactional_id)?;
        self.owned().get(&index).copied()
    }

    pub fn coordinates(&self, transactional_id: &str) -> bool {
        self.coordinator_epoch(transactional_id).is_some()
    }

    /// Replays one partition of `__transaction_state`, which this broker
    /// now leads at `leader_epoch`: it coordinates its transactional ids
    /// from now on, and finishes the transactions it finds being ended.
    pub fn load_partition(&self, partition: &Partition, leader_epoch: i32) {
        // Read a chunk at a time without the lock of every transactional
        // id: only this coordinator writes the partition, and it does not
        // coordinate its ids until they are loaded.
        let mut loaded: HashMap<String, TxnMetadata> = HashMap::new();
        let read = crate::internal_topics::read_records(partition, 0, |record| {
            let Some(key) = record.key else { return };
            let id = match decode_key(key) {
                Ok(id) => id,
                Err(error) => {
                    tracing::warn!(%error, "skipping a record of __transaction_state");
                    return;
                }
            };
            match record.value.map(TxnValue::decode) {
                None => {
                    loaded.remove(&id);
                }
                Some(Ok(value)) => {
                    loaded.insert(id, TxnMetadata::from_value(value));
                }
                Some(Err(error)) => {
                    tracing::warn!(transactional_id = %id, %error, "skipping a transaction record");
                }
            }
        });
        if read.is_none() {
            return;
        }
        let mut txns = self.lock();
        let count = loaded.len();
        let open = loaded
            .values()
            .filter(|txn| txn.state == TxnState::Ongoing)
            .count();
        let mut to_complete = Vec::new();
        for (id, metadata) in loaded {
            if let Some(completion) = completion_of(&id, &metadata, leader_epoch) {
                to_complete.push(completion);
            }
            txns.insert(id, metadata);
        }
        self.owned().insert(partition.index, leader_epoch);
        drop(txns);
        tracing::info!(
            partition = partition.index,
            leader_epoch,
            transactional_ids = count,
            open,
            completing = to_complete.len(),
            "loaded transaction state"
        );
        for completion in to_complete {
            let _ = self.completions.send(completion);
        }
    }

    /// This broker no longer leads partition `index` of `__transaction_state`.
    pub fn unload_partition(&self, index: i32) {
        let mut txns = self.lock();
        if self.owned().remove(&index).is_none() {
            return;
        }
        let Some(topic) = self.state_topic() else {
            return;
        };
        let count = topic.partitions.len() as i32;
        txns.retain(|id, _| partition_for(id, count) != index);
        tracing::info!(
            partition = index,
            "no longer coordinating the transactions of this partition"
        );
    }

    /// Writes `value` (None: a tombstone) for `transactional_id` to its
    /// partition of `__transaction_state` and waits until the in-sync
    /// replicas (at least `transaction.state.log.min.isr`, capped by the
    /// replica count) have it. Kafka's errors: NOT_COORDINATOR when the
    /// leadership moved, COORDINATOR_NOT_AVAILABLE when replicas are too
    /// few or too slow.
    async fn write(&self, transactional_id: &str, value: Option<TxnValue>) -> KafkaResult<()> {
        let not_available = ResponseError::CoordinatorNotAvailable;
        let partition = self.partition_of(transactional_id).ok_or(not_available)?;
        let batch = internal_batch(
            vec![(encode_key(transactional_id), value.map(|v| v.encode()))],
            now_ms(),
            None,
        )
        .map_err(|error| {
            tracing::error!(%error, "encoding a __transaction_state batch failed");
            ResponseError::UnknownServerError
        })?;
        let min_isr = self
            .config
            .state_log_min_isr
            .min(partition.state().replicas.len())
            .max(1);
        let (info, leader_epoch) = match partition.append(batch, now_ms(), Some(min_isr)) {
            Ok(Ok(appended)) => appended,
            Ok(Err(AppendError::NotEnoughReplicas { .. })) => return Err(not_available),
            Ok(Err(error)) => {
                tracing::error!(transactional_id, %error, "appending to __transaction_state failed");
                return Err(not_available);
            }
            Err(_) => return Err(ResponseError::NotCoordinator),
        };
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        partition
            .wait_replicated(info.last_offset + 1, leader_epoch, min_isr, deadline)
            .await
            .map_err(|error| {
                if error == ResponseError::NotLeaderOrFollower {
                    ResponseError::NotCoordinator
                } else {
                    not_available
                }
            })
    }

    /// Marks `transactional_id` pending, writes `next` as its state and
    /// applies it once written; on failure the old state stays.
    async fn transition(&self, transactional_id: &str, next: TxnMetadata) -> KafkaResult<()> {
        let written = self.write(transactional_id, Some(next.value())).await;
        let mut txns = self.lock();
        match txns.get_mut(transactional_id) {
            Some(current) => {
                current.pending = false;
                if written.is_ok() {
                    *current = TxnMetadata {
                        pending: false,
                        ..next
                    };
                }
            }
            None => {
                // Unloaded meanwhile: the new leader has what was written.
                return written.and(Err(ResponseError::NotCoordinator));
            }
        }
        drop(txns);
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
        written
    }

    /// InitProducerId with a transactional id. `expected` is the producer id
    /// and epoch a producer that had them asks to keep (KIP-360, v3+).
    pub async fn init_producer_id(
        &self,
        producer_ids: &super::ProducerIds,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> KafkaResult<(i64, i16)> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        if !self.coordinates(transactional_id) {
            return Err(ResponseError::NotCoordinator);
        }
        // A new transactional id needs a producer id: taken before the lock.
        if !self.lock().contains_key(transactional_id) {
            let producer_id = producer_ids.next().await.map_err(|error| {
                tracing::warn!(%error, "no producer id to give");
                ResponseError::CoordinatorNotAvailable
            })?;
            self.lock()
                .entry(transactional_id.to_string())
                .or_insert_with(|| TxnMetadata {
                    producer_id,
                    producer_epoch: -1,
                    last_producer_epoch: -1,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    last_update_ms: now_ms(),
                    pending: false,
                });
        }
        let (next, fence) = {
            let mut txns = self.lock();
            let Some(current) = txns.get_mut(transactional_id) else {
                return Err(ResponseError::NotCoordinator);
            };
            if current.pending {
                return Err(ResponseError::ConcurrentTransactions);
            }
            if let Some((producer_id, epoch)) = expected.filter(|(id, _)| *id >= 0) {
                if current.producer_epoch >= 0 && producer_id != current.producer_id {
                    return Err(ResponseError::ProducerFenced);
                }
                if epoch != current.producer_epoch {
                    if epoch == current.last_producer_epoch && current.state == TxnState::Empty {
                        // A retry of the bump that got us here.
                        return Ok((current.producer_id, current.producer_epoch));
                    }
                    return Err(ResponseError::ProducerFenced);
                }
            }
            match current.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                    return Err(ResponseError::ConcurrentTransactions)
                }
                TxnState::Ongoing => {
                    // A new producer instance: the open transaction is
                    // aborted at a bumped epoch, which fences the old one.
                    // The caller retries once it is done.
                    let mut next = current.clone();
                    bump_epoch(&mut next);
                    next.state = TxnState::PrepareAbort;
                    next.last_update_ms = now_ms();
                    current.pending = true;
                    (next, true)
                }
                TxnState::Empty
                | TxnState::CompleteCommit
                | TxnState::CompleteAbort
                | TxnState::Dead => {
                    let mut next = current.clone();
                    if next.producer_epoch >= EPOCH_MAX {
                        // Exhausted: a new producer id (taken below).
                        next.producer_id = -1;
                    } else {
                        bump_epoch(&mut next);
                    }
                    next.state = TxnState::Empty;
                    next.partitions.clear();
                    next.timeout_ms = timeout_ms;
                    next.start_ms = -1;
                    next.last_update_ms = now_ms();
                    current.pending = true;
                    (next, false)
                }
            }
        };
        let mut next = next;
        if next.producer_id < 0 {
            match producer_ids.next().await {
                Ok(id) => {
                    next.producer_id = id;
                    next.producer_epoch = 0;
                    next.last_producer_epoch = -1;
                }
                Err(error) => {
                    tracing::warn!(%error, "no producer id to give");
                    self.clear_pending(transactional_id);
                    return Err(ResponseError::CoordinatorNotAvailable);
                }
            }
        }
        self.transition(transactional_id, next.clone()).await?;
        if fence {
            tracing::info!(
                transactional_id,
                producer_id = next.producer_id,
                epoch = next.producer_epoch,
                "a new producer fenced the open transaction: aborting it"
            );
            self.complete_later(transactional_id);
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok((next.producer_id, next.producer_epoch))
    }

    fn clear_pending(&self, transactional_id: &str) {
        if let Some(current) = self.lock().get_mut(transactional_id) {
            current.pending = false;
        }
    }

    /// Checks that `producer_id` at `epoch` is the current producer of
    /// `transactional_id`, and that no change is in flight.
    fn check_producer<'a>(
        txns: &'a mut HashMap<String, TxnMetadata>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> KafkaResult<&'a mut TxnMetadata> {
        let Some(current) = txns.get_mut(transactional_id) else {
            return Err(ResponseError::InvalidProducerIdMapping);
        };
        if current.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if current.producer_epoch != epoch {
            return Err(ResponseError::ProducerFenced);
        }
        if current.pending {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(current)
    }

    /// Checks a request of `producer_id` at `epoch` for `transactional_id`
    /// and has `decide` compute the state to write from the current one
    /// (`None`: nothing to write, the request is done); marks the id
    /// pending when there is something to write.
    fn prepare_change(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        decide: impl FnOnce(&TxnMetadata) -> KafkaResult<Option<TxnMetadata>>,
    ) -> KafkaResult<Option<TxnMetadata>> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        if !self.coordinates(transactional_id) {
            return Err(ResponseError::NotCoordinator);
        }
        let mut txns = self.lock();
        let current = Self::check_producer(&mut txns, transactional_id, producer_id, epoch)?;
        let next = decide(current)?;
        if next.is_some() {
            current.pending = true;
        }
        Ok(next)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's partition of
    /// `__consumer_offsets`): the partitions join the transaction, which is
    /// Ongoing from then on.
    pub async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> KafkaResult<()> {
        let next = self.prepare_change(transactional_id, producer_id, epoch, |current| {
            match current.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                    return Err(ResponseError::ConcurrentTransactions)
                }
                TxnState::Ongoing
                    if partitions
                        .iter()
                        .all(|partition| current.partitions.contains(partition)) =>
                {
                    return Ok(None);
                }
                _ => {}
            }
            let mut next = current.clone();
            if next.state != TxnState::Ongoing {
                next.partitions.clear();
                next.start_ms = now_ms();
            }
            next.partitions.extend(partitions.iter().cloned());
            next.state = TxnState::Ongoing;
            next.last_update_ms = now_ms();
            Ok(Some(next))
        })?;
        match next {
            Some(next) => self.transition(transactional_id, next).await,
            None => Ok(()),
        }
    }

    /// EndTxn: PrepareCommit or PrepareAbort is written, then the markers
    /// and the completion follow (waited for, at most
    /// [`END_TXN_MARKER_WAIT`]).
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> KafkaResult<()> {
        let next = self.prepare_change(transactional_id, producer_id, epoch, |current| {
            match (current.state, commit) {
                (TxnState::Ongoing, _) => {}
                // A retry of what is already done.
                (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                    return Ok(None)
                }
                // A retry of what is being done.
                (TxnState::PrepareCommit, true)
                | (TxnState::PrepareAbort, false)
                | (TxnState::PrepareEpochFence, _) => {
                    return Err(ResponseError::ConcurrentTransactions)
                }
                (state, _) => {
                    tracing::info!(
                        transactional_id,
                        state = state.name(),
                        commit,
                        "EndTxn in a state that cannot end that way"
                    );
                    return Err(ResponseError::InvalidTxnState);
                }
            }
            let mut next = current.clone();
            next.state = if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            next.last_update_ms = now_ms();
            Ok(Some(next))
        })?;
        let Some(next) = next else {
            return Ok(());
        };
        self.transition(transactional_id, next).await?;
        self.complete_later(transactional_id);
        self.wait_completed(transactional_id, END_TXN_MARKER_WAIT)
            .await;
        Ok(())
    }

    /// Waits, at most `limit`, until `transactional_id` is no longer being
    /// ended (its markers are written and Complete* with them).
    async fn wait_completed(&self, transactional_id: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let ending = self.lock().get(transactional_id).is_some_and(|txn| {
                matches!(txn.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
            });
            if !ending {
                return;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Hands the transaction, now in PrepareCommit or PrepareAbort, to the
    /// marker writer.
    fn complete_later(&self, transactional_id: &str) {
        let Some(epoch) = self.coordinator_epoch(transactional_id) else {
            return;
        };
        let completion = self
            .lock()
            .get(transactional_id)
            .and_then(|metadata| completion_of(transactional_id, metadata, epoch));
        if let Some(completion) = completion {
            let _ = self.completions.send(completion);
        }
    }

    /// Whether `completion` is still this broker's to finish: it coordinates
    /// the id at that epoch and the transaction is still the one prepared.
    pub fn still_completing(&self, completion: &Completion) -> bool {
        if self.coordinator_epoch(&completion.transactional_id)
            != Some(completion.coordinator_epoch)
        {
            return false;
        }
        self.lock()
            .get(&completion.transactional_id)
            .and_then(|metadata| {
                completion_of(
                    &completion.transactional_id,
                    metadata,
                    completion.coordinator_epoch,
                )
            })
            .is_some_and(|current| current == *completion)
    }

    /// Every marker of `completion` is written: the transaction is complete.
    pub async fn complete(&self, completion: &Completion) -> KafkaResult<()> {
        let next = {
            let mut txns = self.lock();
            let Some(current) = txns.get_mut(&completion.transactional_id) else {
                return Err(ResponseError::NotCoordinator);
            };
            if current.pending
                || completion_of(
                    &completion.transactional_id,
                    current,
                    completion.coordinator_epoch,
                )
                .as_ref()
                    != Some(completion)
            {
                return Err(ResponseError::ConcurrentTransactions);
            }
            let mut next = current.clone();
            next.state = if completion.commit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            };
            next.partitions.clear();
            next.last_update_ms = now_ms();
            current.pending = true;
            next
        };
        self.transition(&completion.transactional_id, next).await
    }

    /// Aborts, with the producer's epoch bumped (fencing it), every
    /// transaction open longer than its timeout.
    pub async fn abort_timed_out(&self) {
        let now = now_ms();
        let due: Vec<(String, TxnMetadata)> = {
            let mut txns = self.lock();
            txns.iter_mut()
                .filter(|(_, txn)| {
                    txn.state == TxnState::Ongoing
                        && !txn.pending
                        && now.saturating_sub(txn.start_ms) > i64::from(txn.timeout_ms)
                })
                .map(|(id, txn)| {
                    let mut next = txn.clone();
                    if next.producer_epoch < EPOCH_MAX {
                        bump_epoch(&mut next);
                    }
                    next.state = TxnState::PrepareAbort;
                    next.last_update_ms = now;
                    txn.pending = true;
                    (id.clone(), next)
                })
                .collect()
        };
        for (id, next) in due {
            tracing::info!(
                transactional_id = %id,
                producer_id = next.producer_id,
                epoch = next.producer_epoch,
                timeout_ms = next.timeout_ms,
                "aborting a transaction past its timeout"
            );
            if self.transition(&id, next).await.is_ok() {
                self.complete_later(&id);
            }
        }
    }

    /// Forgets transactional ids unused for `transactional.id.expiration.ms`
    /// (with no transaction open), writing a tombstone for each.
    pub async fn expire_transactional_ids(&self) {
        let now = now_ms();
        let expiration = self.config.transactional_id_expiration_ms;
        let due: Vec<String> = {
            let mut txns = self.lock();
            txns.iter_mut()
                .filter(|(_, txn)| {
                    matches!(
                        txn.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    ) && !txn.pending
                        && now.saturating_sub(txn.last_update_ms) > expiration
                })
                .map(|(id, txn)| {
                    txn.pending = true;
                    id.clone()
                })
                .collect()
        };
        for id in due {
            let written = self.write(&id, None).await;
            let mut txns = self.lock();
            if written.is_ok() {
                txns.remove(&id);
                tracing::info!(transactional_id = %id, "transactional id expired");
            } else if let Some(txn) = txns.get_mut(&id) {
                txn.pending = false;
            }
        }
    }

    /// KIP-890 verification, for a partition leader about to append a
    /// producer's first transactional batch: for each partition, NONE if it
    /// is in the producer's open transaction at that epoch, else Kafka's
    /// error (NOT_COORDINATOR, INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED,
    /// INVALID_TXN_STATE).
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<KafkaResult> {
        let all = |error: ResponseError| vec![Err(error); partitions.len()];
        if !self.coordinates(transactional_id) {
            return all(ResponseError::NotCoordinator);
        }
        let txns = self.lock();
        let Some(txn) = txns.get(transactional_id) else {
            return all(ResponseError::InvalidProducerIdMapping);
        };
        if txn.producer_id != producer_id {
            return all(ResponseError::InvalidProducerIdMapping);
        }
        if txn.producer_epoch != epoch {
            return all(ResponseError::ProducerFenced);
        }
        partitions
            .iter()
            .map(|partition| {
                if txn.state == TxnState::Ongoing && txn.partitions.contains(partition) {
                    Ok(())
                } else {
                    Err(ResponseError::InvalidTxnState)
                }
            })
            .collect()
    }

    /// The transactional ids this broker coordinates, with their state.
    pub fn listings(&self) -> Vec<TxnListing> {
        let mut listed: Vec<TxnListing> = self
            .lock()
            .iter()
            .map(|(id, metadata)| TxnListing {
                transactional_id: id.clone(),
                metadata: metadata.clone(),
            })
            .collect();
        listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        listed
    }

    /// One transactional id's state, if this broker coordinates it.
    pub fn describe(&self, transactional_id: &str) -> KafkaResult<TxnMetadata> {
        if !self.coordinates(transactional_id) {
            return Err(ResponseError::NotCoordinator);
        }
        self.lock()
            .get(transactional_id)
            .cloned()
            .ok_or(ResponseError::TransactionalIdNotFound)
    }
}

fn bump_epoch(metadata: &mut TxnMetadata) {
    metadata.last_producer_epoch = metadata.producer_epoch;
    metadata.producer_epoch = metadata.producer_epoch.saturating_add(1).max(0);
}

/// The markers to write for a transaction in PrepareCommit or PrepareAbort.
fn completion_of(
    transactional_id: &str,
    metadata: &TxnMetadata,
    coordinator_epoch: i32,
) -> Option<Completion> {
    let commit = match metadata.state {
        TxnState::PrepareCommit => true,
        TxnState::PrepareAbort => false,
        _ => return None,
    };
    Some(Completion {
        transactional_id: transactional_id.to_string(),
        producer_id: metadata.producer_id,
        producer_epoch: metadata.producer_epoch,
        commit,
        partitions: metadata.partitions.iter().cloned().collect(),
        coordinator_epoch,
    })
}
