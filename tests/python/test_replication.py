"""Replication in a three-broker cluster: followers fetch from leaders, the
ISR and the high watermark follow them, leaders move to in-sync replicas when
a broker dies and come back with preferred election, acks=all waits for the
ISR and refuses when it is too small, and a replica outside the ISR is not
elected unless unclean election is allowed.
"""

from __future__ import annotations

import filecmp
import re
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

import wire
from conftest import SESSION_TIMEOUT_MS, broker_binary, unique_topic
from test_cluster import consume_all, describe_partitions, produce_while, report_retried_copies

pytestmark = pytest.mark.timeout(240)

SESSION_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000
#: Followers out of touch this long leave the ISR (tests keep it short).
LAG_MS = 2000


def start(cluster_factory, *overrides):
    return cluster_factory(3, f"replica.lag.time.max.ms={LAG_MS}", "default.replication.factor=3", *overrides)


def create(cluster, topic, partitions, replication_factor=3, config=None, assignment=None):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    if assignment is not None:
        # confluent-kafka wants the partition count next to an assignment.
        new = NewTopic(topic, num_partitions=len(assignment), replica_assignment=assignment, config=config or {})
    else:
        new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
    admin.create_topics([new])[topic].result(timeout=30)


def states(cluster, topic, broker=None):
    """partition → (leader, replicas, isr) as a broker's Metadata says."""
    broker = broker or cluster.running()[0]
    partitions = cluster.metadata(broker).topics[topic].partitions
    return {p.id: (p.leader, list(p.replicas), sorted(p.isrs)) for p in partitions.values()}


def wait_full_isr(cluster, topic, timeout=30):
    def full():
        return all(sorted(replicas) == isr and leader > 0 for leader, replicas, isr in states(cluster, topic).values())

    cluster.wait_until(f"every replica of {topic} in sync", full, timeout)


def produce(cluster, topic, count, prefix=b"v", **extra):
    acked, failed = [], []

    def report(err, msg):
        (failed if err else acked).append(err or (msg.partition(), msg.offset(), msg.value()))

    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5, **extra})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=prefix + b"%08d" % i, callback=report)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    return acked, failed


def replica_logs_identical(cluster, topic, partitions):
    """Every partition's segment files are byte-identical on its replicas."""
    for partition in range(partitions):
        dirs = [b.data_dir / f"{topic}-{partition}" for b in cluster.brokers.values()]
        logs = [sorted(d.glob("*.log")) for d in dirs]
        names = {tuple(p.name for p in files) for files in logs}
        if len(names) != 1:
            return False
        for files in zip(*logs):
            if not all(filecmp.cmp(files[0], other, shallow=False) for other in files[1:]):
                return False
    return True


def test_followers_hold_the_leaders_batches_byte_for_byte(cluster_factory):
    cluster = start(cluster_factory)
    topic = unique_topic("replicated")
    create(cluster, topic, 6)
    wait_full_isr(cluster, topic)
    for leader, replicas, isr in states(cluster, topic).values():
        assert len(replicas) == 3 and sorted(replicas) == [1, 2, 3]
    acked, failed = produce(cluster, topic, 5000)
    assert not failed and len(acked) == 5000
    cluster.wait_until("the replicas' logs to be identical", lambda: replica_logs_identical(cluster, topic, 6))
    seen = consume_all(cluster.bootstrap, topic, 6, len(acked))
    assert all(seen.get((p, o)) == v for p, o, v in acked)


def test_leaders_move_to_the_isr_when_a_broker_dies_and_back_by_preferred_election(cluster_factory):
    cluster = start(cluster_factory, "leader.imbalance.check.interval.seconds=1")
    topic = unique_topic("failover")
    create(cluster, topic, 3)
    wait_full_isr(cluster, topic)
    before = states(cluster, topic)
    acked, failed = produce(cluster, topic, 300, prefix=b"before")
    assert not failed
    victim = before[0][0]
    killed_at = time.monotonic()
    cluster.brokers[victim].kill9()
    survivor = next(b for i, b in cluster.brokers.items() if i != victim)

    def moved():
        now = states(cluster, topic, survivor)
        return all(leader not in (victim, -1) and victim not in isr for leader, _, isr in now.values()) and now

    after = cluster.wait_until("leaders to move off the dead broker", moved, SESSION_TIMEOUT_S + 15)
    elapsed = time.monotonic() - killed_at
    print(f"broker {victim} killed; its partitions had new leaders after {elapsed:.2f} s: {after}")
    for partition, (leader, _, isr) in after.items():
        assert leader in before[partition][2], "the new leader was in sync"
    more, failed = produce(cluster, topic, 300, prefix=b"during")
    assert not failed

    cluster.brokers[victim].start()
    wait_full_isr(cluster, topic, timeout=60)

    def preferred():
        return all(leader == replicas[0] for leader, replicas, _ in states(cluster, topic).values())

    cluster.wait_until("leadership back on the preferred replicas", preferred, 30)
    seen = consume_all(cluster.bootstrap, topic, 3, len(acked) + len(more))
    for partition, offset, value in acked + more:
        assert seen.get((partition, offset)) == value, f"acknowledged {value!r} lost"
    cluster.wait_until("identical replicas", lambda: replica_logs_identical(cluster, topic, 3))


def test_librdkafka_keeps_producing_through_a_leader_kill_with_rf3(cluster_factory):
    cluster = start(cluster_factory)
    topic = unique_topic("rf3-move")
    create(cluster, topic, 3, config={"min.insync.replicas": "2"})
    wait_full_isr(cluster, topic)
    victim = states(cluster, topic)[0][0]

    def kill():
        time.sleep(0.5)
        cluster.brokers[victim].kill9()

    acked, failed = produce_while(cluster, topic, 20000, kill)
    assert not failed, failed[:5]
    assert len(acked) == 20000
    seen = consume_all(cluster.bootstrap, topic, 3, len(acked))
    lost = [(p, o, v) for p, o, v in acked if seen.get((p, o)) != v]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:3]}"
    report_retried_copies(seen, acked)


def test_acks_all_needs_min_insync_replicas(cluster_factory):
    cluster = start(cluster_factory)
    topic = unique_topic("min-isr")
    create(cluster, topic, 1, config={"min.insync.replicas": "3"})
    wait_full_isr(cluster, topic)
    acked, failed = produce(cluster, topic, 10)
    assert len(acked) == 10 and not failed
    leader, replicas, _ = states(cluster, topic)[0]
    follower = next(r for r in replicas if r != leader)
    cluster.brokers[follower].kill9()
    cluster.wait_until("the ISR to shrink", lambda: len(states(cluster, topic)[0][2]) == 2, SESSION_TIMEOUT_S + 15)
    # No retries: librdkafka retries NOT_ENOUGH_REPLICAS until the message times out.
    acked, failed = produce(cluster, topic, 5, **{"message.timeout.ms": 10000, "retries": 0})
    assert not acked
    assert failed and all(err.code() == KafkaError.NOT_ENOUGH_REPLICAS for err in failed), failed
    acked, failed = produce(cluster, topic, 5, **{"acks": "1"})
    assert len(acked) == 5 and not failed, "acks=1 does not need the ISR"


def offline_with_broker_1_its_last_isr_member(cluster_factory, name):
    """A partition on brokers 1 and 2: 50 records in sync, broker 2 killed
    (out of the ISR), 50 more on broker 1 alone, broker 1 killed and broker
    2 back: the partition is offline, broker 1 its only in-sync replica.
    Returns (cluster, topic, records before, records after broker 2 left)."""
    cluster = start(cluster_factory, "auto.leader.rebalance.enable=false")
    topic = unique_topic(name)
    create(cluster, topic, 1, assignment=[[1, 2]])
    wait_full_isr(cluster, topic)
    first, failed = produce(cluster, topic, 50, prefix=b"first")
    assert not failed
    cluster.brokers[2].kill9()
    cluster.wait_until("broker 2 out of the ISR", lambda: states(cluster, topic)[0][2] == [1], SESSION_TIMEOUT_S + 15)
    later, failed = produce(cluster, topic, 50, prefix=b"later")
    assert not failed
    cluster.brokers[1].kill9()
    cluster.brokers[2].start()
    cluster.wait_until("the partition offline", lambda: states(cluster, topic)[0][0] == -1, SESSION_TIMEOUT_S + 15)
    return cluster, topic, first, later


def test_a_replica_outside_the_isr_is_elected_only_uncleanly(cluster_factory):
    cluster, topic, first, later = offline_with_broker_1_its_last_isr_member(cluster_factory, "unclean")
    time.sleep(SESSION_TIMEOUT_S)
    assert states(cluster, topic)[0][0] == -1, "broker 2 was elected though it is not in sync"

    tool = subprocess.run(
        [str(broker_binary()), "admin", "--bootstrap-server", cluster.bootstrap, "leaders", "elect",
         "--type", "unclean", "--topic", topic],
        capture_output=True, text=True, timeout=60,
    )
    assert tool.returncode == 0, tool.stdout + tool.stderr
    cluster.wait_until("broker 2 elected uncleanly", lambda: states(cluster, topic)[0][0] == 2)
    seen = consume_all(cluster.bootstrap, topic, 1, len(first))
    assert {v for v in seen.values()} == {v for _, _, v in first}, "what broker 2 had, and only that"


def test_a_sole_isr_member_elected_before_it_knows_its_session_leads_and_takes_followers_back(cluster_factory):
    """The isr-shrink-then-kill failure CI met once, forced: the sole
    in-sync replica of an offline partition restarts; its registration
    reaches etcd, the controller elects it, and it applies that election
    before it has taken the session it registered with as its own (a
    failpoint delays that by 2 s; in CI it was 2 ms). Once it has, it must
    act as the leader it was named — record its epoch, let the follower
    back into the ISR — although no later metadata comes to say so. Before
    the fix it led appends but never let the follower in."""
    cluster, topic, acked, later = offline_with_broker_1_its_last_isr_member(cluster_factory, "late-session")

    sole = cluster.brokers[1]
    sole.env["KBROKER_FAILPOINT_SESSION_PUBLISH_DELAY_MS"] = "2000"
    sole.start()
    cluster.wait_until("broker 1 elected", lambda: states(cluster, topic)[0][0] == 1, SESSION_TIMEOUT_S + 15)
    assert "failpoint: publishing the session late" in sole.log_text()
    wait_full_isr(cluster, topic, timeout=30)
    last, failed = produce(cluster, topic, 20, prefix=b"last", **{"message.timeout.ms": 20000})
    assert not failed and len(last) == 20
    seen = consume_all(cluster.bootstrap, topic, 1, len(acked) + len(later) + len(last))
    assert {v for v in seen.values()} == {v for _, _, v in acked + later + last}


def test_preferred_election_by_the_admin_tool(cluster_factory):
    cluster = start(cluster_factory, "auto.leader.rebalance.enable=false")
    topic = unique_topic("elect")
    create(cluster, topic, 3)
    wait_full_isr(cluster, topic)
    victim = states(cluster, topic)[0][0]
    cluster.brokers[victim].stop()
    cluster.wait_until(
        "leaders off the stopped broker",
        lambda: all(l not in (victim, -1) for l, _, _ in states(cluster, topic).values()),
        SESSION_TIMEOUT_S + 15,
    )
    cluster.brokers[victim].start()
    wait_full_isr(cluster, topic, timeout=60)
    time.sleep(2)
    assert states(cluster, topic)[0][0] != victim, "without auto rebalance, leadership stays where it went"
    tool = subprocess.run(
        [str(broker_binary()), "admin", "--bootstrap-server", cluster.bootstrap, "--json", "leaders", "elect",
         "--type", "preferred", "--topic", topic],
        capture_output=True, text=True, timeout=60,
    )
    assert tool.returncode == 0, tool.stdout + tool.stderr
    cluster.wait_until(
        "preferred leaders everywhere",
        lambda: all(l == replicas[0] for l, replicas, _ in states(cluster, topic).values()),
    )


def test_committed_offsets_survive_the_loss_of_their_coordinator(cluster_factory):
    from confluent_kafka import Consumer, TopicPartition

    cluster = start(cluster_factory, "offsets.topic.num.partitions=3", "group.initial.rebalance.delay.ms=0")
    topic = unique_topic("coordinated")
    create(cluster, topic, 3)
    wait_full_isr(cluster, topic)
    group = unique_topic("group")
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, p, 10 + p) for p in range(3)], asynchronous=False)
    consumer.close()
    offsets = states(cluster, "__consumer_offsets")
    assert all(len(replicas) == 3 for _, replicas, _ in offsets.values()), "offsets.topic.replication.factor=3"
    wait_full_isr(cluster, "__consumer_offsets")
    from test_cluster import java_partition

    coordinator = offsets[java_partition(group, 3)][0]
    cluster.brokers[coordinator].kill9()
    cluster.wait_until(
        "the group's partition to move",
        lambda: states(cluster, "__consumer_offsets")[java_partition(group, 3)][0] not in (coordinator, -1),
        SESSION_TIMEOUT_S + 15,
    )
    reader = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
    committed = reader.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
    reader.close()
    assert [tp.offset for tp in committed] == [10, 11, 12]


def test_kafka_python_keeps_producing_through_a_leader_kill_with_rf3(cluster_factory):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KafkaTopicPartition

    cluster = start(cluster_factory)
    topic = unique_topic("kp-rf3")
    create(cluster, topic, 3)
    wait_full_isr(cluster, topic)
    victim = states(cluster, topic)[1][0]
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", retries=50, retry_backoff_ms=100)
    acked = []
    for i in range(400):
        if i == 150:
            cluster.brokers[victim].kill9()
        value = b"r%05d" % i
        metadata = producer.send(topic, value=value).get(timeout=60)
        acked.append((metadata.partition, metadata.offset, value))
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000)
    consumer.assign([KafkaTopicPartition(topic, p) for p in range(3)])
    consumer.seek_to_beginning()
    seen = {(m.partition, m.offset): m.value for m in consumer}
    consumer.close()
    assert all(seen.get((p, o)) == v for p, o, v in acked)


def test_a_broker_that_led_without_writing_rejoins_the_isr(cluster_factory):
    """Leadership moves to a broker and back before it writes anything: it
    follows again, catches up, and is in sync (min.insync.replicas=3 writes
    succeed)."""
    cluster = start(cluster_factory, "leader.imbalance.check.interval.seconds=1")
    topic = unique_topic("empty-epoch")
    create(cluster, topic, 1, config={"min.insync.replicas": "3"})
    wait_full_isr(cluster, topic)
    acked, failed = produce(cluster, topic, 20)
    assert not failed
    preferred = states(cluster, topic)[0][0]
    cluster.brokers[preferred].stop()
    cluster.wait_until("another leader", lambda: states(cluster, topic)[0][0] not in (preferred, -1), SESSION_TIMEOUT_S + 15)
    cluster.brokers[preferred].start()
    cluster.wait_until("the preferred leader back", lambda: states(cluster, topic)[0][0] == preferred, 60)
    wait_full_isr(cluster, topic, timeout=60)
    acked, failed = produce(cluster, topic, 20, **{"message.timeout.ms": 20000})
    assert not failed and len(acked) == 20


OFFSET_NOT_AVAILABLE = 78
LATEST, EARLIEST = -1, -2


def latest(broker, topic):
    """(error code, offset) of ListOffsets(latest) for partition 0, asked of `broker`."""
    with wire.Connection(broker) as conn:
        return wire.list_offsets(conn, topic, 0, LATEST)


def test_a_new_leader_refuses_the_latest_offset_until_its_high_watermark_reaches_its_epoch(cluster_factory):
    """KIP-207. A follower that stays in the ISR but does not fetch holds
    the high watermark back while the leader takes acks=1 writes past it.
    When the leader dies, the new leader's epoch starts at its log end,
    above the high watermark it inherited: until the ISR catches up, a
    consumer asking for the latest offset gets OFFSET_NOT_AVAILABLE (not the
    stale high watermark), and librdkafka, which retries it, starts a
    consumer at the true end instead of rereading the records below it."""
    # Followers stay in the ISR for 60 s without fetching (later overrides win).
    cluster = start(cluster_factory, "auto.leader.rebalance.enable=false", "replica.lag.time.max.ms=60000")
    controller = cluster.controller()
    # The old leader and the stalled follower are not the controller: the
    # controller must elect while they are gone.
    old, stalled = (i for i in cluster.brokers if i != controller)
    new = controller
    # The stalled follower keeps its session, and so its place in the ISR,
    # while it is paused.
    follower = cluster.brokers[stalled]
    follower.stop()
    follower.overrides.append("broker.session.timeout.ms=60000")
    follower.start()
    cluster.wait_for_brokers(set(cluster.brokers))
    assert cluster.controller() == new, "the controller moved while a broker restarted"

    topic = unique_topic("kip207")
    create(cluster, topic, 1, assignment=[[old, new, stalled]])
    wait_full_isr(cluster, topic)
    acked, failed = produce(cluster, topic, 100, prefix=b"committed")
    assert not failed and len(acked) == 100

    follower.pause()
    acked, failed = produce(cluster, topic, 50, prefix=b"uncommitted", acks="1")
    assert not failed and [o for _, o, _ in acked] == list(range(100, 150))
    leader, successor = cluster.brokers[old], cluster.brokers[new]
    cluster.wait_until(
        "the new leader-to-be to hold the acks=1 records",
        lambda: successor.segment_bytes(topic) == leader.segment_bytes(topic),
    )
    assert latest(leader, topic) == (0, 100), "the paused follower holds the high watermark"

    leader.kill9()
    cluster.wait_until(
        f"broker {new} to lead",
        lambda: states(cluster, topic, successor)[0][0] == new,
        SESSION_TIMEOUT_S + 15,
    )
    with wire.Connection(successor) as conn:
        assert wire.list_offsets(conn, topic, 0, LATEST) == (OFFSET_NOT_AVAILABLE, -1)
        assert wire.list_offsets(conn, topic, 0, EARLIEST) == (0, 0)

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": topic, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, -1)])  # OFFSET_END
        early = consumer.consume(num_messages=100, timeout=2.0)
        assert [m for m in early if not m.error()] == [], "nothing is readable while the ISR lags"
        follower.resume()
        cluster.wait_until("the high watermark to reach the new epoch", lambda: latest(successor, topic) == (0, 150))
        # Until the consumer reads one of these, its position is unknown to
        # the test: keep writing until it does.
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        first = None
        deadline = time.monotonic() + 30
        sent = 0
        while first is None and time.monotonic() < deadline:
            producer.produce(topic, value=b"after%04d" % sent)
            sent += 1
            producer.flush(10)
            for message in consumer.consume(num_messages=100, timeout=0.3):
                if not message.error():
                    first = first or message
        assert first is not None, "the consumer read nothing after the ISR caught up"
        assert first.value().startswith(b"after") and first.offset() >= 150, (
            f"the consumer started at offset {first.offset()} ({first.value()!r}), below the log end of 150 "
            "that the new leader had when it was elected"
        )
    finally:
        consumer.close()


@pytest.mark.parametrize("victim_role", ["controller", "not-controller"])
def test_a_quickly_restarted_leader_leads_again_only_at_a_new_epoch(cluster_factory, victim_role):
    """A leader killed and restarted before its session expires leads again
    only when elected anew. When it was the controller too, the controller
    that replaces it never saw its old session: the restart must be plain
    from the stored partition state alone. Three rounds, as the new
    controller may or may not have seen the old registration go."""
    cluster = start(cluster_factory)
    for round in range(3):
        controller = cluster.controller()
        victim = controller if victim_role == "controller" else next(i for i in cluster.brokers if i != controller)
        topic = unique_topic(f"bounce{round}")
        create(cluster, topic, 1, assignment=[[victim]])
        cluster.wait_until("a leader", lambda: states(cluster, topic)[0][0] == victim)
        acked, failed = produce(cluster, topic, 100)
        assert not failed and len(acked) == 100
        before = describe_partitions(cluster, topic)[0]
        cluster.brokers[victim].kill9()
        cluster.brokers[victim].start()
        cluster.wait_until(
            f"round {round}: the partition led again at a newer epoch",
            lambda: (p := describe_partitions(cluster, topic)[0])["leader"] == victim
            and p["leader_epoch"] > before["leader_epoch"],
            SESSION_TIMEOUT_S + 15,
        )
        seen = consume_all(cluster.bootstrap, topic, 1, len(acked))
        assert sorted(seen.values()) == sorted(v for _, _, v in acked)
        cluster.wait_for_brokers(set(cluster.brokers))


def test_a_quickly_restarted_controller_leaves_the_isr_of_the_partitions_it_led(cluster_factory):
    """RF=3: the controller, leading a partition, is killed and restarted at
    once. The new controller moves leadership to another in-sync replica and
    drops the restarted broker from the ISR (its log may be short of what it
    acknowledged); it rejoins by catching up. Nothing acknowledged is lost."""
    cluster = start(cluster_factory)
    victim = cluster.controller()
    others = [i for i in cluster.brokers if i != victim]
    topic = unique_topic("bounce3")
    create(cluster, topic, 1, assignment=[[victim, *others]])
    wait_full_isr(cluster, topic)
    acked, failed = produce(cluster, topic, 200)
    assert not failed and len(acked) == 200
    before = describe_partitions(cluster, topic)[0]
    cluster.brokers[victim].kill9()
    cluster.brokers[victim].start()
    cluster.wait_until(
        "a new leader among the others, at a newer epoch",
        lambda: (p := describe_partitions(cluster, topic)[0])["leader"] in others
        and p["leader_epoch"] > before["leader_epoch"],
        SESSION_TIMEOUT_S + 15,
    )
    wait_full_isr(cluster, topic)
    more, failed = produce(cluster, topic, 100, prefix=b"w")
    assert not failed and len(more) == 100
    seen = consume_all(cluster.bootstrap, topic, 1, len(acked) + len(more))
    assert sorted(seen.values()) == sorted(v for _, _, v in acked + more)


def test_followers_follow_the_leaders_log_start(cluster_factory):
    """DeleteRecords moves the leader's log start; the followers' follows, so
    the deleted records do not come back when a follower becomes leader."""
    cluster = start(cluster_factory)
    topic = unique_topic("log-start")
    create(cluster, topic, 1, config={"segment.bytes": "2048"})
    wait_full_isr(cluster, topic)
    acked, failed = produce(cluster, topic, 300, **{"linger.ms": 0})
    assert not failed and len(acked) == 300
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    [deleted] = admin.delete_records([TopicPartition(topic, 0, 120)], request_timeout=30).values()
    assert deleted.result(timeout=30).low_watermark == 120
    leader = states(cluster, topic)[0][0]
    followers = [b for i, b in cluster.brokers.items() if i != leader]

    def log_start(broker) -> int:
        try:
            return int((broker.data_dir / f"{topic}-0" / "log-start-offset-checkpoint").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return 0

    cluster.wait_until("the followers' log start to reach 120", lambda: all(log_start(b) == 120 for b in followers), 30)

    cluster.brokers[leader].kill9()
    survivor = followers[0]
    cluster.wait_until(
        "a new leader", lambda: states(cluster, topic, survivor)[0][0] not in (leader, -1), SESSION_TIMEOUT_S + 15
    )
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique_topic("g")})
    assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30) == (120, 300)
    consumer.close()


def test_a_follower_catches_up_across_the_gaps_its_compacted_leader_left(cluster_factory):
    """A follower that was down while its leader compacted the partition
    fetches across the gaps where the cleaner dropped whole batches (their
    offsets are skipped, as Kafka's followers skip them) and rejoins the
    ISR."""
    cluster = start(cluster_factory, "log.cleaner.backoff.ms=200")
    topic = unique_topic("compact-gaps")
    compacted = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}
    create(cluster, topic, 1, config=compacted)
    wait_full_isr(cluster, topic)
    leader = states(cluster, topic)[0][0]
    victim = next(b for i, b in cluster.brokers.items() if i != leader)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
    failed = []

    def round_of(value: bytes) -> None:
        # Every key again: each round supersedes the one before, whole.
        for key in range(20):
            producer.produce(topic, key=b"key-%02d" % key, value=value * 100, partition=0,
                             on_delivery=lambda err, _msg: err and failed.append(err))
        producer.flush(60)

    round_of(b"0")
    wait_full_isr(cluster, topic)
    victim.kill9()
    for value in range(1, 40):
        round_of(b"%d" % value)
    assert not failed, failed[:3]
    leader_broker = cluster.brokers[leader]

    def compacted_by_leader() -> bool:
        text = re.sub(r"\x1b\[[0-9;]*m", "", leader_broker.log_text())
        return f"compacted topic={topic}" in text

    cluster.wait_until(f"the leader to compact {topic}", compacted_by_leader, 60)
    victim.start()
    wait_full_isr(cluster, topic, timeout=60)
    assert "below the log end" not in victim.log_text()
