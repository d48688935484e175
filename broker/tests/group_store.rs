//! The group coordinator over a real broker state and real files: what it
//! writes to `__consumer_offsets` is what a restarted broker knows, and
//! offsets retention removes offsets for good.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use broker::broker::Broker;
use broker::config::BrokerConfig;
use broker::group::{CommitOffset, CommitRequest, Committed, GroupState, LeavingMember};
use kafka_protocol::error::ResponseError;

const RETENTION_MINUTES: i64 = 10;

fn open(dir: &Path) -> Broker {
    open_with(dir, &[])
}

fn open_with(dir: &Path, extra: &[(&str, &str)]) -> Broker {
    let mut properties = BTreeMap::from([
        ("log.dirs".to_string(), dir.display().to_string()),
        ("offsets.topic.num.partitions".to_string(), "5".to_string()),
        (
            "offsets.retention.minutes".to_string(),
            RETENTION_MINUTES.to_string(),
        ),
    ]);
    properties.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = BrokerConfig::from_properties(properties).expect("config");
    let store = coordinator::StandaloneStore::open(&config.log_dir, config.registration())
        .expect("metadata store");
    Broker::open(config, std::sync::Arc::new(store)).expect("broker")
}

async fn commit(
    broker: &Broker,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64, &str)],
    now_ms: i64,
) {
    commit_for(broker, group, topic, offsets, now_ms, None).await;
}

/// A commit; with `producer`, a transactional one (TxnOffsetCommit).
async fn commit_for(
    broker: &Broker,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64, &str)],
    now_ms: i64,
    producer: Option<(i64, i16)>,
) {
    let results = broker
        .groups
        .commit(
            CommitRequest {
                group_id: group.to_string(),
                generation_id: -1,
                member_id: String::new(),
                group_instance_id: None,
                offsets: offsets
                    .iter()
                    .map(|(partition, offset, metadata)| CommitOffset {
                        topic: topic.to_string(),
                        partition: *partition,
                        offset: *offset,
                        leader_epoch: 0,
                        metadata: metadata.to_string(),
                    })
                    .collect(),
                producer,
            },
            now_ms,
        )
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

fn committed(broker: &Broker, group: &str, topic: &str, partition: i32) -> Option<Committed> {
    fetch(broker, group, topic, partition, false)
}

fn fetch(
    broker: &Broker,
    group: &str,
    topic: &str,
    partition: i32,
    require_stable: bool,
) -> Option<Committed> {
    let found = broker.groups.fetch_offsets(
        group,
        Some(vec![(topic.to_string(), vec![partition])]),
        require_stable,
    );
    found[0].1[0].1.clone()
}

#[tokio::test]
async fn commits_and_deletions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = 1_700_000_000_000;
    {
        let broker = open(dir.path());
        broker.ensure_offsets_topic().await.unwrap();
        commit(&broker, "g1", "t", &[(0, 10, "a"), (1, 20, "b")], now_ms).await;
        commit(&broker, "g1", "t", &[(0, 11, "c")], now_ms).await;
        commit(&broker, "g2", "t", &[(0, 5, "")], now_ms).await;
        assert_eq!(broker.groups.delete_group("g2"), Ok(()));
        // No close: as after kill -9, only what is in the log counts.
    }
    let broker = open(dir.path());
    assert_eq!(
        committed(&broker, "g1", "t", 0),
        Some(Committed {
            offset: 11,
            leader_epoch: 0,
            metadata: "c".into(),
            unstable: false,
        })
    );
    assert_eq!(committed(&broker, "g1", "t", 1).map(|c| c.offset), Some(20));
    assert_eq!(committed(&broker, "g2", "t", 0), None);
    let listed: Vec<String> = broker
        .groups
        .list()
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(listed, vec!["g1".to_string()]);
}

#[tokio::test]
async fn offsets_of_an_empty_group_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = 1_700_000_000_000;
    let retention_ms = RETENTION_MINUTES * 60_000;
    {
        let broker = open(dir.path());
        broker.ensure_offsets_topic().await.unwrap();
        commit(&broker, "old", "t", &[(0, 1, "")], now_ms).await;
        commit(
            &broker,
            "new",
            "t",
            &[(0, 2, "")],
            now_ms + retention_ms / 2,
        )
        .await;

        broker.groups.expire_offsets(now_ms + retention_ms - 1);
        assert!(
            committed(&broker, "old", "t", 0).is_some(),
            "expired too early"
        );

        broker.groups.expire_offsets(now_ms + retention_ms);
        assert_eq!(committed(&broker, "old", "t", 0), None);
        assert!(committed(&broker, "new", "t", 0).is_some());
        // The group had nothing left: it is gone.
        assert_eq!(broker.groups.describe("old").state, GroupState::Dead);
    }
    let broker = open(dir.path());
    assert_eq!(committed(&broker, "old", "t", 0), None, "expiry is durable");
    assert_eq!(committed(&broker, "new", "t", 0).map(|c| c.offset), Some(2));
}

#[tokio::test]
async fn leaving_an_unknown_group_names_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.ensure_offsets_topic().await.unwrap();
    let leaving = [
        LeavingMember {
            member_id: "a".into(),
            group_instance_id: None,
        },
        LeavingMember {
            member_id: "b".into(),
            group_instance_id: None,
        },
    ];
    let (error, members) = broker
        .groups
        .leave("nobody", &leaving, Instant::now(), now());
    assert_eq!(error, Ok(()));
    assert_eq!(members, vec![Err(ResponseError::UnknownMemberId); 2]);
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Writes the marker that ends `producer`'s transaction on the group's
/// partition of `__consumer_offsets`, as a coordinator's WriteTxnMarkers does.
async fn end_txn(broker: &Broker, group: &str, producer: (i64, i16), commit: bool) {
    let count = broker
        .topic(broker::internal_topics::OFFSETS_TOPIC)
        .unwrap()
        .partitions
        .len() as i32;
    let partition = broker::internal_topics::partition_for(group, count);
    let marker = broker::broker::txn_markers::MarkerWrite {
        producer_id: producer.0,
        producer_epoch: producer.1,
        commit,
        coordinator_epoch: 0,
    };
    let results = broker::broker::txn_markers::write_markers(
        broker,
        marker,
        &[(
            broker::internal_topics::OFFSETS_TOPIC.to_string(),
            partition,
        )],
    )
    .await;
    assert_eq!(results, vec![Ok(())]);
}

#[tokio::test]
async fn transactional_commits_count_once_their_transaction_commits() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = 1_700_000_000_000;
    {
        let broker = open(dir.path());
        broker.ensure_offsets_topic().await.unwrap();
        commit(&broker, "g", "t", &[(0, 5, "")], now_ms).await;
        commit_for(&broker, "g", "t", &[(0, 10, "")], now_ms, Some((7, 0))).await;
        // Pending: the old offset, or UNSTABLE_OFFSET_COMMIT when asked for stable ones.
        assert_eq!(committed(&broker, "g", "t", 0).map(|c| c.offset), Some(5));
        assert!(fetch(&broker, "g", "t", 0, true).unwrap().unstable);
        end_txn(&broker, "g", (7, 0), true).await;
        assert_eq!(
            fetch(&broker, "g", "t", 0, true).map(|c| c.offset),
            Some(10)
        );
        // Aborted: never counts.
        commit_for(&broker, "g", "t", &[(0, 20, "")], now_ms, Some((7, 1))).await;
        end_txn(&broker, "g", (7, 1), false).await;
        assert_eq!(
            fetch(&broker, "g", "t", 0, true).map(|c| c.offset),
            Some(10)
        );
        // Open at the crash.
        commit_for(&broker, "g", "t", &[(1, 30, "")], now_ms, Some((8, 0))).await;
    }
    let broker = open(dir.path());
    assert_eq!(
        fetch(&broker, "g", "t", 0, true).map(|c| c.offset),
        Some(10)
    );
    assert!(
        fetch(&broker, "g", "t", 1, true).unwrap().unstable,
        "still open after the restart"
    );
    end_txn(&broker, "g", (8, 0), true).await;
    assert_eq!(
        fetch(&broker, "g", "t", 1, true).map(|c| c.offset),
        Some(30)
    );
}

/// Compaction leaves an empty batch (no records) in place of a wholly
/// superseded head of `__consumer_offsets`: loading the partition must move
/// past it. Reading by records alone stayed at its offset for good, so a
/// broker taking over the partition never finished loading it.
#[tokio::test]
async fn an_offsets_partition_whose_compacted_head_is_empty_loads() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = now();
    {
        let broker = open_with(dir.path(), &[("offsets.topic.segment.bytes", "2048")]);
        broker.ensure_offsets_topic().await.unwrap();
        for offset in 0..100 {
            commit(&broker, "g", "t", &[(0, offset, "")], now_ms).await;
        }
        broker.clean_logs();
        let count = broker
            .topic(broker::internal_topics::OFFSETS_TOPIC)
            .unwrap()
            .partitions
            .len() as i32;
        let partition = broker
            .partition(
                broker::internal_topics::OFFSETS_TOPIC,
                broker::internal_topics::partition_for("g", count),
            )
            .unwrap();
        let head = partition
            .with_log(|log| {
                assert_eq!(log.log_start_offset(), 0, "compaction keeps the log start");
                log.read(0, 1 << 20, log.log_end_offset(), true).unwrap()
            })
            .unwrap();
        let (first, _) = protocol::batch::Batches::new(head).next().unwrap().unwrap();
        assert_eq!(
            first.record_count, 0,
            "the first batch of the cleaned head is the empty stand-in"
        );
    }
    // Open (and load) on a thread of its own, so that a load that never
    // ends fails the test instead of hanging it.
    let (sender, receiver) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let broker = open(&path);
        let _ = sender.send(committed(&broker, "g", "t", 0).map(|c| c.offset));
    });
    let committed = receiver
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("loading the compacted offsets partition did not finish in 60 s");
    assert_eq!(committed, Some(99));
}

/// While a partition of `__consumer_offsets` loads, its groups are told
/// COORDINATOR_LOAD_IN_PROGRESS (retriable, no new coordinator to find),
/// never NOT_COORDINATOR, and the groups of other partitions are served
/// meanwhile: the load holds no lock they need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loading_partitions_groups_wait_while_other_groups_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = std::sync::Arc::new(open(dir.path()));
    broker.ensure_offsets_topic().await.unwrap();
    let count = broker
        .topic(broker::internal_topics::OFFSETS_TOPIC)
        .unwrap()
        .partitions
        .len() as i32;
    let big = "big";
    let index = broker::internal_topics::partition_for(big, count);
    let small = (0..)
        .map(|i| format!("small-{i}"))
        .find(|id| broker::internal_topics::partition_for(id, count) != index)
        .unwrap();
    let offsets: Vec<(i32, i64, &str)> = (0..1000).map(|p| (p, 1, "")).collect();
    for _ in 0..100 {
        commit(&broker, big, "t", &offsets, now()).await;
    }
    commit(&broker, &small, "t", &[(0, 7, "")], now()).await;
    let partition = broker
        .partition(broker::internal_topics::OFFSETS_TOPIC, index)
        .unwrap();

    broker.groups.unload_partition(index);
    assert_eq!(
        broker.groups.describe(big).error,
        Some(ResponseError::NotCoordinator)
    );
    let loading = {
        let broker = broker.clone();
        std::thread::spawn(move || {
            broker
                .groups
                .load_partition(&partition, Instant::now(), now());
        })
    };
    let mut waits = 0;
    let mut served_while_loading = 0;
    while !loading.is_finished() {
        match broker.groups.describe(big).error {
            Some(ResponseError::CoordinatorLoadInProgress) => {
                waits += 1;
                assert_eq!(broker.groups.describe(&small).error, None);
                if broker.groups.describe(big).error
                    == Some(ResponseError::CoordinatorLoadInProgress)
                {
                    served_while_loading += 1;
                }
            }
            None => {}
            Some(ResponseError::NotCoordinator) if waits == 0 => {} // not started yet
            other => panic!("{big} answered {other:?} while its partition loaded"),
        }
    }
    loading.join().unwrap();
    assert!(
        waits > 0,
        "the load of 100,000 records was never seen in progress"
    );
    assert!(
        served_while_loading > 0,
        "{small} was never answered while {big} loaded"
    );
    assert_eq!(broker.groups.describe(big).error, None);
    assert_eq!(committed(&broker, big, "t", 999).map(|c| c.offset), Some(1));
    assert_eq!(
        committed(&broker, &small, "t", 0).map(|c| c.offset),
        Some(7)
    );
}
