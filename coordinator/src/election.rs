//! Leader election rules: what a partition's state becomes when brokers die
//! or return, and on preferred or unclean election. Pure functions; the
//! controller writes what they decide.
//!
//! As in Kafka: a new leader comes from the ISR (in replica order); a
//! replica outside the ISR is elected only when unclean election is
//! enabled and no ISR member is alive; every change of leader bumps the
//! leader epoch, every change at all bumps the partition epoch.

use std::collections::BTreeMap;

use crate::model::{ClusterMetadata, PartitionMetadata, TopicMetadata, NO_LEADER};

/// Why an election asked for by an operator (ElectLeaders) did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    #[error("Leader election not needed for the partition")]
    NotNeeded,
    #[error("The preferred leader {0} is not available (not alive or not in the ISR)")]
    PreferredLeaderNotAvailable(i32),
    #[error("No live replica is eligible to lead")]
    EligibleLeadersNotAvailable,
    #[error("This server does not host this topic-partition.")]
    UnknownPartition,
}

/// The state after a change in which brokers are alive, or `None` when it
/// stays. A dead leader is replaced from the live ISR (or, with `unclean`,
/// by any live replica); with no candidate the partition is left without a
/// leader, its ISR kept so that the first of them to return leads again. A
/// dead follower leaves the ISR, as Kafka's controller removes the replicas
/// of a failed broker at once instead of waiting for the lag timeout.
pub fn after_broker_change(
    partition: &PartitionMetadata,
    is_alive: impl Fn(i32) -> bool,
    unclean: bool,
) -> Option<PartitionMetadata> {
    let leader_alive = partition.leader != NO_LEADER && is_alive(partition.leader);
    if leader_alive {
        let isr: Vec<i32> = partition
            .isr
            .iter()
            .copied()
            .filter(|id| is_alive(*id))
            .collect();
        return (isr != partition.isr).then(|| PartitionMetadata {
            isr,
            partition_epoch: partition.partition_epoch + 1,
            ..partition.clone()
        });
    }
    if let Some(leader) = clean_candidate(partition, &is_alive) {
        return Some(with_leader(
            partition,
            leader,
            live_isr(partition, &is_alive),
        ));
    }
    if unclean {
        if let Some(leader) = partition.replicas.iter().copied().find(|id| is_alive(*id)) {
            return Some(with_leader(partition, leader, vec![leader]));
        }
    }
    (partition.leader != NO_LEADER).then(|| PartitionMetadata {
        leader: NO_LEADER,
        leader_epoch: partition.leader_epoch + 1,
        partition_epoch: partition.partition_epoch + 1,
        ..partition.clone()
    })
}

/// Preferred election: leadership moves to the first replica.
pub fn preferred(
    partition: &PartitionMetadata,
    is_alive: impl Fn(i32) -> bool,
) -> Result<PartitionMetadata, ElectionError> {
    let preferred = partition
        .preferred_leader()
        .ok_or(ElectionError::EligibleLeadersNotAvailable)?;
    if partition.leader == preferred {
        return Err(ElectionError::NotNeeded);
    }
    if !is_alive(preferred) || !partition.isr.contains(&preferred) {
        return Err(ElectionError::PreferredLeaderNotAvailable(preferred));
    }
    Ok(with_leader(partition, preferred, partition.isr.clone()))
}

/// The election an operator asked for (ElectLeaders).
pub fn on_request(
    partition: &PartitionMetadata,
    election_type: crate::model::ElectionType,
    is_alive: impl Fn(i32) -> bool,
) -> Result<PartitionMetadata, ElectionError> {
    match election_type {
        crate::model::ElectionType::Preferred => preferred(partition, is_alive),
        crate::model::ElectionType::Unclean => unclean(partition, is_alive),
    }
}

/// Unclean election (asked for by an operator): a partition whose leader
/// is dead gets one from the live ISR if possible, else any live replica.
pub fn unclean(
    partition: &PartitionMetadata,
    is_alive: impl Fn(i32) -> bool,
) -> Result<PartitionMetadata, ElectionError> {
    if partition.leader != NO_LEADER && is_alive(partition.leader) {
        return Err(ElectionError::NotNeeded);
    }
    after_broker_change(partition, &is_alive, true)
        .filter(|next| next.leader != NO_LEADER)
        .ok_or(ElectionError::EligibleLeadersNotAvailable)
}

fn clean_candidate(partition: &PartitionMetadata, is_alive: impl Fn(i32) -> bool) -> Option<i32> {
    partition
        .replicas
        .iter()
        .copied()
        .find(|id| partition.isr.contains(id) && is_alive(*id))
}

fn live_isr(partition: &PartitionMetadata, is_alive: impl Fn(i32) -> bool) -> Vec<i32> {
    partition
        .isr
        .iter()
        .copied()
        .filter(|id| is_alive(*id))
        .collect()
}

fn with_leader(partition: &PartitionMetadata, leader: i32, isr: Vec<i32>) -> PartitionMetadata {
    PartitionMetadata {
        leader,
        leader_epoch: partition.leader_epoch + 1,
        partition_epoch: partition.partition_epoch + 1,
        isr,
        ..partition.clone()
    }
}

/// Whether unclean election is allowed for `topic`: its own config, else
/// the cluster-wide dynamic default, else the static broker default.
pub fn unclean_allowed(metadata: &ClusterMetadata, topic: &TopicMetadata, default: bool) -> bool {
    const KEY: &str = "unclean.leader.election.enable";
    let value = topic
        .configs
        .get(KEY)
        .or_else(|| metadata.broker_configs.get("").and_then(|c| c.get(KEY)));
    match value.map(|v| v.to_ascii_lowercase()) {
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        _ => default,
    }
}

/// Partitions to move back to their preferred leader, as Kafka's
/// auto-rebalance does: for each broker, if more than
/// `imbalance_percentage` % of the partitions it prefers to lead are led
/// by another broker, every such partition whose preferred leader is alive
/// and in sync.
pub fn imbalanced(metadata: &ClusterMetadata, imbalance_percentage: u32) -> Vec<(String, i32)> {
    let mut preferred_counts: BTreeMap<i32, (usize, Vec<(String, i32)>)> = BTreeMap::new();
    for topic in metadata.topics.values() {
        for partition in &topic.partitions {
            let Some(preferred) = partition.preferred_leader() else {
                continue;
            };
            let entry = preferred_counts.entry(preferred).or_default();
            entry.0 += 1;
            if partition.leader != preferred
                && metadata.is_eligible(partition, preferred)
                && partition.isr.contains(&preferred)
            {
                entry.1.push((topic.name.clone(), partition.partition));
            }
        }
    }
    preferred_counts
        .into_values()
        .filter(|(total, moved)| moved.len() * 100 > *total * imbalance_percentage as usize)
        .flat_map(|(_, moved)| moved)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::registered;

    fn partition(leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionMetadata {
        PartitionMetadata {
            partition: 0,
            leader,
            leader_epoch: 5,
            partition_epoch: 9,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            isr_epochs: BTreeMap::new(),
        }
    }

    #[test]
    fn a_dead_leader_is_replaced_from_the_isr_in_replica_order() {
        let before = partition(1, &[1, 2, 3], &[1, 3, 2]);
        let after = after_broker_change(&before, |id| id != 1, false).unwrap();
        assert_eq!(after.leader, 2);
        assert_eq!(after.isr, vec![3, 2]);
        assert_eq!((after.leader_epoch, after.partition_epoch), (6, 10));
    }

    #[test]
    fn a_replica_outside_the_isr_is_never_elected_cleanly() {
        let before = partition(1, &[1, 2, 3], &[1]);
        let after = after_broker_change(&before, |id| id != 1, false).unwrap();
        assert_eq!(after.leader, NO_LEADER);
        assert_eq!(
            after.isr,
            vec![1],
            "the ISR is kept for the leader's return"
        );
        assert_eq!(after.leader_epoch, 6);
        // Nothing changes again while it stays dead ...
        assert_eq!(after_broker_change(&after, |id| id != 1, false), None);
        // ... and it leads again when it returns.
        let back = after_broker_change(&after, |_| true, false).unwrap();
        assert_eq!((back.leader, back.leader_epoch), (1, 7));
        // Unclean election takes a live replica outside the ISR.
        let unclean_after = after_broker_change(&before, |id| id != 1, true).unwrap();
        assert_eq!((unclean_after.leader, unclean_after.isr), (2, vec![2]));
    }

    #[test]
    fn dead_followers_leave_the_isr_without_a_new_leader_epoch() {
        let before = partition(1, &[1, 2, 3], &[1, 2, 3]);
        let after = after_broker_change(&before, |id| id != 3, false).unwrap();
        assert_eq!((after.leader, after.isr.clone()), (1, vec![1, 2]));
        assert_eq!((after.leader_epoch, after.partition_epoch), (5, 10));
        assert_eq!(after_broker_change(&after, |id| id != 3, false), None);
    }

    #[test]
    fn preferred_election_needs_a_live_in_sync_preferred_leader() {
        let moved = partition(2, &[1, 2, 3], &[2, 3, 1]);
        let back = preferred(&moved, |_| true).unwrap();
        assert_eq!((back.leader, back.leader_epoch), (1, 6));
        assert_eq!(preferred(&back, |_| true), Err(ElectionError::NotNeeded));
        let out_of_sync = partition(2, &[1, 2, 3], &[2, 3]);
        assert_eq!(
            preferred(&out_of_sync, |_| true),
            Err(ElectionError::PreferredLeaderNotAvailable(1))
        );
        assert_eq!(
            preferred(&moved, |id| id != 1),
            Err(ElectionError::PreferredLeaderNotAvailable(1))
        );
    }

    #[test]
    fn unclean_election_on_request() {
        let live_leader = partition(1, &[1, 2], &[1]);
        assert_eq!(
            unclean(&live_leader, |_| true),
            Err(ElectionError::NotNeeded)
        );
        let leaderless = partition(NO_LEADER, &[1, 2], &[1]);
        let elected = unclean(&leaderless, |id| id == 2).unwrap();
        assert_eq!((elected.leader, elected.isr), (2, vec![2]));
        assert_eq!(
            unclean(&leaderless, |_| false),
            Err(ElectionError::EligibleLeadersNotAvailable)
        );
    }

    /// Every controller decides from the stored state alone: each step
    /// here is what a controller elected just before it would do.
    fn step(metadata: &ClusterMetadata, state: &PartitionMetadata) -> Option<PartitionMetadata> {
        after_broker_change(state, |id| metadata.is_eligible(state, id), false)
            .map(|next| next.with_isr_epochs(state, &metadata.brokers, &BTreeMap::new()))
    }

    #[test]
    fn a_sole_leader_that_restarted_quickly_goes_offline_then_leads_at_a_new_epoch() {
        let mut state = partition(1, &[1], &[1]);
        state.isr_epochs = BTreeMap::from([(1, 3)]);
        // Broker 1 is back, under epoch 11, before its old session expired.
        let metadata = registered(&[(1, 11), (2, 4)]);
        let offline = step(&metadata, &state).expect("the restart is noticed");
        assert_eq!((offline.leader, offline.leader_epoch), (NO_LEADER, 6));
        let led = step(&metadata, &offline).expect("the returning member leads");
        assert_eq!((led.leader, led.leader_epoch), (1, 7));
        assert_eq!(led.isr_epochs, BTreeMap::from([(1, 11)]));
        assert!(metadata.is_eligible(&led, 1));
        assert_eq!(step(&metadata, &led), None, "settled");
    }

    #[test]
    fn a_restarted_leader_or_follower_leaves_the_isr() {
        let mut state = partition(1, &[1, 2, 3], &[1, 2, 3]);
        state.isr_epochs = BTreeMap::from([(1, 3), (2, 4), (3, 5)]);
        // The leader restarted: 2 takes over, without 1.
        let metadata = registered(&[(1, 11), (2, 4), (3, 5)]);
        let next = step(&metadata, &state).unwrap();
        assert_eq!((next.leader, next.isr.clone()), (2, vec![2, 3]));
        assert_eq!(next.isr_epochs, BTreeMap::from([(2, 4), (3, 5)]));
        // A follower restarted: it leaves, the leader and epoch stay.
        let metadata = registered(&[(1, 3), (2, 4), (3, 12)]);
        let next = step(&metadata, &state).unwrap();
        assert_eq!((next.leader, next.leader_epoch), (1, 5));
        assert_eq!(next.isr, vec![1, 2]);
    }
}
