//! Cluster mode against a real etcd: the controller's fencing, and what a
//! broker answers for partitions and groups it does not lead (exact
//! request versions, encoded with the `kafka-protocol` crate).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use client::Client;
use coordinator::etcd::{ControllerConfig, EtcdConfig, EtcdStore};
use coordinator::{CoordinatorError, MetadataStore, NewTopic, NO_LEADER};
use e2e::{eventually, Cluster, EtcdProcess};
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, ElectLeadersRequest, FetchRequest, FindCoordinatorRequest,
    GroupId, JoinGroupRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const TIMEOUT: Duration = Duration::from_secs(30);
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_COORDINATOR: i16 = 16;
const NOT_CONTROLLER: i16 = 41;
const ELECTION_NOT_NEEDED: i16 = 84;

fn store_config(etcd: &EtcdProcess, node_id: i32, dir: &std::path::Path) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![etcd.endpoint.clone()],
        prefix: "/fencing".into(),
        session_timeout: Duration::from_millis(e2e::SESSION_TIMEOUT_MS),
        heartbeat_interval: Duration::from_millis(e2e::HEARTBEAT_INTERVAL_MS),
        registration: coordinator::BrokerRegistration {
            node_id,
            rack: None,
            endpoints: Vec::new(),
            inter_broker_listener: String::new(),
            shutting_down: false,
            epoch: 0,
        },
        data_dir: dir.to_path_buf(),
        controller: ControllerConfig {
            unclean_leader_election: false,
            auto_leader_rebalance: false,
            leader_imbalance_check_interval: Duration::from_secs(300),
            leader_imbalance_percentage: 10,
        },
    }
}

/// A controller paused past its session (here: its lease revoked behind
/// its back) still believes it holds its seat; when it writes, etcd
/// refuses, because the write compares the election key it won with.
#[tokio::test]
async fn a_stale_controllers_write_is_refused_by_etcd() {
    let etcd = EtcdProcess::start();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = EtcdStore::connect(store_config(&etcd, 1, dirs.0.path()))
        .await
        .unwrap();
    first.join().await.unwrap();
    let stale = eventually("broker 1 to become controller", TIMEOUT, || async {
        first.controller_seat()
    })
    .await;
    let second = EtcdStore::connect(store_config(&etcd, 2, dirs.1.path()))
        .await
        .unwrap();
    second.join().await.unwrap();
    eventually("broker 1 to see broker 2", TIMEOUT, || async {
        first.snapshot().is_alive(2).then_some(())
    })
    .await;
    let topic = first
        .create_topic(
            NewTopic {
                name: "fenced".into(),
                partitions: 1,
                replication_factor: 1,
                assignment: Some(vec![vec![2]]),
                configs: BTreeMap::new(),
            },
            false,
        )
        .await
        .unwrap();

    let mut etcd_client = etcd_client::Client::connect([&etcd.endpoint], None)
        .await
        .unwrap();
    etcd_client.lease_revoke(stale.lease).await.unwrap();
    let successor = eventually("broker 2 to take over", TIMEOUT, || async {
        second.controller_seat()
    })
    .await;
    assert!(
        successor.epoch > stale.epoch,
        "{successor:?} after {stale:?}"
    );

    let mut forged = topic.partitions[0].clone();
    forged.leader = NO_LEADER;
    forged.leader_epoch = 1000;
    let refused = first
        .write_as_controller(&stale, "fenced", forged.clone())
        .await;
    assert!(
        matches!(refused, Err(CoordinatorError::NotController)),
        "{refused:?}"
    );
    let state = second.snapshot().topics["fenced"].partitions[0].clone();
    assert_ne!(state.leader_epoch, 1000, "the stale write reached etcd");

    // The new controller's seat is good (retried if its own reaction to
    // broker 1's lost session raced this write).
    let mut accepted = forged.clone();
    accepted.leader_epoch = 2000;
    eventually("the new controller's write", TIMEOUT, || {
        let accepted = accepted.clone();
        let (second, successor) = (&second, &successor);
        async move {
            match second
                .write_as_controller(successor, "fenced", accepted)
                .await
            {
                Ok(()) => Some(()),
                Err(CoordinatorError::Fenced(_)) => None,
                Err(other) => panic!("{other}"),
            }
        }
    })
    .await;
    assert_eq!(
        second.snapshot().topics["fenced"].partitions[0].leader_epoch,
        2000
    );
    second.leave().await;
    first.leave().await;
}

async fn client(cluster: &Cluster, node_id: i32) -> Client {
    Client::connect(&cluster.bootstrap(node_id)).await.unwrap()
}

/// Waits until broker `node_id` lists `count` brokers.
async fn wait_for_brokers(cluster: &Cluster, node_id: i32, count: usize) {
    eventually("the brokers to register", TIMEOUT, || async {
        let mut client = Client::connect(&cluster.bootstrap(node_id)).await.ok()?;
        let metadata = client
            .call(MetadataRequest::default().with_topics(Some(Vec::new())), 12)
            .await
            .ok()?;
        (metadata.brokers.len() == count && metadata.controller_id.0 >= 0).then_some(())
    })
    .await;
}

/// Creates `name` with one partition on `replicas` (the first leads).
async fn create_on(cluster: &Cluster, name: &str, replicas: &[i32]) {
    let mut admin = client(cluster, 1).await;
    let response = admin
        .call(
            CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.into())))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(
                            replicas.iter().copied().map(BrokerId).collect(),
                        )])])
                .with_timeout_ms(30_000),
            7,
        )
        .await
        .unwrap();
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

fn one_record_batch() -> bytes::Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(bytes::Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [record].iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

/// KIP-951: Produce v10+ and Fetch v16+ answered by a broker that does not
/// lead the partition name the leader, its epoch and its endpoint, so that
/// the client goes there without asking for metadata first.
#[tokio::test]
async fn a_broker_that_does_not_lead_a_partition_names_its_leader() {
    let cluster = Cluster::start(2, &[]);
    wait_for_brokers(&cluster, 1, 2).await;
    create_on(&cluster, "redirected", &[1]).await;
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("redirected")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(one_record_batch()))])]);

    let mut follower = client(&cluster, 2).await;
    let answer = follower.call(produce.clone(), 11).await.unwrap();
    let partition = &answer.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, NOT_LEADER_OR_FOLLOWER, "{answer:?}");
    assert_eq!(partition.current_leader.leader_id.0, 1);
    assert_eq!(partition.current_leader.leader_epoch, 0);
    let leader = &cluster.brokers[0];
    assert_eq!(answer.node_endpoints.len(), 1, "{answer:?}");
    assert_eq!(answer.node_endpoints[0].node_id.0, 1);
    assert_eq!(answer.node_endpoints[0].host.as_str(), leader.host);
    assert_eq!(answer.node_endpoints[0].port, i32::from(leader.port));

    let mut at_leader = client(&cluster, 1).await;
    let answer = at_leader.call(produce, 11).await.unwrap();
    assert_eq!(answer.responses[0].partition_responses[0].error_code, 0);

    let metadata = follower
        .call(
            MetadataRequest::default().with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("redirected")))),
            ])),
            12,
        )
        .await
        .unwrap();
    let topic_id = metadata.topics[0].topic_id;
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let answer = follower.call(fetch.clone(), 16).await.unwrap();
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.error_code, NOT_LEADER_OR_FOLLOWER, "{answer:?}");
    assert_eq!(partition.current_leader.leader_id.0, 1);
    assert_eq!(answer.node_endpoints[0].port, i32::from(leader.port));
    let answer = at_leader.call(fetch, 16).await.unwrap();
    assert_eq!(answer.responses[0].partitions[0].error_code, 0);
    assert_eq!(answer.responses[0].partitions[0].high_watermark, 1);
}

/// Every broker names the same coordinator for a group (the leader of its
/// `__consumer_offsets` partition); the others refuse its requests.
#[tokio::test]
async fn a_group_is_coordinated_by_the_leader_of_its_offsets_partition() {
    let cluster = Cluster::start(2, &["offsets.topic.num.partitions=4"]);
    wait_for_brokers(&cluster, 1, 2).await;
    let mut coordinators = Vec::new();
    for node_id in [1, 2] {
        let answer = eventually("a coordinator", TIMEOUT, || async {
            let mut client = client(&cluster, node_id).await;
            let answer = client
                .call(
                    FindCoordinatorRequest::default()
                        .with_key_type(0)
                        .with_coordinator_keys(vec![StrBytes::from_static_str("billing")]),
                    4,
                )
                .await
                .ok()?;
            let found = &answer.coordinators[0];
            (found.error_code == 0).then_some(found.node_id.0)
        })
        .await;
        coordinators.push(answer);
    }
    assert_eq!(coordinators[0], coordinators[1]);
    let coordinator = coordinators[0];
    let other = if coordinator == 1 { 2 } else { 1 };

    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("billing")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(StrBytes::from_static_str(""))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(bytes::Bytes::from_static(b"\x00\x01"))]);
    let answer = client(&cluster, other)
        .await
        .call(join.clone(), 9)
        .await
        .unwrap();
    assert_eq!(answer.error_code, NOT_COORDINATOR);
    let answer = client(&cluster, coordinator)
        .await
        .call(join, 9)
        .await
        .unwrap();
    // KIP-394: the coordinator hands out a member id first.
    assert_eq!(answer.error_code, 79, "{answer:?}");
}

/// ElectLeaders goes to the controller; the other brokers refuse it so
/// that the client looks the controller up.
#[tokio::test]
async fn only_the_controller_runs_elections() {
    let cluster = Cluster::start(2, &[]);
    wait_for_brokers(&cluster, 1, 2).await;
    create_on(&cluster, "elected", &[2]).await;
    let metadata = client(&cluster, 1)
        .await
        .call(MetadataRequest::default().with_topics(Some(Vec::new())), 12)
        .await
        .unwrap();
    let controller = metadata.controller_id.0;
    let other = if controller == 1 { 2 } else { 1 };
    let elect = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(TopicName(StrBytes::from_static_str("elected")))
            .with_partitions(vec![0])]));
    let answer = client(&cluster, other)
        .await
        .call(elect.clone(), 2)
        .await
        .unwrap();
    assert_eq!(answer.error_code, NOT_CONTROLLER, "{answer:?}");
    let answer = client(&cluster, controller)
        .await
        .call(elect, 2)
        .await
        .unwrap();
    assert_eq!(answer.error_code, 0, "{answer:?}");
    let result = &answer.replica_election_results[0].partition_result[0];
    assert_eq!(result.error_code, ELECTION_NOT_NEEDED, "{answer:?}");
}

/// A leader paused past its session timeout (SIGSTOP) wakes up still
/// believing it leads; it must not acknowledge anything: it can no longer
/// prove its session, and another broker leads at a newer epoch.
#[tokio::test]
async fn a_paused_leader_acknowledges_nothing_once_its_session_is_gone() {
    let mut cluster = Cluster::start(3, &["replica.lag.time.max.ms=2000"]);
    wait_for_brokers(&cluster, 1, 3).await;
    create_on(&cluster, "paused", &[1, 2, 3]).await;
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("paused")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(one_record_batch()))])]);
    // The ISR may still be forming: acks=all is retried until it succeeds.
    let mut leader = client(&cluster, 1).await;
    let started = std::time::Instant::now();
    loop {
        let answer = leader.call(produce.clone(), 11).await.unwrap();
        let first = &answer.responses[0].partition_responses[0];
        if first.error_code == 0 {
            assert_eq!(first.base_offset, 0);
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.broker(1).pause();
    let new_leader = eventually("another leader", TIMEOUT, || {
        let cluster = &cluster;
        async move {
            let mut other = Client::connect(&cluster.bootstrap(2)).await.ok()?;
            let metadata = other
                .call(MetadataRequest::default().with_topics(None), 12)
                .await
                .ok()?;
            let topic = metadata
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "paused"))?;
            let leader = topic.partitions[0].leader_id.0;
            (leader > 1).then_some(leader)
        }
    })
    .await;
    cluster.broker(1).resume();
    let answer = leader.call(produce.clone(), 11).await.unwrap();
    let refused = &answer.responses[0].partition_responses[0];
    assert_eq!(refused.error_code, NOT_LEADER_OR_FOLLOWER, "{answer:?}");

    // The new leader has the first record and takes writes.
    let mut current = client(&cluster, new_leader).await;
    let answer = current.call(produce, 11).await.unwrap();
    let accepted = &answer.responses[0].partition_responses[0];
    assert_eq!(
        (accepted.error_code, accepted.base_offset),
        (0, 1),
        "{answer:?}"
    );
}

/// An acks=all produce waiting for a stopped follower does not hold up the
/// requests after it on the same connection: a later acks=1 produce to
/// another partition is appended at once, and the responses still come in
/// request order.
#[tokio::test]
async fn requests_after_an_acks_all_produce_go_on_while_it_waits_for_replicas() {
    let mut cluster = Cluster::start(2, &["replica.lag.time.max.ms=20000"]);
    wait_for_brokers(&cluster, 1, 2).await;
    create_on(&cluster, "held", &[1, 2]).await;
    create_on(&cluster, "free", &[1]).await;
    let produce = |topic: &'static str, acks: i16| {
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(15_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(one_record_batch()))])])
    };
    // Both replicas in the ISR: an acks=all write succeeds.
    let mut producer = client(&cluster, 1).await;
    let started = std::time::Instant::now();
    let first_offset = loop {
        let answer = producer.call(produce("held", -1), 11).await.unwrap();
        let first = &answer.responses[0].partition_responses[0];
        if first.error_code == 0 {
            break first.base_offset;
        }
        assert!(started.elapsed() < TIMEOUT, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    cluster.broker(2).pause();
    let held = producer.send(produce("held", -1), 11).await.unwrap();
    let sent = std::time::Instant::now();
    let free = producer.send(produce("free", 1), 11).await.unwrap();
    // The second write is in the log while the first still waits (its
    // follower is stopped, and stays in the ISR for 20 s).
    let mut observer = client(&cluster, 1).await;
    let latest = |topic: &'static str| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])])
    };
    loop {
        let offsets = observer.call(latest("free"), 8).await.unwrap();
        if offsets.topics[0].partitions[0].offset == 1 {
            break;
        }
        assert!(sent.elapsed() < TIMEOUT, "{offsets:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and the first is not answered yet: its record is not below the
    // high watermark (ListOffsets' latest).
    let offsets = observer.call(latest("held"), 8).await.unwrap();
    assert_eq!(
        offsets.topics[0].partitions[0].offset,
        first_offset + 1,
        "the acks=1 write was appended only once the acks=all one before it was replicated"
    );
    cluster.broker(2).resume();
    let first = producer.receive::<ProduceRequest>(held, 11).await.unwrap();
    let second = producer.receive::<ProduceRequest>(free, 11).await.unwrap();
    let held = &first.responses[0].partition_responses[0];
    assert_eq!(
        (held.error_code, held.base_offset),
        (0, first_offset + 1),
        "{first:?}"
    );
    let free = &second.responses[0].partition_responses[0];
    assert_eq!((free.error_code, free.base_offset), (0, 0), "{second:?}");
}

/// A topic record written before `assigned_at` was kept: when partitions
/// are added, its existing partitions are taken as planned when the topic
/// was created (the key's create revision, as the metadata cache reads
/// such a record), not at the time of the addition, which would count a
/// replica that restarted in between as never restarted.
#[tokio::test]
async fn partitions_added_to_a_legacy_topic_keep_their_creation_revision() {
    let etcd = EtcdProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = store_config(&etcd, 1, dir.path());
    config.prefix = "/legacy".into();
    let store = EtcdStore::connect(config).await.unwrap();
    store.join().await.unwrap();
    eventually("broker 1 to register", TIMEOUT, || async {
        store.snapshot().is_alive(1).then_some(())
    })
    .await;
    store
        .create_topic(
            NewTopic {
                name: "legacy".into(),
                partitions: 1,
                replication_factor: 1,
                assignment: None,
                configs: BTreeMap::new(),
            },
            false,
        )
        .await
        .unwrap();
    let mut client = etcd_client::Client::connect([&etcd.endpoint], None)
        .await
        .unwrap();
    let key = "/legacy/topics/legacy";
    let read = |response: etcd_client::GetResponse| {
        let kv = &response.kvs()[0];
        let record: serde_json::Value = serde_json::from_slice(kv.value()).unwrap();
        (record, kv.create_revision())
    };
    let (mut record, created) = read(client.get(key, None).await.unwrap());
    // As written before `assigned_at` existed (the rewrite moves etcd's
    // revision on past the creation).
    record.as_object_mut().unwrap().remove("assigned_at");
    let rewritten = client
        .put(key, serde_json::to_vec(&record).unwrap(), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert!(rewritten > created);
    eventually("the legacy record to be seen", TIMEOUT, || async {
        (store.snapshot().revision >= rewritten).then_some(())
    })
    .await;
    store
        .create_partitions("legacy", 2, None, false)
        .await
        .unwrap();
    let (record, _) = read(client.get(key, None).await.unwrap());
    let assigned_at: Vec<i64> = serde_json::from_value(record["assigned_at"].clone()).unwrap();
    assert_eq!(assigned_at.len(), 2, "{record}");
    assert_eq!(assigned_at[0], created, "{record}");
    assert!(assigned_at[1] > created, "{record}");
}

/// A follower whose fetch offset is ahead of what it has written (its
/// fetcher appends the previous answer while the next fetch is on its way)
/// says where its log really ends in our tagged field; the leader counts
/// only that towards the high watermark, so an acks=all produce is not
/// answered while the follower holds its records only in memory. Broker 2
/// is paused and the test fetches in its name, as its fetcher would.
#[tokio::test]
async fn the_high_watermark_counts_what_a_follower_has_written_not_only_received() {
    let mut cluster = Cluster::start(2, &["replica.lag.time.max.ms=20000"]);
    wait_for_brokers(&cluster, 1, 2).await;
    create_on(&cluster, "written", &[1, 2]).await;
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(15_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("written")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(one_record_batch()))])]);
    // Both replicas in the ISR: an acks=all write succeeds.
    let mut producer = client(&cluster, 1).await;
    let started = std::time::Instant::now();
    let first_offset = loop {
        let answer = producer.call(produce.clone(), 11).await.unwrap();
        let first = &answer.responses[0].partition_responses[0];
        if first.error_code == 0 {
            break first.base_offset;
        }
        assert!(started.elapsed() < TIMEOUT, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut leader = client(&cluster, 1).await;
    let metadata = leader
        .call(
            MetadataRequest::default().with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("written")))),
            ])),
            12,
        )
        .await
        .unwrap();
    let topic_id = metadata.topics[0].topic_id;
    let leader_epoch = metadata.topics[0].partitions[0].leader_epoch;

    // Broker 2 stops fetching (within its 3 s session, it stays registered
    // and in the ISR); the next record waits for it.
    cluster.broker(2).pause();
    let held = producer.send(produce.clone(), 11).await.unwrap();
    let offset = first_offset + 1;
    let as_follower = |fetch_offset: i64, written_end: Option<i64>| {
        let mut partition = FetchPartition::default()
            .with_partition(0)
            .with_current_leader_epoch(leader_epoch)
            .with_fetch_offset(fetch_offset)
            .with_last_fetched_epoch(leader_epoch)
            .with_partition_max_bytes(1 << 20);
        if let Some(written_end) = written_end {
            partition = partition.with_unknown_tagged_field(
                protocol::extensions::WRITTEN_END_TAG,
                bytes::Bytes::copy_from_slice(&written_end.to_be_bytes()),
            );
        }
        FetchRequest::default()
            .with_replica_state(
                kafka_protocol::messages::fetch_request::ReplicaState::default()
                    .with_replica_id(BrokerId(2))
                    .with_replica_epoch(-1),
            )
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![partition])])
    };
    // The record is in the leader's log: a fetch from where broker 2's
    // log ends returns it.
    eventually("the held record in the leader's log", TIMEOUT, || async {
        let mut fetcher = client(&cluster, 1).await;
        let answer = fetcher.call(as_follower(offset, None), 15).await.ok()?;
        let partition = &answer.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0, "{answer:?}");
        assert_eq!(partition.high_watermark, offset, "{answer:?}");
        partition
            .records
            .as_ref()
            .filter(|records| !records.is_empty())
            .map(|_| ())
    })
    .await;
    // Received past the record, written up to it: not committed.
    let answer = leader
        .call(as_follower(offset + 1, Some(offset)), 15)
        .await
        .unwrap();
    assert_eq!(
        answer.responses[0].partitions[0].high_watermark, offset,
        "the leader counted a record the follower has not written: {answer:?}"
    );
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        producer.receive::<ProduceRequest>(held, 11),
    )
    .await;
    assert!(
        early.is_err(),
        "acks=all answered before the follower wrote the record: {early:?}"
    );
    // Written too: committed, and the produce is answered.
    let answer = leader
        .call(as_follower(offset + 1, None), 15)
        .await
        .unwrap();
    assert_eq!(
        answer.responses[0].partitions[0].high_watermark,
        offset + 1,
        "{answer:?}"
    );
    let answered = producer.receive::<ProduceRequest>(held, 11).await.unwrap();
    let partition = &answered.responses[0].partition_responses[0];
    assert_eq!(
        (partition.error_code, partition.base_offset),
        (0, offset),
        "{answered:?}"
    );
    cluster.broker(2).resume();
}
