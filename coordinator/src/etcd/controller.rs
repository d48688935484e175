//! The controller of a cluster on etcd.
//!
//! Every broker stands for controller through etcd's election API (the
//! candidacy is a key under its session lease); the oldest candidate wins.
//! The winner's election key and its creation revision are its seat and
//! controller epoch: every write the controller makes compares that the key
//! still exists at that revision, so a controller that lost its session
//! (paused, cut off) cannot change anything once a successor may exist —
//! etcd refuses the transaction.
//!
//! While it holds the seat the controller watches the metadata and, on
//! every change, applies [`crate::election`]: partitions whose leader died
//! get one from the live ISR (or none), dead followers leave the ISR, and a
//! returning broker leads again where it is the only one left in sync.
//! With `auto.leader.rebalance.enable` it moves leadership back to the
//! preferred replicas every `leader.imbalance.check.interval.seconds` when
//! a broker's share of lost leaderships is over
//! `leader.imbalance.per.broker.percentage`. ElectLeaders runs here too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::{backoff, Inner, PartitionWrite};
use crate::model::{ElectionType, NO_LEADER};
use crate::{election, CoordinatorError, ElectionError, ElectionResults};

/// Partition writes per etcd transaction: each takes one or two compares,
/// and etcd refuses more than 128 of a kind by default.
const WRITES_PER_TXN: usize = 50;
/// The pause before a controller retries a change that raced another.
const RETRY_AFTER_CONFLICT: Duration = Duration::from_millis(200);

/// The controller's seat: its election key and the revision it won at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSeat {
    pub key: String,
    pub epoch: i64,
    pub lease: i64,
}

/// Stands for controller, and acts as one whenever elected, until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut leases = inner.session.lease.subscribe();
    let mut failures = 0u32;
    while !inner.shutdown.is_cancelled() {
        let Some(lease) = *leases.borrow_and_update() else {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                _ = leases.changed() => continue,
            }
        };
        let mut client = inner.client.election_client();
        let name = inner.keys.controller_election();
        let value = inner.config.registration.node_id.to_string();
        let campaign = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = leases.changed() => continue,
            campaign = client.campaign(name, value, lease.id) => campaign,
        };
        let leader = match campaign {
            Ok(mut response) => response.take_leader(),
            Err(error) => {
                failures += 1;
                let wait = backoff(failures);
                tracing::warn!(%error, retry_in = ?wait, "standing for controller failed");
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        failures = 0;
        let Some(leader) = leader.filter(|leader| leader.lease() == lease.id) else {
            continue;
        };
        let seat = ControllerSeat {
            key: String::from_utf8_lossy(leader.key()).into_owned(),
            epoch: leader.rev(),
            lease: lease.id,
        };
        tracing::info!(controller_epoch = seat.epoch, "elected controller");
        *inner.seat.lock() = Some(seat.clone());
        let reason = act(&inner, &seat, &mut leases).await;
        *inner.seat.lock() = None;
        tracing::info!(
            controller_epoch = seat.epoch,
            reason,
            "no longer the controller"
        );
    }
}

/// The controller's work while it holds `seat`; returns why it stopped.
async fn act(
    inner: &Inner,
    seat: &ControllerSeat,
    leases: &mut tokio::sync::watch::Receiver<Option<super::session::Lease>>,
) -> &'static str {
    let config = inner.config.controller.clone();
    let mut changes = inner.metadata.subscribe();
    let mut rebalance = tokio::time::interval(config.leader_imbalance_check_interval);
    rebalance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rebalance.tick().await;
    loop {
        if !inner.session.valid() {
            return "its etcd session can no longer be proven";
        }
        if leases.borrow().map(|lease| lease.id) != Some(seat.lease) {
            return "its etcd session ended";
        }
        changes.borrow_and_update();
        let (writes, unclean) = plan_failover(inner);
        let mut retry = false;
        if !writes.is_empty() {
            match write(inner, seat, writes).await {
                Ok(_) => {
                    inner
                        .unclean_elections
                        .fetch_add(unclean, std::sync::atomic::Ordering::Relaxed);
                }
                Err(CoordinatorError::NotController) => return "a newer controller exists",
                Err(error) => {
                    tracing::info!(%error, "a leadership change did not apply; trying again");
                    retry = true;
                }
            }
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return "shutting down",
            _ = leases.changed() => {}
            changed = changes.changed() => if changed.is_err() { return "shutting down" },
            _ = tokio::time::sleep(RETRY_AFTER_CONFLICT), if retry => {}
            _ = rebalance.tick(), if config.auto_leader_rebalance => {
                let imbalanced = election::imbalanced(&inner.metadata.borrow(), config.leader_imbalance_percentage);
                if !imbalanced.is_empty() {
                    tracing::info!(partitions = imbalanced.len(), "moving leadership back to preferred replicas");
                    match elect_as(inner, seat, ElectionType::Preferred, Some(imbalanced)).await {
                        Err(CoordinatorError::NotController) => return "a newer controller exists",
                        Err(error) => tracing::info!(%error, "preferred leader election failed"),
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}

/// The partition changes that the live brokers call for now. A broker
/// registered under a newer session than the one a partition's state
/// names it in sync in counts as dead for that partition (see
/// [`crate::ClusterMetadata::is_eligible`]): it restarted, or lost its session,
/// and leads again only once it has been elected anew, at a new epoch.
/// That is known from the stored state alone, so a controller elected
/// after the restart sees it as well as one that watched it happen.
/// Also says how many of the writes are unclean elections.
fn plan_failover(inner: &Inner) -> (Vec<PartitionWrite>, u64) {
    let cache = inner.cache.lock();
    let snapshot = cache.current().clone();
    let default_unclean = inner.config.controller.unclean_leader_election;
    let mut writes = Vec::new();
    let mut unclean_elections = 0;
    for topic in snapshot.topics.values() {
        let unclean = election::unclean_allowed(&snapshot, topic, default_unclean);
        for partition in &topic.partitions {
            let is_alive = |id| snapshot.is_eligible(partition, id);
            let Some(next) = election::after_broker_change(partition, is_alive, unclean) else {
                continue;
            };
            // A leader shutting down hands its partitions only to in-sync
            // replicas: what no other can take stays with it until it is
            // gone (then it goes offline as for any dead leader).
            let leader_leaving = snapshot
                .brokers
                .get(&partition.leader)
                .is_some_and(|broker| broker.shutting_down);
            if leader_leaving && !partition.isr.contains(&next.leader) {
                continue;
            }
            let next = next.with_isr_epochs(partition, &snapshot.brokers, &BTreeMap::new());
            let Some(guard) =
                inner.partition_guard(&cache, &topic.name, topic.topic_id, partition.partition)
            else {
                continue;
            };
            if next.leader != partition.leader {
                if next.leader != NO_LEADER && !partition.isr.contains(&next.leader) {
                    unclean_elections += 1;
                }
                if next.leader == NO_LEADER {
                    tracing::warn!(topic = %topic.name, partition = partition.partition, from = partition.leader, isr = ?partition.isr, "no live in-sync replica: the partition is offline");
                } else {
                    tracing::info!(topic = %topic.name, partition = partition.partition, from = partition.leader, to = next.leader, leader_epoch = next.leader_epoch, isr = ?next.isr, "electing a new leader");
                }
            } else {
                tracing::info!(topic = %topic.name, partition = partition.partition, from = ?partition.isr, to = ?next.isr, "removing dead or restarted replicas from the ISR");
            }
            writes.push(PartitionWrite {
                key: inner.keys.partition(topic.topic_id, partition.partition),
                guard,
                record: (&next).into(),
                topic: topic.name.clone(),
                partition: partition.partition,
            });
        }
    }
    (writes, unclean_elections)
}

/// ElectLeaders: only the controller elects.
pub(crate) async fn elect(
    inner: &Inner,
    election_type: ElectionType,
    partitions: Option<Vec<(String, i32)>>,
) -> Result<ElectionResults, CoordinatorError> {
    let seat = inner
        .seat
        .lock()
        .clone()
        .ok_or(CoordinatorError::NotController)?;
    elect_as(inner, &seat, election_type, partitions).await
}

async fn elect_as(
    inner: &Inner,
    seat: &ControllerSeat,
    election_type: ElectionType,
    partitions: Option<Vec<(String, i32)>>,
) -> Result<ElectionResults, CoordinatorError> {
    let (results, writes) = {
        let cache = inner.cache.lock();
        let snapshot = cache.current().clone();
        let mut partitions = partitions.unwrap_or_else(|| snapshot.all_partitions());
        // One write per key in a transaction: a partition named twice is elected once.
        partitions.sort();
        partitions.dedup();
        let mut results = Vec::with_capacity(partitions.len());
        let mut writes = Vec::new();
        for (topic, index) in partitions {
            let outcome = match (
                snapshot.topics.get(&topic),
                snapshot.partition(&topic, index),
            ) {
                (Some(metadata), Some(partition)) => {
                    election::on_request(partition, election_type, |id| {
                        snapshot.is_eligible(partition, id)
                    })
                    .map(|next| {
                        next.with_isr_epochs(partition, &snapshot.brokers, &BTreeMap::new())
                    })
                    .and_then(|next| {
                        let guard = inner
                            .partition_guard(&cache, &topic, metadata.topic_id, index)
                            .ok_or(ElectionError::UnknownPartition)?;
                        writes.push(PartitionWrite {
                            key: inner.keys.partition(metadata.topic_id, index),
                            guard,
                            record: (&next).into(),
                            topic: topic.clone(),
                            partition: index,
                        });
                        Ok(())
                    })
                }
                _ => Err(ElectionError::UnknownPartition),
            };
            results.push(((topic, index), outcome));
        }
        (results, writes)
    };
    for write in &writes {
        tracing::info!(topic = %write.topic, partition = write.partition, leader = write.record.leader, leader_epoch = write.record.leader_epoch, ?election_type, "electing leader");
    }
    if !writes.is_empty() {
        write(inner, seat, writes).await?;
    }
    Ok(results)
}

/// Writes partition states as the controller holding `seat`, in
/// transactions that each compare the seat and every partition's guard.
/// Returns the revision of the last transaction, once this broker's
/// snapshot shows it.
pub(crate) async fn write(
    inner: &Inner,
    seat: &ControllerSeat,
    writes: Vec<PartitionWrite>,
) -> Result<i64, CoordinatorError> {
    let mut revision = 0;
    let mut writes = writes.into_iter().peekable();
    while writes.peek().is_some() {
        let batch: Vec<PartitionWrite> = writes.by_ref().take(WRITES_PER_TXN).collect();
        let mut compares = vec![Compare::create_revision(
            seat.key.clone(),
            CompareOp::Equal,
            seat.epoch,
        )];
        let mut puts = Vec::with_capacity(batch.len());
        for write in batch {
            compares.extend(write.guard);
            puts.push(TxnOp::put(
                write.key,
                serde_json::to_vec(&write.record).expect("record serializes"),
                None,
            ));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then(puts)
            .or_else([TxnOp::get(seat.key.clone(), None)]);
        let response = inner.txn(txn).await?;
        if !response.succeeded() {
            let seat_holds = response.op_responses().into_iter().any(|op| match op {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == seat.epoch),
                _ => false,
            });
            return Err(if seat_holds {
                CoordinatorError::Fenced("a partition changed since the decision".into())
            } else {
                tracing::warn!(
                    controller_epoch = seat.epoch,
                    "etcd refused a write of a controller that lost its seat"
                );
                CoordinatorError::NotController
            });
        }
        revision = response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
    }
    inner.applied(revision).await;
    Ok(revision)
}
