//! Followers fetch from their leaders: one task per leader broker, with one
//! connection and one Fetch request in flight carrying every partition this
//! broker follows on that leader, as Kafka's replica fetcher threads do.
//!
//! Each partition is fetched from its log end offset, naming the epoch of
//! its last batch (`last_fetched_epoch`, KIP-595 style): when the leader's
//! log diverges from the follower's there, the leader answers with the end
//! of the last epoch they share (`diverging_epoch`) and the follower
//! truncates to it before fetching again — never just to the high
//! watermark (KIP-101/KIP-279). Fetched batches are appended byte for byte;
//! the follower's high watermark follows the leader's.
//!
//! Appends overlap the next fetch: once an answer with records arrives,
//! they are appended on a blocking thread while the next fetch, from the
//! end of what was received, is already on its way. That fetch tells the
//! leader, in a tagged field of our own ([`WRITTEN_END_TAG`]), where this
//! replica's log really ends; the leader counts only that towards the high
//! watermark and the ISR, so nothing is acknowledged with acks=all that a
//! follower holds only in memory. Without the overlap each follower's loop
//! is fetch, then append, then fetch, and a fast producer outruns it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId, FetchRequest};
use protocol::batch::Batches;
use protocol::extensions::WRITTEN_END_TAG;
use storage::{PartitionLog, StorageError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::ReplicaFetchConfig;
use crate::partition::Partition;
use crate::peers::Connector;
use client::Client;

/// Fetch v15+ carries the follower's broker epoch (`replica_state`).
const FETCH_VERSION: i16 = 15;
const CLIENT_ID: &str = "kbroker-replica-fetcher";
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

type Followed = Arc<Mutex<BTreeMap<(Uuid, i32), Arc<Partition>>>>;

struct Fetcher {
    partitions: Followed,
    wake: Arc<Notify>,
}

/// The fetchers of this broker, by leader.
pub(crate) struct ReplicaFetchers {
    node_id: i32,
    connector: Connector,
    settings: ReplicaFetchConfig,
    by_leader: Mutex<HashMap<i32, Fetcher>>,
    shutdown: CancellationToken,
}

impl ReplicaFetchers {
    pub(crate) fn new(node_id: i32, connector: Connector, settings: ReplicaFetchConfig) -> Self {
        ReplicaFetchers {
            node_id,
            connector,
            settings,
            by_leader: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        }
    }

    /// Fetches `partition` from `leader` from now on (and from no other).
    pub(crate) fn follow(&self, partition: &Arc<Partition>, leader: i32) {
        let key = (partition.topic_id, partition.index);
        let mut by_leader = self.by_leader.lock();
        for (other, fetcher) in by_leader.iter() {
            if *other != leader {
                fetcher.partitions.lock().remove(&key);
            }
        }
        let fetcher = by_leader.entry(leader).or_insert_with(|| {
            let fetcher = Fetcher {
                partitions: Arc::new(Mutex::new(BTreeMap::new())),
                wake: Arc::new(Notify::new()),
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(run(
                        leader,
                        self.node_id,
                        self.connector.clone(),
                        self.settings,
                        fetcher.partitions.clone(),
                        fetcher.wake.clone(),
                        self.shutdown.clone(),
                    ));
                }
                Err(_) => tracing::error!(leader, "no runtime to fetch from the leader on"),
            }
            fetcher
        });
        fetcher.partitions.lock().insert(key, partition.clone());
        fetcher.wake.notify_one();
    }

    /// Stops fetching `partition` from anyone.
    pub(crate) fn unfollow(&self, partition: &Partition) {
        let key = (partition.topic_id, partition.index);
        let by_leader = self.by_leader.lock();
        for fetcher in by_leader.values() {
            fetcher.partitions.lock().remove(&key);
        }
    }

    pub(crate) fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// An append of fetched records running on a blocking thread, and where
/// the follower's log will end once it is done.
struct Appending {
    /// The end of the whole batches being appended: the next fetch's offset.
    end: i64,
    /// The leader epoch of the last of them.
    last_epoch: i32,
    /// The log end and start before the append: what this replica has.
    written_end: i64,
    log_start_offset: i64,
    /// The append; a panic in it counts as a failed one.
    done: tokio::task::JoinHandle<Appended>,
}

/// How an append in the background went.
#[derive(Clone, Copy)]
struct Appended {
    /// `false` when the leader's answer was refused (see [`apply_response`]).
    applied: bool,
    /// The log ends where the append meant it to.
    complete: bool,
}

async fn run(
    leader: i32,
    node_id: i32,
    connector: Connector,
    settings: ReplicaFetchConfig,
    partitions: Followed,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut client: Option<Client> = None;
    let mut failures = 0u32;
    let mut appending: HashMap<(Uuid, i32), Appending> = HashMap::new();
    let overlap_min_bytes = usize::try_from(settings.partition_max_bytes / 2).unwrap_or(0);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let followed: Vec<Arc<Partition>> = partitions.lock().values().cloned().collect();
        if followed.is_empty() {
            finish_appends(&mut appending).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => continue,
            }
        }
        if client.is_none() {
            finish_appends(&mut appending).await;
            match connector.connect(leader, CLIENT_ID).await {
                Ok(connected) => {
                    tracing::info!(
                        leader,
                        partitions = followed.len(),
                        "fetching from the leader"
                    );
                    client = Some(connected);
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(leader, %error, "cannot reach the leader to fetch from it");
                    }
                    pause(failures, &shutdown).await;
                    continue;
                }
            }
        }
        let broker_epoch = connector
            .store()
            .snapshot()
            .brokers
            .get(&node_id)
            .map_or(-1, |broker| broker.epoch);
        let (request, epochs) =
            fetch_request(node_id, broker_epoch, &followed, &appending, settings);
        let timeout = Duration::from_millis(settings.wait_max_ms as u64) + Duration::from_secs(10);
        let connection = client.as_mut().expect("connected above");
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = tokio::time::timeout(timeout, connection.call(request, FETCH_VERSION)) => answer,
        };
        // What was being appended is in the log (or failed) before anything
        // of this answer is applied after it.
        let finished = finish_appends(&mut appending).await;
        let mut backing_off = finished.values().any(|appended| !appended.applied);
        match answer {
            Ok(Ok(response)) if response.error_code == 0 => {
                failures = 0;
                let by_key: HashMap<(Uuid, i32), &Arc<Partition>> = followed
                    .iter()
                    .map(|p| ((p.topic_id, p.index), p))
                    .collect();
                for topic in response.responses {
                    for data in topic.partitions {
                        let key = (topic.topic_id, data.partition_index);
                        let (Some(partition), Some(epoch)) = (by_key.get(&key), epochs.get(&key))
                        else {
                            continue;
                        };
                        if finished
                            .get(&key)
                            .is_some_and(|appended| !appended.complete)
                        {
                            // Fetched from where a failed append would have
                            // ended: fetch again from the log's real end.
                            continue;
                        }
                        match start_append(partition, leader, *epoch, data, overlap_min_bytes) {
                            Ok(started) => {
                                appending.insert(key, started);
                            }
                            Err(applied) => backing_off |= !applied,
                        }
                    }
                }
                if backing_off {
                    // The leader does not (yet) see itself as leader of some
                    // of them: give the metadata a moment to agree.
                    pause(1, &shutdown).await;
                }
            }
            Ok(Ok(response)) => {
                tracing::debug!(
                    leader,
                    error = response.error_code,
                    "the leader refused a fetch"
                );
                failures += 1;
                pause(failures, &shutdown).await;
            }
            Ok(Err(error)) => {
                tracing::info!(leader, %error, "fetching from the leader failed; reconnecting");
                client = None;
                failures += 1;
                pause(failures, &shutdown).await;
            }
            Err(_) => {
                tracing::info!(
                    leader,
                    "the leader did not answer a fetch in time; reconnecting"
                );
                client = None;
            }
        }
    }
}

/// Waits for the appends in the background; how each went.
async fn finish_appends(
    appending: &mut HashMap<(Uuid, i32), Appending>,
) -> HashMap<(Uuid, i32), Appended> {
    let mut finished = HashMap::with_capacity(appending.len());
    for (key, append) in appending.drain() {
        let appended = append.done.await.unwrap_or_else(|error| {
            tracing::error!(%error, "appending fetched records failed");
            Appended {
                applied: false,
                complete: false,
            }
        });
        finished.insert(key, appended);
    }
    finished
}

/// Applies the leader's answer for one partition: one with at least half a
/// fetch's worth of records (`overlap_min_bytes`: the follower is behind,
/// more is waiting) starts their append on a blocking thread (`Ok`);
/// anything else is applied here (`Err`, with what [`apply_response`]
/// said). A follower that keeps up gains nothing from the overlap, and
/// would pay a round trip more before the leader learns of its append.
fn start_append(
    partition: &Arc<Partition>,
    leader: i32,
    leader_epoch: i32,
    data: PartitionData,
    overlap_min_bytes: usize,
) -> Result<Appending, bool> {
    let plain = data.error_code == 0
        && data.diverging_epoch.epoch == -1
        && data.diverging_epoch.end_offset == -1;
    let whole = data
        .records
        .as_ref()
        .filter(|records| plain && records.len() >= overlap_min_bytes)
        .and_then(|records| {
            Batches::new(records.clone())
                .map_while(Result::ok)
                .last()
                .map(|(header, _)| (header.next_offset(), header.partition_leader_epoch))
        });
    let Some((end, last_epoch)) = whole else {
        return Err(apply_response(partition, leader, leader_epoch, &data));
    };
    let Ok((written_end, log_start_offset)) =
        partition.with_log(|log| (log.log_end_offset(), log.log_start_offset()))
    else {
        return Err(true);
    };
    if end <= written_end {
        // Nothing new (a retried fetch): no need for a thread.
        return Err(apply_response(partition, leader, leader_epoch, &data));
    }
    let appending = partition.clone();
    let done = tokio::task::spawn_blocking(move || {
        let applied = apply_response(&appending, leader, leader_epoch, &data);
        let complete = appending
            .with_log(|log| log.log_end_offset() == end)
            .unwrap_or(false);
        Appended { applied, complete }
    });
    Ok(Appending {
        end,
        last_epoch,
        written_end,
        log_start_offset,
        done,
    })
}

async fn pause(failures: u32, shutdown: &CancellationToken) {
    let wait = BACKOFF_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(BACKOFF_MAX);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(wait) => {}
    }
}

/// The fetch for `followed`, and the leader epoch each partition was asked at.
///
/// A partition whose records are being appended is fetched from where they
/// end, without waiting for its log's lock; its log's real end goes in
/// [`WRITTEN_END_TAG`]. While any is, the leader is asked not to wait for
/// more data, so that it learns of the append soon after it finishes.
fn fetch_request(
    node_id: i32,
    broker_epoch: i64,
    followed: &[Arc<Partition>],
    appending: &HashMap<(Uuid, i32), Appending>,
    settings: ReplicaFetchConfig,
) -> (FetchRequest, HashMap<(Uuid, i32), i32>) {
    let mut by_topic: BTreeMap<Uuid, Vec<FetchPartition>> = BTreeMap::new();
    let mut epochs = HashMap::new();
    for partition in followed {
        let key = (partition.topic_id, partition.index);
        let leader_epoch = partition.leader_epoch();
        let fetch = match appending.get(&key) {
            Some(append) => FetchPartition::default()
                .with_fetch_offset(append.end)
                .with_last_fetched_epoch(append.last_epoch)
                .with_log_start_offset(append.log_start_offset)
                .with_unknown_tagged_field(
                    WRITTEN_END_TAG,
                    Bytes::copy_from_slice(&append.written_end.to_be_bytes()),
                ),
            None => {
                let Ok((log_end_offset, last_epoch, log_start_offset)) =
                    partition.with_log(|log| {
                        (
                            log.log_end_offset(),
                            log.last_epoch(),
                            log.log_start_offset(),
                        )
                    })
                else {
                    continue;
                };
                FetchPartition::default()
                    .with_fetch_offset(log_end_offset)
                    .with_last_fetched_epoch(last_epoch)
                    .with_log_start_offset(log_start_offset)
            }
        };
        epochs.insert(key, leader_epoch);
        by_topic.entry(partition.topic_id).or_default().push(
            fetch
                .with_partition(partition.index)
                .with_current_leader_epoch(leader_epoch)
                .with_partition_max_bytes(settings.partition_max_bytes),
        );
    }
    let wait_max_ms = if appending.is_empty() {
        settings.wait_max_ms
    } else {
        0
    };
    let request = FetchRequest::default()
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(node_id))
                .with_replica_epoch(broker_epoch),
        )
        .with_max_wait_ms(wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(settings.response_max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic_id, partitions)| {
                    FetchTopic::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        );
    (request, epochs)
}

/// Applies the leader's answer for one partition, asked at `leader_epoch`;
/// `false` when the leader refused it for a reason the metadata will settle
/// (not the leader yet, an epoch mismatch). An answer from a leader this
/// broker no longer follows at that epoch is dropped.
fn apply_response(
    partition: &Arc<Partition>,
    leader: i32,
    leader_epoch: i32,
    data: &PartitionData,
) -> bool {
    let error = data.error_code;
    let applied = partition.as_follower(leader, leader_epoch, |log| {
        let applied = (|| -> Result<bool, StorageError> {
            if error == ResponseError::OffsetOutOfRange.code() {
                return out_of_range(log, data).map(|()| true);
            }
            if error != 0 {
                return Ok(false);
            }
            let diverging = &data.diverging_epoch;
            if diverging.epoch != -1 || diverging.end_offset != -1 {
                truncate_diverging(partition, log, diverging.epoch, diverging.end_offset)?;
                return Ok(true);
            }
            if let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) {
                log.append_as_follower(records.clone(), now_ms())?;
            }
            let high_watermark = data.high_watermark.min(log.log_end_offset());
            if high_watermark > log.high_watermark() {
                log.set_high_watermark(high_watermark);
            }
            // The leader's log start (DeleteRecords, retention) becomes this
            // replica's once it has what lies below it, as Kafka's followers
            // do: records deleted on the leader must not come back when this
            // replica leads.
            log.follow_log_start(data.log_start_offset)?;
            Ok(true)
        })();
        // A roll's fsyncs, checkpoints and the removal of segments the log
        // start passed run after the lock is released, as the leader's do.
        (applied, log.take_roll_sync(), log.take_after_lock())
    });
    let applied = applied.map(|(applied, sync, after_lock)| {
        if !after_lock.is_empty() {
            let partition = partition.clone();
            tokio::task::spawn_blocking(move || partition.run_after_lock(after_lock));
        }
        partition.start_roll_sync(sync);
        applied
    });
    match applied {
        Some(Ok(done)) => {
            if !done {
                tracing::debug!(topic = %partition.topic, partition = partition.index, leader, error, "the leader refused to serve the partition");
            }
            done
        }
        Some(Err(error)) => {
            tracing::error!(topic = %partition.topic, partition = partition.index, leader, %error, "applying fetched data failed");
            false
        }
        // Closed, or no longer following that leader at that epoch.
        None => true,
    }
}

/// The leader's log and the follower's part after `epoch`: keep what both
/// have, drop the rest.
fn truncate_diverging(
    partition: &Partition,
    log: &mut PartitionLog,
    epoch: i32,
    end_offset: i64,
) -> Result<(), StorageError> {
    let log_end_offset = log.log_end_offset();
    let target = if epoch < 0 {
        // The leader has no epoch this replica's last one could follow:
        // as Kafka, keep what is known committed.
        log.high_watermark()
    } else {
        match log.end_offset_for_epoch(epoch) {
            (ours, our_end) if ours == epoch => end_offset.min(our_end),
            (ours, our_end) if ours >= 0 => our_end,
            _ => end_offset,
        }
    }
    .min(log_end_offset)
    .max(0);
    if target < log_end_offset {
        tracing::info!(
            topic = %partition.topic,
            partition = partition.index,
            leader_epoch = epoch,
            leader_end_offset = end_offset,
            from = log_end_offset,
            to = target,
            "truncating the log where it diverges from the leader's"
        );
    }
    // Also at the log end: epochs recorded there with no batch (this broker
    // led at them and wrote nothing) go, so the next fetch names the last
    // epoch that wrote.
    log.truncate_to(target)
}

/// The follower asked for an offset the leader has not: below its log
/// start (retention moved it), start over there; past its end, drop what
/// the leader does not have.
fn out_of_range(log: &mut PartitionLog, data: &PartitionData) -> Result<(), StorageError> {
    let log_end_offset = log.log_end_offset();
    if data.log_start_offset > log_end_offset {
        tracing::info!(
            from = log_end_offset,
            to = data.log_start_offset,
            "the leader's log starts after this replica's end: starting over there"
        );
        return log.reset_to(data.log_start_offset);
    }
    if data.high_watermark >= 0 && data.high_watermark < log_end_offset {
        log.truncate_to(data.high_watermark.max(log.log_start_offset()))?;
    }
    Ok(())
}
