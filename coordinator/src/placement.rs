//! Where replicas go: the assignment of new topics' and new partitions'
//! replicas to live brokers (rack-aware), and the checks of assignments a
//! client gives. Pure functions, used by both stores.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{
    BrokerRegistration, ClusterMetadata, NewTopic, PartitionMetadata, TopicMetadata,
};
use crate::CoordinatorError;

/// Replicas for partitions `first_partition ..` (`count` of them), `rf` each,
/// spread over `brokers`.
///
/// Brokers are put in an order that alternates between racks (a1, b1, c1,
/// a2, b2, ...). A partition's first replica (its preferred leader) walks
/// that order from `start`, so leadership spreads evenly; the other
/// replicas follow at a shift that changes every round of partitions, so
/// that followers spread too, and each replica goes to a rack the
/// partition does not use yet while there is one.
pub fn assign_replicas(
    brokers: &BTreeMap<i32, BrokerRegistration>,
    first_partition: i32,
    count: i32,
    rf: i16,
    start: usize,
) -> Vec<Vec<i32>> {
    let order = rack_alternating(brokers);
    let n = order.len();
    let rf = usize::try_from(rf).unwrap_or(0).min(n);
    let racks: BTreeSet<&str> = order.iter().map(|(_, rack)| *rack).collect();
    (0..count.max(0) as usize)
        .map(|i| {
            let p = first_partition.max(0) as usize + i;
            let first = (start + p) % n;
            let shift = 1 + (p / n) % (n - 1).max(1);
            let mut replicas = vec![order[first].0];
            let mut used_racks = BTreeSet::from([order[first].1]);
            // Two passes: the first insists on a new rack, the second takes any broker.
            for strict in [true, false] {
                for k in 0..n {
                    if replicas.len() >= rf {
                        break;
                    }
                    let (id, rack) = order[(first + shift + k) % n];
                    if replicas.contains(&id)
                        || (strict && used_racks.len() < racks.len() && used_racks.contains(rack))
                    {
                        continue;
                    }
                    replicas.push(id);
                    used_racks.insert(rack);
                }
            }
            replicas
        })
        .collect()
}

/// Brokers ordered so that consecutive ones are on different racks where
/// possible. Brokers without a rack count as one rack of their own.
fn rack_alternating(brokers: &BTreeMap<i32, BrokerRegistration>) -> Vec<(i32, &str)> {
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for broker in brokers.values() {
        by_rack
            .entry(broker.rack.as_deref().unwrap_or(""))
            .or_default()
            .push(broker.node_id);
    }
    let mut order = Vec::with_capacity(brokers.len());
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for round in 0..deepest {
        for (rack, ids) in &by_rack {
            if let Some(id) = ids.get(round) {
                order.push((*id, *rack));
            }
        }
    }
    order
}

/// The metadata of a new topic, checked against the live brokers: its id
/// is fresh and every partition starts led by its first replica.
pub fn plan_topic(
    metadata: &ClusterMetadata,
    request: &NewTopic,
    start: usize,
) -> Result<TopicMetadata, CoordinatorError> {
    if metadata.topics.contains_key(&request.name) {
        return Err(CoordinatorError::TopicExists(request.name.clone()));
    }
    let assignment = match &request.assignment {
        Some(assignment) => {
            check_assignment(metadata, assignment, None)?;
            assignment.clone()
        }
        None => {
            check_replication_factor(metadata, request.replication_factor)?;
            assign_replicas(
                &metadata.brokers,
                0,
                request.partitions,
                request.replication_factor,
                start,
            )
        }
    };
    Ok(TopicMetadata {
        name: request.name.clone(),
        topic_id: crate::model::new_topic_id(),
        partitions: assignment
            .into_iter()
            .enumerate()
            .map(|(index, replicas)| PartitionMetadata::new(index as i32, replicas))
            .collect(),
        configs: request.configs.clone(),
    })
}

/// The topic grown to `count` partitions; the new ones get the replication
/// factor of the first partition.
pub fn plan_partitions(
    metadata: &ClusterMetadata,
    topic: &TopicMetadata,
    count: i32,
    assignment: Option<&[Vec<i32>]>,
    start: usize,
) -> Result<TopicMetadata, CoordinatorError> {
    let current = topic.partitions.len() as i32;
    if count < current {
        return Err(CoordinatorError::InvalidPartitions(format!(
            "Topic currently has {current} partitions, which is higher than the requested {count}."
        )));
    }
    if count == current {
        return Err(CoordinatorError::InvalidPartitions(format!(
            "Topic already has {current} partitions."
        )));
    }
    let rf = topic
        .partitions
        .first()
        .map_or(1, |partition| partition.replicas.len()) as i16;
    let added = match assignment {
        Some(assignment) => {
            if assignment.len() as i32 != count - current {
                return Err(CoordinatorError::InvalidReplicaAssignment(format!(
                    "Increasing the number of partitions by {} but {} assignments provided.",
                    count - current,
                    assignment.len()
                )));
            }
            check_assignment(metadata, assignment, Some(rf as usize))?;
            assignment.to_vec()
        }
        None => {
            check_replication_factor(metadata, rf)?;
            assign_replicas(&metadata.brokers, current, count - current, rf, start)
        }
    };
    let mut grown = topic.clone();
    grown.partitions.extend(
        added
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| PartitionMetadata::new(current + i as i32, replicas)),
    );
    Ok(grown)
}

fn check_replication_factor(metadata: &ClusterMetadata, rf: i16) -> Result<(), CoordinatorError> {
    if rf < 1 {
        return Err(CoordinatorError::InvalidReplicationFactor(
            "Replication factor must be larger than 0.".into(),
        ));
    }
    let live = metadata.brokers.len();
    if rf as usize > live {
        return Err(CoordinatorError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {live} broker(s) are registered."
        )));
    }
    Ok(())
}

/// A client's assignment: every partition with the same number of
/// replicas (`rf` when given), no broker twice, every broker alive.
fn check_assignment(
    metadata: &ClusterMetadata,
    assignment: &[Vec<i32>],
    rf: Option<usize>,
) -> Result<(), CoordinatorError> {
    let invalid = |message: String| Err(CoordinatorError::InvalidReplicaAssignment(message));
    let Some(first) = assignment.first() else {
        return invalid("The assignment is empty.".into());
    };
    let rf = rf.unwrap_or(first.len());
    for (index, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return invalid(format!("Partition {index} has no replicas."));
        }
        if replicas.len() != rf {
            return invalid(format!(
                "All partitions should have the same number of replicas ({rf}); partition {index} has {}.",
                replicas.len()
            ));
        }
        let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
        if distinct.len() != replicas.len() {
            return invalid(format!(
                "Duplicate brokers not allowed in replica assignment: {replicas:?}."
            ));
        }
        let unknown: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|id| !metadata.is_alive(*id))
            .collect();
        if !unknown.is_empty() {
            return invalid(format!(
                "Unknown broker(s) in replica assignment: {unknown:?}."
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[(i32, Option<&str>)]) -> BTreeMap<i32, BrokerRegistration> {
        racks
            .iter()
            .map(|(id, rack)| {
                (
                    *id,
                    BrokerRegistration {
                        node_id: *id,
                        rack: rack.map(str::to_string),
                        endpoints: Vec::new(),
                        inter_broker_listener: String::new(),
                        shutting_down: false,
                        epoch: 0,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let brokers = brokers(&[(1, None), (2, None), (3, None)]);
        let assignment = assign_replicas(&brokers, 0, 6, 3, 0);
        for replicas in &assignment {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
        }
        for broker in 1..=3 {
            let leads = assignment.iter().filter(|r| r[0] == broker).count();
            assert_eq!(
                leads, 2,
                "broker {broker} leads {leads} of 6: {assignment:?}"
            );
        }
    }

    #[test]
    fn replicas_go_to_distinct_racks() {
        let brokers = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let rack = |id: i32| brokers[&id].rack.clone().unwrap();
        for start in 0..6 {
            for replicas in assign_replicas(&brokers, 0, 12, 3, start) {
                let racks: BTreeSet<String> = replicas.iter().map(|id| rack(*id)).collect();
                assert_eq!(racks.len(), 3, "{replicas:?}");
            }
        }
        // More replicas than racks: every rack used, then any broker.
        for replicas in assign_replicas(&brokers, 0, 6, 4, 1) {
            let racks: BTreeSet<String> = replicas.iter().map(|id| rack(*id)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 4);
        }
    }

    #[test]
    fn replication_factor_is_checked_against_live_brokers() {
        let mut metadata = ClusterMetadata::new_cluster();
        metadata.brokers = brokers(&[(1, None), (2, None)]);
        let request = NewTopic {
            name: "t".into(),
            partitions: 3,
            replication_factor: 3,
            assignment: None,
            configs: BTreeMap::new(),
        };
        assert!(matches!(
            plan_topic(&metadata, &request, 0),
            Err(CoordinatorError::InvalidReplicationFactor(_))
        ));
        let topic = plan_topic(
            &metadata,
            &NewTopic {
                replication_factor: 2,
                ..request.clone()
            },
            0,
        )
        .unwrap();
        assert_eq!(topic.partitions.len(), 3);
        assert!(topic.partitions.iter().all(|p| p.replicas.len() == 2));
        let bad = NewTopic {
            assignment: Some(vec![vec![1, 1]]),
            ..request
        };
        assert!(matches!(
            plan_topic(&metadata, &bad, 0),
            Err(CoordinatorError::InvalidReplicaAssignment(_))
        ));
    }

    #[test]
    fn grown_partitions_keep_the_replication_factor() {
        let mut metadata = ClusterMetadata::new_cluster();
        metadata.brokers = brokers(&[(1, None), (2, None), (3, None)]);
        let request = NewTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: 2,
            assignment: None,
            configs: BTreeMap::new(),
        };
        let topic = plan_topic(&metadata, &request, 0).unwrap();
        let grown = plan_partitions(&metadata, &topic, 5, None, 0).unwrap();
        assert_eq!(grown.partitions.len(), 5);
        assert_eq!(grown.partitions[4].partition, 4);
        assert!(grown.partitions.iter().all(|p| p.replicas.len() == 2));
        assert_eq!(grown.partitions[..2], topic.partitions[..]);
        assert!(matches!(
            plan_partitions(&metadata, &grown, 5, None, 0),
            Err(CoordinatorError::InvalidPartitions(_))
        ));
    }
}
