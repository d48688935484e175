//! Replication between brokers, as Kafka does it.
//!
//! Followers fetch from their partition's leader with replica fetches
//! (`replica_fetcher`); a follower's fetch offset is what it has. The leader
//! keeps, per follower, that offset and when it last caught up, and moves
//! the high watermark to the smallest log end offset of the ISR — consumers
//! see only what is below it, and `acks=all` produce requests wait for it.
//! A follower that has not caught up for `replica.lag.time.max.ms` leaves
//! the ISR; one that has caught up with the high watermark (and with the
//! start of the leader's epoch) joins it again. ISR changes go through the
//! metadata store, fenced by the leader epoch, the partition epoch and the
//! leader's session (`MetadataStore::alter_isr`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use coordinator::PartitionMetadata;
use kafka_protocol::error::ResponseError;
use storage::PartitionLog;

use super::Partition;
use crate::errors::KafkaResult;

/// The leader's knowledge of its followers, reset at every leader epoch.
#[derive(Debug, Default)]
pub(crate) struct LeaderProgress {
    /// The epoch these entries belong to.
    leader_epoch: i32,
    /// The log end offset when this epoch began: a follower must have at
    /// least that to join the ISR.
    epoch_start_offset: i64,
    /// When this broker became leader at this epoch.
    since: Option<Instant>,
    followers: HashMap<i32, FollowerProgress>,
    /// An ISR change is with the metadata store.
    isr_change_pending: bool,
    /// Replicas that change would add: until it is decided they count for
    /// the high watermark already (KIP-497's maximal ISR), so that nothing
    /// is acknowledged that a replica of the new ISR might lack.
    joining: Vec<i32>,
}

#[derive(Debug, Clone, Copy)]
struct FollowerProgress {
    /// The follower's fetch offset: everything before it, it has.
    log_end_offset: i64,
    /// When it last had everything the leader had.
    last_caught_up: Option<Instant>,
    /// The leader's log end offset at the follower's previous fetch.
    previous_leader_end: i64,
    previous_fetch: Instant,
    /// The session the follower fetched in: a restarted follower starts over.
    broker_epoch: i64,
}

impl Partition {
    /// This broker leads the partition from `state.leader_epoch` on: its
    /// log records where the epoch starts, and what it knew of followers
    /// is forgotten.
    pub(crate) fn become_leader(&self, state: &PartitionMetadata) {
        let _ = self.with_log(|log| {
            if let Err(error) = log.assign_leader_epoch(state.leader_epoch) {
                tracing::error!(topic = %self.topic, partition = self.index, %error, "recording the leader epoch failed");
            }
            *self.progress() = LeaderProgress {
                leader_epoch: state.leader_epoch,
                epoch_start_offset: log.log_end_offset(),
                since: Some(Instant::now()),
                followers: HashMap::new(),
                isr_change_pending: false,
                joining: Vec::new(),
            };
            self.advance_high_watermark(log, state);
        });
        self.notify_changed();
    }

    /// The leader epoch this broker acts as leader at, if it does.
    pub(crate) fn leading_epoch(&self) -> Option<i32> {
        let progress = self.progress();
        progress.since.map(|_| progress.leader_epoch)
    }

    /// KIP-207: the offset this broker's epoch as leader starts at, while
    /// its high watermark is still below it. A new leader's high watermark
    /// is what it last heard from the old leader, until the ISR's followers
    /// fetch from it; meanwhile the end of the log it may show lies below
    /// records the old leader had already reported committed, so a client
    /// asking for the latest offset would be sent backwards.
    pub(crate) fn high_watermark_behind_epoch_start(
        &self,
        log: &PartitionLog,
        state: &PartitionMetadata,
    ) -> Option<i64> {
        let progress = self.progress();
        (progress.since.is_some()
            && progress.leader_epoch == state.leader_epoch
            && progress.epoch_start_offset > log.high_watermark())
        .then_some(progress.epoch_start_offset)
    }

    /// This broker no longer leads the partition.
    pub(crate) fn stop_leading(&self) {
        *self.progress() = LeaderProgress::default();
        self.notify_changed();
    }

    /// The leader's high watermark: the smallest log end offset in the ISR
    /// (with the replicas an ISR change in flight adds), if every member's
    /// is known. Only moves forward.
    pub(crate) fn advance_high_watermark(&self, log: &mut PartitionLog, state: &PartitionMetadata) {
        let progress = self.progress();
        let mut lowest = log.log_end_offset();
        for member in state.isr.iter().chain(&progress.joining) {
            if *member == state.leader {
                continue;
            }
            match progress.followers.get(member) {
                Some(follower) => lowest = lowest.min(follower.log_end_offset),
                None => return,
            }
        }
        drop(progress);
        if lowest > log.high_watermark() {
            log.set_high_watermark(lowest);
            self.notify_changed();
            // Consumers waiting for data see it once it is committed.
            self.node().notify_appended();
        }
    }

    /// A follower fetched from `fetch_offset`: it has received everything
    /// before, and has it in its log up to `written_end` (the same, unless
    /// an append is still running there: see
    /// [`protocol::extensions::WRITTEN_END_TAG`]). Only what is written
    /// counts towards the high watermark; whether the follower keeps up
    /// with the leader (the ISR) goes by what it has received, as the
    /// follower's next fetch, already on its way, is not held up by the
    /// append. Called by the leader while it reads for that fetch.
    pub(crate) fn record_follower_fetch(
        &self,
        log: &mut PartitionLog,
        state: &PartitionMetadata,
        follower: i32,
        broker_epoch: i64,
        (fetch_offset, written_end): (i64, i64),
        now: Instant,
    ) {
        let leader_end = log.log_end_offset();
        {
            let mut progress = self.progress();
            let fresh = FollowerProgress {
                log_end_offset: written_end.min(fetch_offset),
                last_caught_up: None,
                previous_leader_end: -1,
                previous_fetch: now,
                broker_epoch,
            };
            let entry = progress.followers.entry(follower).or_insert(fresh);
            if entry.broker_epoch != broker_epoch {
                *entry = fresh;
            }
            entry.log_end_offset = written_end.min(fetch_offset).min(leader_end);
            // Kafka's rule: caught up now if it has all the leader has; else
            // caught up as of its previous fetch if it has what the leader
            // had then.
            if fetch_offset >= leader_end {
                entry.last_caught_up = Some(now);
            } else if fetch_offset >= entry.previous_leader_end && entry.previous_leader_end >= 0 {
                entry.last_caught_up = Some(entry.previous_fetch);
            }
            entry.previous_leader_end = leader_end;
            entry.previous_fetch = now;
        }
        self.advance_high_watermark(log, state);
    }

    /// The ISR this leader wants now, if it differs from `state.isr` and no
    /// change is in flight: members that have not caught up within
    /// `lag_max` leave, replicas that caught up with the high watermark and
    /// the start of the epoch join, with the session each caught up in.
    /// Marks the change as in flight.
    pub(crate) fn wanted_isr(
        &self,
        log: &PartitionLog,
        state: &PartitionMetadata,
        lag_max: Duration,
        now: Instant,
    ) -> Option<(Vec<i32>, BTreeMap<i32, i64>)> {
        let mut progress = self.progress();
        if progress.isr_change_pending || progress.leader_epoch != state.leader_epoch {
            return None;
        }
        let since = progress.since?;
        let stale = |id: &i32| {
            let last = progress
                .followers
                .get(id)
                .and_then(|f| f.last_caught_up)
                .unwrap_or(since);
            now.saturating_duration_since(last) > lag_max
        };
        let high_watermark = log.high_watermark();
        let caught_up = |id: &i32| {
            progress.followers.get(id).is_some_and(|f| {
                f.log_end_offset >= high_watermark
                    && f.log_end_offset >= progress.epoch_start_offset
            })
        };
        let mut isr: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|id| *id == state.leader || !stale(id))
            .collect();
        // Only replicas outside the ISR join. A member that falls out for
        // lag in this pass stays out: measured against the high watermark
        // it holds back, it would look caught up and come straight back
        // (the ISR reordered, never shrunk, while a paused follower stalls
        // the watermark).
        for replica in &state.replicas {
            if !state.isr.contains(replica) && caught_up(replica) {
                isr.push(*replica);
            }
        }
        if isr == state.isr {
            return None;
        }
        progress.isr_change_pending = true;
        progress.joining = isr
            .iter()
            .copied()
            .filter(|id| !state.isr.contains(id))
            .collect();
        let joining_epochs = progress
            .joining
            .iter()
            .filter_map(|id| Some((*id, progress.followers.get(id)?.broker_epoch)))
            .collect();
        Some((isr, joining_epochs))
    }

    pub(crate) fn isr_change_done(&self) {
        let mut progress = self.progress();
        progress.isr_change_pending = false;
        progress.joining.clear();
    }

    /// Waits until the in-sync replicas have everything before
    /// `end_offset` (acks=all), as leader at `leader_epoch`, for as long as
    /// `deadline` allows. Kafka's answers: NOT_LEADER_OR_FOLLOWER if the
    /// leadership moved meanwhile, NOT_ENOUGH_REPLICAS_AFTER_APPEND if the
    /// ISR shrank below `min_insync_replicas`, REQUEST_TIMED_OUT.
    pub async fn wait_replicated(
        &self,
        end_offset: i64,
        leader_epoch: i32,
        min_insync_replicas: usize,
        deadline: tokio::time::Instant,
    ) -> KafkaResult {
        let mut changes = self.subscribe_changes();
        loop {
            changes.borrow_and_update();
            let now =
                self.lead(|log, state| (log.high_watermark(), state.leader_epoch, state.isr.len()));
            let Ok((high_watermark, epoch, isr)) = now else {
                return Err(ResponseError::NotLeaderOrFollower);
            };
            if epoch != leader_epoch {
                return Err(ResponseError::NotLeaderOrFollower);
            }
            if high_watermark >= end_offset {
                return if isr < min_insync_replicas {
                    Err(ResponseError::NotEnoughReplicasAfterAppend)
                } else {
                    Ok(())
                };
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return Err(ResponseError::NotLeaderOrFollower);
                },
                _ = tokio::time::sleep_until(deadline) => return Err(ResponseError::RequestTimedOut),
            }
        }
    }
}
