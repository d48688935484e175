"""Idempotent producers: InitProducerId hands out ids unique across restarts
and brokers; a partition's leader answers a retried batch with the offsets
it got the first time, refuses sequence gaps and old epochs, and keeps that
state through kill -9 (rebuilt from its snapshot and the log) and through
a change of leader (followers build it from what they replicate). librdkafka
and kafka-python producers with idempotence on write every record exactly
once, in order, while the broker or the partition's leader is killed.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique_topic
from test_cluster import produce_while
from wire import (
    DESCRIBE_PRODUCERS,
    EMPTY_TAGS,
    INIT_PRODUCER_ID,
    Connection,
    compact_array,
    compact_string,
    int16,
    int32,
    int64,
    produce,
    record_batch,
)

pytestmark = pytest.mark.timeout(240)

NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
INVALID_RECORD = 87


def create_topic(bootstrap: str, topic: str, partitions: int, replication_factor: int = 1, config=None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
    admin.create_topics([new])[topic].result(timeout=30)


def init_producer_id(conn: Connection, transactional_id: str | None = None, timeout_ms: int = 60000):
    """InitProducerId v4: (error code, producer id, epoch)."""
    body = compact_string(transactional_id) + int32(timeout_ms) + int64(-1) + int16(-1) + EMPTY_TAGS
    reader = conn.call(INIT_PRODUCER_ID, 4, body)
    reader.int32()  # throttle time
    result = reader.int16(), reader.int64(), reader.int16()
    reader.tags()
    reader.assert_end()
    return result


def describe_producers(conn: Connection, topic: str, partition: int) -> tuple[int, list[tuple]]:
    """DescribeProducers v0: (error code, [(producer id, epoch, last sequence, txn start offset)])."""
    body = compact_array([compact_string(topic) + compact_array([int32(partition)]) + EMPTY_TAGS]) + EMPTY_TAGS
    reader = conn.call(DESCRIBE_PRODUCERS, 0, body)
    reader.int32()  # throttle time

    def producer():
        pid, epoch, last_sequence = reader.int64(), reader.int32(), reader.int32()
        reader.int64()  # last timestamp
        reader.int32()  # coordinator epoch
        txn_start = reader.int64()
        reader.tags()
        return pid, epoch, last_sequence, txn_start

    def partition_response():
        assert reader.int32() == partition
        error_code = reader.int16()
        reader.compact_string()  # error message
        producers = reader.compact_array(producer)
        reader.tags()
        return error_code, producers

    def topic_response():
        assert reader.compact_string() == topic
        (result,) = reader.compact_array(partition_response)
        reader.tags()
        return result

    (result,) = reader.compact_array(topic_response)
    reader.tags()
    reader.assert_end()
    return result


def test_producer_ids_are_unique_and_survive_a_restart(broker):
    seen = set()
    with Connection(broker) as conn:
        for _ in range(5):
            error_code, producer_id, epoch = init_producer_id(conn)
            assert error_code == NONE and epoch == 0 and producer_id >= 0
            seen.add(producer_id)
    assert len(seen) == 5
    broker.kill9()
    broker.start()
    with Connection(broker) as conn:
        error_code, producer_id, _ = init_producer_id(conn)
    assert error_code == NONE and producer_id not in seen and producer_id > max(seen)


def test_the_leader_checks_sequences_and_epochs(broker):
    topic = unique_topic("sequences")
    create_topic(broker.bootstrap, topic, 1)
    with Connection(broker) as conn:
        _, pid, epoch = init_producer_id(conn)

        def send(sequence: int, count: int = 1, producer_epoch: int = epoch) -> tuple[int, int]:
            batch = record_batch(b"k", b"v%d" % sequence, pid, producer_epoch, sequence, count=count)
            return produce(conn, topic, {0: batch})[0]

        assert send(0, 3) == (NONE, 0)
        assert send(3, 2) == (NONE, 3)
        assert send(0, 3) == (NONE, 0), "a retried batch gets its first offset"
        assert send(3, 2) == (NONE, 3)
        assert send(6)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER, "a gap"
        assert send(4)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER, "inside a batch that is not one of the last five"
        assert send(5) == (NONE, 5)
        # A new epoch starts again at 0 (librdkafka bumps its epoch itself);
        # the old epoch is fenced from then on.
        assert send(3, producer_epoch=epoch + 1)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
        assert send(0, producer_epoch=epoch + 1) == (NONE, 6)
        assert send(6)[0] == INVALID_PRODUCER_EPOCH
        # A producer id with a negative sequence is not a valid batch.
        bad = record_batch(b"k", b"v", pid, epoch + 1, -1)
        assert produce(conn, topic, {0: bad})[0][0] == INVALID_RECORD
        error_code, producers = describe_producers(conn, topic, 0)
    assert error_code == NONE
    assert producers == [(pid, epoch + 1, 0, -1)]
    # Nothing written twice: offsets 0..6 hold the batches sent once each.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g")})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []
    deadline = time.monotonic() + 30
    while len(values) < 7 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            values.append(message.value())
    consumer.close()
    assert values == [b"v0"] * 3 + [b"v3"] * 2 + [b"v5", b"v0"]


def test_a_retry_after_kill9_is_still_recognised(broker):
    topic = unique_topic("recovered")
    create_topic(broker.bootstrap, topic, 1)
    with Connection(broker) as conn:
        _, pid, epoch = init_producer_id(conn)
        for sequence in range(10):
            batch = record_batch(b"k", b"v%d" % sequence, pid, epoch, sequence)
            assert produce(conn, topic, {0: batch})[0] == (NONE, sequence)
    for restart in ("kill9", "clean"):
        if restart == "kill9":
            broker.kill9()
        else:
            broker.stop()
        broker.start()
        with Connection(broker) as conn:
            retry = record_batch(b"k", b"v9", pid, epoch, 9)
            assert produce(conn, topic, {0: retry})[0] == (NONE, 9), f"after {restart}"
            gap = record_batch(b"k", b"v11", pid, epoch, 11)
            assert produce(conn, topic, {0: gap})[0][0] == OUT_OF_ORDER_SEQUENCE_NUMBER


def produce_exactly_once(target, topic: str, count: int, fault, **extra) -> list:
    """librdkafka with enable.idempotence, 100 records then 20 ms, while
    `fault()` runs in another thread; returns the acknowledged (partition,
    offset, value), having checked that everything was acknowledged."""
    acked, failed = produce_while(
        target, topic, count, fault, every=100, pause=0.02,
        **{"enable.idempotence": True, "message.timeout.ms": 120000, **extra},
    )
    assert not failed, failed[:5]
    assert len(acked) == count
    return acked


def read_everything(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple[int, bytes]]]:
    """Each partition's (offset, value) from its start to its high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("reader")})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    records: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    done = lambda: all(not ends[p] or (records[p] and records[p][-1][0] >= ends[p] - 1) for p in ends)
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, f"did not reach the high watermarks {ends}"
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            records[message.partition()].append((message.offset(), message.value()))
    consumer.close()
    return records


def assert_exactly_once_in_order(records: dict[int, list[tuple[int, bytes]]], acked: list, count: int) -> None:
    values = [value for partition in records.values() for _, value in partition]
    duplicates = len(values) - len(set(values))
    assert duplicates == 0, f"{duplicates} records written twice"
    assert sorted(values) == [b"v%08d" % i for i in range(count)], "every record exactly once"
    for partition, entries in records.items():
        sent = [value for _, value in entries]
        assert sent == sorted(sent), f"partition {partition} holds its records out of order"
    where = {(p, o): v for p, entries in records.items() for o, v in entries}
    assert all(where.get((p, o)) == v for p, o, v in acked), "every acknowledgement names the record's offset"


def test_librdkafka_writes_exactly_once_through_pauses_and_kill9(broker):
    """A paused broker (SIGSTOP past librdkafka's request timeout) appends
    the requests waiting in its socket once resumed, while librdkafka sends
    them again on a new connection: each is written once. Then kill -9 with
    requests in flight, twice."""
    topic = unique_topic("exactly-once")
    create_topic(broker.bootstrap, topic, 3)

    def faults():
        for _ in range(2):
            time.sleep(0.7)
            broker.pause()
            time.sleep(1.5)
            broker.resume()
        for _ in range(2):
            time.sleep(0.7)
            broker.kill9()
            time.sleep(0.3)
            broker.start()

    acked = produce_exactly_once(broker, topic, 30000, faults, **{"socket.timeout.ms": 300})
    assert_exactly_once_in_order(read_everything(broker.bootstrap, topic, 3), acked, 30000)


def test_kafka_python_writes_exactly_once_through_broker_kill9(broker):
    from kafka import KafkaProducer

    topic = unique_topic("exactly-once-kp")
    create_topic(broker.bootstrap, topic, 2)
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all", linger_ms=5,
        retries=1000, request_timeout_ms=5000, delivery_timeout_ms=120000,
    )
    futures = []
    for i in range(6000):
        futures.append(producer.send(topic, value=b"v%08d" % i))
        if i == 3000:
            producer.flush(30)
            broker.kill9()
            broker.start()
    producer.flush(120)
    acked = []
    for future in futures:
        metadata = future.get(timeout=60)
        acked.append((metadata.partition, metadata.offset, b"v%08d" % len(acked)))
    producer.close(10)
    assert_exactly_once_in_order(read_everything(broker.bootstrap, topic, 2), acked, 6000)


def test_librdkafka_writes_exactly_once_through_leader_failover(cluster_factory):
    from test_replication import start, wait_full_isr, states

    cluster = start(cluster_factory)
    topic = unique_topic("exactly-once-rf3")
    create_topic(cluster.bootstrap, topic, 3, replication_factor=3, config={"min.insync.replicas": "2"})
    wait_full_isr(cluster, topic)
    victim, replicas, _ = states(cluster, topic)[0]
    stalled = next(r for r in replicas if r != victim)

    def kill_leader():
        # One follower stalls, so that the leader holds batches it has
        # appended (and the other follower has) but not acknowledged: the
        # producer sends them again to the new leader.
        time.sleep(1.0)
        cluster.brokers[stalled].pause()
        time.sleep(0.5)
        cluster.brokers[victim].kill9()
        time.sleep(0.5)
        cluster.brokers[stalled].resume()

    acked = produce_exactly_once(cluster, topic, 20000, kill_leader)
    assert_exactly_once_in_order(read_everything(cluster.bootstrap, topic, 3), acked, 20000)
    # The new leader of partition 0 knows the producer (it was a follower).
    leader = states(cluster, topic)[0][0]
    with Connection(cluster.brokers[leader]) as conn:
        error_code, producers = describe_producers(conn, topic, 0)
    assert error_code == NONE and len(producers) >= 1
