//! The broker's view of the cluster: every snapshot of the cluster
//! metadata that the store publishes is applied to this broker's topics and
//! partitions, in order, one at a time — the role that LeaderAndIsr and
//! StopReplica requests from the controller play in Kafka.
//!
//! Applying a snapshot: new topics and partitions get their `Partition`s,
//! with a log opened (recovered) where this broker holds a replica; topics
//! gone from the metadata (or re-created under a new id) are closed and
//! their directories removed; each partition takes its new state (leader,
//! epochs, replicas, ISR); group coordination is loaded where this broker
//! became leader of a `__consumer_offsets` partition and unloaded where it
//! stopped being one; topic and dynamic broker configs reach the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use coordinator::{ClusterMetadata, PartitionMetadata, TopicMetadata, NO_LEADER};
use storage::{LogConfig, PartitionLog};
use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::clock::now_ms;
use crate::data_dir;
use crate::internal_topics::OFFSETS_TOPIC;
use crate::internal_topics::TRANSACTION_STATE_TOPIC;
use crate::partition::Partition;
use crate::topic_config;
use crate::topics::{Topic, Topics};

/// Applies every snapshot the store publishes until shutdown, and decides
/// the partitions' roles again whenever this broker's session changes.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut snapshots = broker.store.subscribe();
    let mut epochs = broker.store.subscribe_broker_epoch();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let applying = broker.clone();
        let applied = tokio::task::spawn_blocking(move || applying.apply(&snapshot)).await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(failures)) => {
                tracing::error!(failures = failures.len(), first = %failures[0], "some replicas could not be opened");
            }
            Err(error) => tracing::error!(%error, "applying cluster metadata failed"),
        }
        loop {
            let epoch_changed = async {
                match epochs.as_mut() {
                    Some(epochs) => epochs.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = snapshots.changed() => if changed.is_err() { return } else { break },
                changed = epoch_changed => {
                    if !changed {
                        epochs = None;
                        continue;
                    }
                    let deciding = broker.clone();
                    if let Err(error) = tokio::task::spawn_blocking(move || deciding.session_changed()).await {
                        tracing::error!(%error, "deciding the partitions' roles failed");
                    }
                }
            }
        }
    }
}

impl Broker {
    /// Applies `metadata` to the topics and partitions. Errors are the
    /// replicas whose logs could not be opened (they stay closed, and
    /// requests for them are refused); everything else is applied anyway.
    pub(crate) fn apply(&self, metadata: &Arc<ClusterMetadata>) -> Result<(), Vec<String>> {
        let mut last = self.last_applied.lock();
        // Snapshots may be applied by the loop and by an admin request at
        // once: never go back to an older one.
        if metadata.revision <= last.revision {
            return Ok(());
        }
        let mut failures = Vec::new();
        let defaults_changed = self.apply_broker_configs(metadata);
        let defaults = self.log_defaults();
        let current: Vec<Arc<Topic>> = self.all_topics();
        let mut next = Topics::default();
        for (name, wanted) in &metadata.topics {
            let existing = current.iter().find(|topic| &*topic.name == name);
            let topic = match existing {
                Some(topic) if topic.topic_id == wanted.topic_id => {
                    self.update_topic(topic, wanted, &defaults, defaults_changed, &mut failures)
                }
                Some(old) => {
                    self.remove_topic(old);
                    self.new_topic(wanted, &defaults, &mut failures)
                }
                None => self.new_topic(wanted, &defaults, &mut failures),
            };
            if name == OFFSETS_TOPIC {
                self.groups.set_offsets_topic(topic.clone());
            }
            if name == TRANSACTION_STATE_TOPIC {
                self.transactions.set_state_topic(topic.clone());
            }
            next.by_id.insert(topic.topic_id, topic.clone());
            next.by_name.insert(name.clone(), topic);
        }
        for topic in &current {
            let kept = next
                .by_id
                .get(&topic.topic_id)
                .is_some_and(|kept| kept.name == topic.name);
            if !kept {
                self.remove_topic(topic);
            }
        }
        // This broker registered (again), as the metadata or its own
        // session shows it: the partitions it is named leader of may now be
        // led by it, or no longer.
        let own_epoch = |m: &ClusterMetadata| m.brokers.get(&self.node_id()).map(|b| b.epoch);
        let session_epoch = self.store.broker_epoch();
        let mut decided_at = self.decided_at_epoch.lock();
        if own_epoch(&last) != own_epoch(metadata) || *decided_at != session_epoch {
            *decided_at = session_epoch;
            self.decide_roles_again(next.by_id.values());
        }
        drop(decided_at);
        *self.topics.write() = next;
        *last = metadata.clone();
        drop(last);
        self.applied.send_replace(metadata.revision);
        // Waiting fetches re-check: a partition may have changed hands.
        self.notify_appended();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    /// Recomputes the topic-config defaults from the dynamic broker
    /// configs; returns whether they changed.
    fn apply_broker_configs(&self, metadata: &ClusterMetadata) -> bool {
        let node = self.node_id().to_string();
        let defaults = self
            .config
            .log_with_dynamic(
                metadata.broker_configs.get(""),
                metadata.broker_configs.get(&node),
            )
            .unwrap_or_else(|error| {
                tracing::error!(%error, "ignoring dynamic broker configs that are no longer valid");
                self.config.log.clone()
            });
        let mut current = self.log_defaults.write();
        let changed = *current != defaults;
        *current = defaults;
        changed
    }

    fn new_topic(
        &self,
        metadata: &TopicMetadata,
        defaults: &LogConfig,
        failures: &mut Vec<String>,
    ) -> Arc<Topic> {
        let name: Arc<str> = metadata.name.as_str().into();
        let partitions = metadata
            .partitions
            .iter()
            .map(|state| self.new_partition(&name, metadata, state, defaults, failures))
            .collect();
        Arc::new(Topic {
            name,
            topic_id: metadata.topic_id,
            partitions,
            configs: metadata.configs.clone(),
        })
    }

    fn new_partition(
        &self,
        name: &Arc<str>,
        metadata: &TopicMetadata,
        state: &PartitionMetadata,
        defaults: &LogConfig,
        failures: &mut Vec<String>,
    ) -> Arc<Partition> {
        let partition = Arc::new(Partition::new(
            name.clone(),
            metadata.topic_id,
            self.node.clone(),
            state.clone(),
            None,
        ));
        if state.replicas.contains(&self.node_id()) {
            match self.open_log(metadata, state.partition, defaults) {
                Ok(log) => partition.put_log(log),
                Err(error) => failures.push(error),
            }
        }
        self.took_state(&partition, None, state);
        partition
    }

    fn update_topic(
        &self,
        topic: &Arc<Topic>,
        metadata: &TopicMetadata,
        defaults: &LogConfig,
        defaults_changed: bool,
        failures: &mut Vec<String>,
    ) -> Arc<Topic> {
        let mut partitions = topic.partitions.clone();
        for state in &metadata.partitions {
            match topic.partition(state.partition) {
                Some(partition) => {
                    self.update_partition(partition, metadata, state, defaults, failures);
                }
                None => partitions.push(self.new_partition(
                    &topic.name,
                    metadata,
                    state,
                    defaults,
                    failures,
                )),
            }
        }
        let configs_changed = topic.configs != metadata.configs;
        if configs_changed || defaults_changed {
            topic.apply_log_config(defaults, &metadata.configs);
        }
        if !configs_changed && partitions.len() == topic.partitions.len() {
            return topic.clone();
        }
        Arc::new(Topic {
            name: topic.name.clone(),
            topic_id: topic.topic_id,
            partitions,
            configs: metadata.configs.clone(),
        })
    }

    fn update_partition(
        &self,
        partition: &Arc<Partition>,
        metadata: &TopicMetadata,
        state: &PartitionMetadata,
        defaults: &LogConfig,
        failures: &mut Vec<String>,
    ) {
        let before = partition.state();
        let should_host = state.replicas.contains(&self.node_id());
        match (partition.is_hosted(), should_host) {
            (false, true) => match self.open_log(metadata, state.partition, defaults) {
                Ok(log) => partition.put_log(log),
                Err(error) => failures.push(error),
            },
            (true, false) => {
                tracing::info!(topic = %partition.topic, partition = partition.index, "this broker no longer holds a replica; removing it");
                self.close_replica(partition, true);
            }
            _ => {}
        }
        if before != *state {
            partition.set_state(state.clone());
            self.took_state(partition, Some(&before), state);
        }
    }

    /// This broker's session changed (it registered, again, or lost it):
    /// the partitions' roles are decided again if the snapshots applied
    /// have not done so. A registration can reach the metadata (and an
    /// election naming this broker, applied as a follower's state) before
    /// the session that made it is this broker's own; no later snapshot
    /// need come to change that.
    pub(crate) fn session_changed(&self) {
        let _applying = self.last_applied.lock();
        let session_epoch = self.store.broker_epoch();
        let mut decided_at = self.decided_at_epoch.lock();
        if *decided_at == session_epoch {
            return;
        }
        *decided_at = session_epoch;
        tracing::info!(broker_epoch = ?session_epoch, "session changed: deciding the partitions' roles again");
        self.decide_roles_again(self.all_topics().iter());
    }

    fn decide_roles_again<'a>(&self, topics: impl Iterator<Item = &'a Arc<Topic>>) {
        for topic in topics {
            for partition in &topic.partitions {
                let state = partition.state();
                self.took_state(partition, Some(&state), &state);
            }
        }
    }

    /// What follows a partition's change of state here: the replica's role
    /// (leader at a new epoch, follower of a new leader, neither), logs of
    /// the leadership change, and group coordination moving with the
    /// leaders of `__consumer_offsets`.
    fn took_state(
        &self,
        partition: &Arc<Partition>,
        before: Option<&PartitionMetadata>,
        state: &PartitionMetadata,
    ) {
        let node = self.node_id();
        let hosted = partition.is_hosted();
        // Whether it acts as leader now, and at which epoch: it may be
        // named leader and yet not act as one (restarted since it was in
        // sync, or not registered yet), and start once that changes.
        let acting = partition.leading_epoch();
        let is_leader = self.node.named_leader(state) && hosted;
        let epoch_changed = before.is_none_or(|b| b.leader_epoch != state.leader_epoch);
        if before.is_some() && epoch_changed {
            tracing::info!(
                topic = %partition.topic,
                partition = partition.index,
                leader = state.leader,
                leader_epoch = state.leader_epoch,
                isr = ?state.isr,
                "partition leadership changed"
            );
        }
        let leads_anew = is_leader && acting != Some(state.leader_epoch);
        if is_leader {
            if leads_anew {
                self.fetchers.unfollow(partition);
                partition.become_leader(state);
            } else {
                // The ISR changed: the high watermark may move.
                let _ = partition.lead(|log, state| partition.advance_high_watermark(log, state));
            }
        } else {
            if acting.is_some() {
                partition.stop_leading();
            }
            if hosted && state.leader != NO_LEADER && state.leader != node {
                self.fetchers.follow(partition, state.leader);
            } else {
                self.fetchers.unfollow(partition);
            }
        }
        // Group and transaction coordination move with the leaders of
        // their internal topics' partitions.
        let lost = acting.is_some() && (!is_leader || leads_anew);
        if &*partition.topic == OFFSETS_TOPIC {
            if lost {
                self.groups.unload_partition(partition.index);
            }
            if leads_anew {
                self.groups
                    .load_partition(partition, std::time::Instant::now(), now_ms());
            }
        } else if &*partition.topic == TRANSACTION_STATE_TOPIC {
            if lost {
                self.transactions.unload_partition(partition.index);
            }
            if leads_anew {
                self.transactions
                    .load_partition(partition, state.leader_epoch);
            }
        }
    }

    fn open_log(
        &self,
        metadata: &TopicMetadata,
        partition: i32,
        defaults: &LogConfig,
    ) -> Result<PartitionLog, String> {
        let dir = data_dir::partition_dir(&self.config.log_dir, &metadata.name, partition);
        let log_config = topic_config::log_config(defaults, &metadata.configs);
        let replicated = metadata
            .partitions
            .get(partition as usize)
            .is_some_and(|p| p.replicas.len() > 1);
        data_dir::claim_partition_dir(&dir, metadata.topic_id)
            .map_err(|error| error.to_string())
            .and_then(|fresh| {
                if fresh && replicated {
                    // Nothing is committed yet: a crash before the first
                    // checkpoint must not reopen with everything visible.
                    storage::checkpoint::write_offset(
                        &dir,
                        storage::checkpoint::HIGH_WATERMARK_FILE,
                        0,
                    )
                    .map_err(|error| error.to_string())?;
                }
                PartitionLog::open(&dir, log_config, now_ms()).map_err(|error| error.to_string())
            })
            .map_err(|error| {
                tracing::error!(dir = %dir.display(), %error, "opening a replica's log failed");
                format!("{}: {error}", dir.display())
            })
    }

    /// Closes this broker's replica of `partition`; `remove` deletes its
    /// directory too.
    fn close_replica(&self, partition: &Partition, remove: bool) {
        self.fetchers.unfollow(partition);
        partition.stop_leading();
        if &*partition.topic == OFFSETS_TOPIC {
            self.groups.unload_partition(partition.index);
        }
        if &*partition.topic == TRANSACTION_STATE_TOPIC {
            self.transactions.unload_partition(partition.index);
        }
        let Some(log) = partition.take_log() else {
            return;
        };
        let dir = log.dir().to_path_buf();
        if remove {
            drop(log);
            if let Err(error) = data_dir::remove_dir(&dir) {
                tracing::warn!(dir = %dir.display(), %error, "could not remove a partition's directory");
            }
        } else if let Err(error) = log.close() {
            tracing::error!(dir = %dir.display(), %error, "closing log failed");
        }
    }

    fn remove_topic(&self, topic: &Topic) {
        for partition in &topic.partitions {
            self.close_replica(partition, true);
        }
        tracing::info!(topic = %topic.name, topic_id = %topic.topic_id, "removed the topic's replicas");
    }

    /// Removes partition directories of replicas this broker does not hold
    /// (topics deleted or moved while it was down). At start-up only.
    pub(crate) fn remove_strays(&self) {
        let hosted: BTreeSet<(String, i32)> = self
            .hosted_partitions()
            .iter()
            .map(|partition| (partition.topic.to_string(), partition.index))
            .collect();
        data_dir::remove_strays(&self.config.log_dir, &hosted);
    }

    /// Each partition's leader as this broker applied it, for tests and tools.
    pub fn leaders(&self) -> BTreeMap<(String, i32), i32> {
        self.all_topics()
            .iter()
            .flat_map(|topic| topic.partitions.iter())
            .map(|p| ((p.topic.to_string(), p.index), p.state().leader))
            .collect()
    }
}
