"""Cluster mode: brokers on 127.0.0.1..3 sharing a real etcd.

Registration, controller election and failover, metadata converging on every
broker, partitions going offline with their broker and coming back, the group
coordinator on its partition's leader, and librdkafka / kafka-python producing
and consuming through leader changes. Sessions are 3 s long here
(conftest.SESSION_TIMEOUT_MS), so failovers take seconds.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from conftest import SESSION_TIMEOUT_MS, Broker, Etcd, free_port, unique_topic

pytestmark = pytest.mark.timeout(180)

SESSION_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000


def admin(cluster) -> AdminClient:
    return AdminClient({"bootstrap.servers": cluster.bootstrap})


def create(cluster, topic: str, partitions: int, replication_factor: int = 1, config=None) -> None:
    client = admin(cluster)
    futures = client.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})]
    )
    futures[topic].result(timeout=30)


def java_partition(group: str, partitions: int) -> int:
    """Kafka's __consumer_offsets partition of a group (Java's String.hashCode)."""
    h = 0
    data = group.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (h * 31 + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return 0 if h == -(1 << 31) else abs(h) % partitions


def test_brokers_register_and_agree_on_a_controller(cluster_factory):
    cluster = cluster_factory(3, "broker.rack=rack-a")
    for node_id, broker in cluster.brokers.items():
        metadata = cluster.metadata(broker)
        assert sorted(metadata.brokers) == [1, 2, 3]
        for other_id, listed in metadata.brokers.items():
            assert (listed.host, listed.port) == (cluster.brokers[other_id].host, cluster.brokers[other_id].port)
    controllers = {cluster.metadata(b).controller_id for b in cluster.brokers.values()}
    assert len(controllers) == 1 and controllers.pop() in (1, 2, 3)
    client = admin(cluster)
    described = client.describe_cluster().result(timeout=10)
    assert described.controller.id == cluster.controller()
    assert sorted(node.id for node in described.nodes) == [1, 2, 3]
    assert all(node.rack == "rack-a" for node in described.nodes)


def test_a_killed_controller_is_replaced_within_the_session_timeout(cluster_factory):
    cluster = cluster_factory(3)
    old = cluster.controller()
    killed_at = time.monotonic()
    cluster.brokers[old].kill9()
    survivors = set(cluster.brokers) - {old}
    cluster.wait_for_brokers(survivors, timeout=SESSION_TIMEOUT_S + 15)
    new = cluster.controller()
    elapsed = time.monotonic() - killed_at
    print(f"controller {old} killed; broker {new} controller after {elapsed:.2f} s")
    assert new != old
    assert elapsed < SESSION_TIMEOUT_S + 3, f"took {elapsed:.1f} s"
    cluster.brokers[old].start()
    cluster.wait_for_brokers({1, 2, 3})
    assert cluster.controller() == new, "a returning broker does not take the seat back"


def test_a_cleanly_stopped_broker_leaves_at_once(cluster_factory):
    cluster = cluster_factory(3)
    controller = cluster.controller()
    stopped_at = time.monotonic()
    assert cluster.brokers[controller].stop() == 0
    cluster.wait_for_brokers(set(cluster.brokers) - {controller}, timeout=SESSION_TIMEOUT_S + 15)
    elapsed = time.monotonic() - stopped_at
    print(f"controller {controller} stopped; successor after {elapsed:.2f} s")
    assert elapsed < SESSION_TIMEOUT_S, "it ended its session instead of letting it expire"


def test_topics_configs_and_partitions_converge_on_every_broker(cluster_factory):
    cluster = cluster_factory(3)
    topic = unique_topic("converge")
    create(cluster, topic, 6)

    def same_everywhere(check):
        def converged():
            views = [cluster.metadata(b).topics.get(topic) for b in cluster.brokers.values()]
            return all(check(view) for view in views)

        return converged

    cluster.wait_until("the topic on every broker", same_everywhere(lambda t: t is not None and len(t.partitions) == 6))
    leaders = cluster.leaders(topic)
    assert sorted(leaders.values()) == [1, 1, 2, 2, 3, 3], f"leadership is spread: {leaders}"
    for broker in cluster.brokers.values():
        assert cluster.leaders(topic, broker) == leaders

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.ms": "3600000"})
    one = AdminClient({"bootstrap.servers": cluster.brokers[2].bootstrap})
    one.alter_configs([resource])[resource].result(timeout=30)
    for broker in cluster.brokers.values():
        other = AdminClient({"bootstrap.servers": broker.bootstrap})
        described = other.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
        configs = list(described.values())[0].result(timeout=30)
        assert configs["retention.ms"].value == "3600000"

    three = AdminClient({"bootstrap.servers": cluster.brokers[3].bootstrap})
    three.create_partitions([NewPartitions(topic, 9)])[topic].result(timeout=30)
    cluster.wait_until("9 partitions everywhere", same_everywhere(lambda t: t is not None and len(t.partitions) == 9))

    dirs = [d for b in cluster.brokers.values() for d in b.data_dir.glob(f"{topic}-*")]
    assert len(dirs) == 9, "each partition has one replica, on one broker"
    two = AdminClient({"bootstrap.servers": cluster.brokers[2].bootstrap})
    two.delete_topics([topic])[topic].result(timeout=30)
    cluster.wait_until("the topic gone everywhere", same_everywhere(lambda t: t is None))
    cluster.wait_until(
        "its directories removed on every broker",
        lambda: not [d for b in cluster.brokers.values() for d in b.data_dir.glob(f"{topic}-*")],
    )


def test_a_replication_factor_above_the_live_brokers_is_refused(cluster_factory):
    cluster = cluster_factory(3)
    topic = unique_topic("rf")
    client = admin(cluster)
    futures = client.create_topics([NewTopic(topic, num_partitions=1, replication_factor=4)])
    with pytest.raises(KafkaException) as refused:
        futures[topic].result(timeout=30)
    assert refused.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR


def test_partitions_go_offline_with_their_only_replica_and_return_with_a_new_epoch(cluster_factory):
    cluster = cluster_factory(3)
    topic = unique_topic("offline")
    create(cluster, topic, 3)
    cluster.wait_until("leaders everywhere", lambda: all(l > 0 for l in cluster.leaders(topic).values()))
    before = describe_partitions(cluster, topic)
    victim = cluster.leaders(topic)[0]
    cluster.brokers[victim].kill9()
    survivor = next(b for i, b in cluster.brokers.items() if i != victim)

    def offline():
        partitions = cluster.metadata(survivor).topics[topic].partitions
        return partitions[0].leader == -1 and partitions[0].error is not None

    cluster.wait_until("partition 0 to go offline", offline, timeout=SESSION_TIMEOUT_S + 15)
    others = {p: l for p, l in cluster.leaders(topic, survivor).items() if p != 0}
    assert all(leader != victim and leader > 0 for leader in others.values()), others

    cluster.brokers[victim].start()
    cluster.wait_until("partition 0 back on its broker", lambda: cluster.leaders(topic, survivor)[0] == victim)
    after = describe_partitions(cluster, topic)
    assert after[0]["leader_epoch"] > before[0]["leader_epoch"], (before, after)


def describe_partitions(cluster, topic: str) -> dict[int, dict]:
    """Leader and leader epoch per partition, from kafka-python's raw Metadata v9."""
    from kafka import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        described = client.describe_topics([topic])[0]
        return {p["partition"]: p for p in described["partitions"]}
    finally:
        client.close()


def produce_while(
    target, topic: str, count: int, during, every: int = 200, pause: float = 0.01, **config
) -> tuple[list, list]:
    """Produces `count` unique values with librdkafka (acks=all, retries;
    `config` added to the producer's) to `target` (a broker or a cluster),
    `every` values then a `pause`, while `during()` runs in another thread;
    returns (acknowledged, failed)."""
    acked, failed = [], []

    def report(err, msg):
        (failed if err else acked).append(err or (msg.partition(), msg.offset(), msg.value()))

    producer = Producer(
        {
            "bootstrap.servers": target.bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 60000,
            "topic.metadata.refresh.interval.ms": 500,
            **config,
        }
    )
    fault = threading.Thread(target=during)
    fault.start()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=b"v%08d" % i, callback=report)
                break
            except BufferError:
                producer.poll(0.05)
        if i % every == 0:
            producer.poll(0)
            time.sleep(pause)
    fault.join()
    assert producer.flush(120) == 0, "messages left undelivered"
    return acked, failed


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[tuple[int, int], bytes]:
    """Every record of the topic, read from the start of each partition up to
    its high watermark: at least `expected` records, and then on until every
    partition's position has reached its high watermark as the leader gives
    it then. Stopping at a count alone is wrong once a producer's retries
    have written records twice: the count is reached before the end of
    every partition has been read. Fails if the end is not reached in 60 s."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique_topic("reader"), "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen: dict[tuple[int, int], bytes] = {}
    ends: dict[int, int] = {}

    def at_end() -> bool:
        positions = consumer.position([TopicPartition(topic, p) for p in range(partitions)])
        for position in positions:
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, position.partition), timeout=5)
            except KafkaException:
                return False  # a leader moving: ask again
            ends[position.partition] = high
            if max(position.offset, 0) < high:
                return False
        return True

    deadline = time.monotonic() + 60
    try:
        while True:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seen[(message.partition(), message.offset())] = message.value()
                continue
            if len(seen) >= expected and at_end():
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: read {len(seen)} records (at least {expected} expected) and did not reach "
                    f"the high watermarks {ends} within 60 s"
                )
    finally:
        consumer.close()


def test_librdkafka_produces_and_consumes_through_a_broker_restart(cluster_factory):
    cluster = cluster_factory(3)
    topic = unique_topic("restart")
    create(cluster, topic, 3)
    cluster.wait_until("leaders", lambda: all(l > 0 for l in cluster.leaders(topic).values()))
    victim = cluster.leaders(topic)[1]

    def restart():
        time.sleep(1.0)
        cluster.brokers[victim].kill9()
        time.sleep(SESSION_TIMEOUT_S + 1)
        cluster.brokers[victim].start()

    acked, failed = produce_while(cluster, topic, 6000, restart)
    assert not failed, failed[:5]
    values = [value for _, _, value in acked]
    assert len(set(values)) == 6000
    seen = consume_all(cluster.bootstrap, topic, 3, len(acked))
    for partition, offset, value in acked:
        assert seen.get((partition, offset)) == value, f"acknowledged {value!r} missing at {partition}/{offset}"
    report_retried_copies(seen, acked)


def report_retried_copies(seen: dict[tuple[int, int], bytes], acked: list) -> None:
    """Records in the log that no acknowledgement names are copies written by
    librdkafka's retries: a batch appended whose answer the kill cut off is
    sent again, and without idempotence (not built yet) Kafka stores it
    twice too. Each must be a copy of an acknowledged value."""
    acked_at = {(p, o) for p, o, _ in acked}
    values = {v for _, _, v in acked}
    extra = {at: v for at, v in seen.items() if at not in acked_at}
    assert all(v in values for v in extra.values()), "a record in the log that was never sent"
    print(f"{len(extra)} records written twice by retries")


def test_kafka_python_produces_and_consumes_through_a_broker_restart(cluster_factory):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KafkaTopicPartition

    cluster = cluster_factory(3)
    topic = unique_topic("kp-restart")
    create(cluster, topic, 3)
    cluster.wait_until("leaders", lambda: all(l > 0 for l in cluster.leaders(topic).values()))
    victim = cluster.leaders(topic)[2]
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", retries=50, retry_backoff_ms=200)
    acked = []

    def restart():
        cluster.brokers[victim].kill9()
        time.sleep(SESSION_TIMEOUT_S + 1)
        cluster.brokers[victim].start()

    fault = threading.Thread(target=restart)
    for i in range(300):
        if i == 100:
            fault.start()
        value = b"k%05d" % i
        metadata = producer.send(topic, value=value).get(timeout=60)
        acked.append((metadata.partition, metadata.offset, value))
    fault.join()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000)
    consumer.assign([KafkaTopicPartition(topic, p) for p in range(3)])
    consumer.seek_to_beginning()
    seen = {(m.partition, m.offset): m.value for m in consumer}
    consumer.close()
    for partition, offset, value in acked:
        assert seen.get((partition, offset)) == value


def test_a_group_is_coordinated_where_its_offsets_partition_leads(cluster_factory):
    cluster = cluster_factory(3, "offsets.topic.num.partitions=6", "group.initial.rebalance.delay.ms=0")
    topic = unique_topic("grouped")
    create(cluster, topic, 3)
    group = unique_topic("group")
    producer = Producer({"bootstrap.servers": cluster.bootstrap})
    for i in range(30):
        producer.produce(topic, value=b"%d" % i, partition=i % 3)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got = 0
    deadline = time.monotonic() + 60
    while got < 30 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            got += 1
    assert got == 30
    consumer.commit(asynchronous=False)
    consumer.close()

    expected = cluster.leaders("__consumer_offsets")[java_partition(group, 6)]
    for broker in cluster.brokers.values():
        from kafka import KafkaAdminClient

        client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            assert client._find_coordinator_ids([group])[group] == expected
        finally:
            client.close()
    committed = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group}).committed(
        [TopicPartition(topic, p) for p in range(3)], timeout=30
    )
    assert sum(tp.offset for tp in committed) == 30


def test_a_broker_waits_for_etcd_at_start(tmp_path):
    """etcd down at start: the broker says so and retries; it joins once etcd is up."""
    port = free_port()
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Broker(workdir, ["node.id=1", f"etcd.endpoints=http://127.0.0.1:{port}", f"etcd.prefix=/wait-{port}"])
    proc = subprocess.Popen(broker.command(), stdout=open(broker.log_path, "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "etcd is unreachable" not in broker.log_text():
            assert proc.poll() is None, broker.log_text()
            assert time.monotonic() < deadline, broker.log_text()
            time.sleep(0.1)
        time.sleep(1.0)
        assert proc.poll() is None, "it keeps trying instead of exiting"
        etcd_dir = tmp_path / "etcd"
        etcd_dir.mkdir()
        etcd = Etcd(etcd_dir)
        etcd.client_port = port
        etcd.start()
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=2)
                    if list(metadata.brokers) == [1]:
                        break
                except KafkaException:
                    pass
                assert time.monotonic() < deadline, broker.log_text()[-3000:]
        finally:
            proc.kill()
            proc.wait()
            etcd.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_without_etcd_brokers_stop_leading_and_resume_when_it_returns(cluster_factory, etcd):
    """etcd lost entirely: no broker can prove its session, so none accepts
    writes (retriable errors for the clients); once etcd is back, they lead
    again, and nothing acknowledged is lost."""
    cluster = cluster_factory(3)
    topic = unique_topic("no-etcd")
    create(cluster, topic, 3, replication_factor=3)
    cluster.wait_until("leaders", lambda: all(l > 0 for l in cluster.leaders(topic).values()))
    before, failed = produce_values(cluster, topic, 300, b"before")
    assert not failed and len(before) == 300

    etcd.stop()
    time.sleep(SESSION_TIMEOUT_S + 0.5)
    during, failed = produce_values(cluster, topic, 20, b"during", timeout_ms=3000)
    assert not during, "a broker without a provable session acknowledged a write"
    assert failed
    for broker in cluster.brokers.values():
        assert broker.is_running(), "brokers wait for etcd instead of exiting"

    etcd.start()
    after, failed = produce_values(cluster, topic, 300, b"after", timeout_ms=60000)
    assert not failed and len(after) == 300
    seen = consume_all(cluster.bootstrap, topic, 3, len(before) + len(after))
    for partition, offset, value in before + after:
        assert seen.get((partition, offset)) == value, f"acknowledged {value!r} lost"


def produce_values(cluster, topic: str, count: int, prefix: bytes, timeout_ms: int = 30000):
    acked, failed = [], []

    def report(err, msg):
        (failed if err else acked).append(err or (msg.partition(), msg.offset(), msg.value()))

    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5, "message.timeout.ms": timeout_ms}
    )
    for i in range(count):
        producer.produce(topic, value=prefix + b"%06d" % i, callback=report)
    producer.flush(timeout_ms / 1000 + 30)
    return acked, failed
