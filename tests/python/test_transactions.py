"""Transactional producers: commit and abort markers, read_committed
consumers stopping at the last stable offset and skipping aborted
transactions, transactional offset commits (consume-transform-produce),
zombie fencing by a second producer with the same transactional.id, the
coordinator aborting a transaction past its timeout, empty transactions,
and Kafka's errors for misuse. librdkafka (confluent-kafka) and
kafka-python, on one broker and on a three-broker cluster with restarts.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import wire
from conftest import unique_topic

pytestmark = pytest.mark.timeout(300)


def create_topic(bootstrap: str, topic: str, partitions: int, replication_factor: int = 1, config=None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
    admin.create_topics([new])[topic].result(timeout=30)


def transactional(bootstrap: str, transactional_id: str, **extra) -> Producer:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 5, **extra}
    )
    producer.init_transactions(60)
    return producer


def read_all(bootstrap: str, topic: str, partitions: int, isolation: str, settle: float = 1.5) -> list[bytes]:
    """Every value a consumer with `isolation` reads from the start, until
    nothing new arrives for `settle` seconds after reaching the end offsets
    it is told (the last stable offset for read_committed)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique_topic("reader"), "isolation.level": isolation,
         "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values = []
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() - quiet_since < settle:
        assert time.monotonic() < deadline, "the consumer kept receiving for 60 s"
        message = consumer.poll(0.2)
        if message is not None and not message.error():
            values.append(message.value())
            quiet_since = time.monotonic()
    consumer.close()
    return values


def end_offsets(bootstrap: str, topic: str, partition: int, isolation: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("w"), "isolation.level": isolation})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        consumer.close()


def test_read_committed_sees_committed_transactions_only(broker):
    topic = unique_topic("txn")
    create_topic(broker.bootstrap, topic, 1)
    producer = transactional(broker.bootstrap, unique_topic("tx"))
    producer.begin_transaction()
    for i in range(100):
        producer.produce(topic, value=b"committed-%d" % i)
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(50):
        producer.produce(topic, value=b"aborted-%d" % i)
    producer.flush(30)  # written to the log before the abort
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, value=b"open-%d" % i)
    producer.flush(30)

    committed = read_all(broker.bootstrap, topic, 1, "read_committed")
    assert committed == [b"committed-%d" % i for i in range(100)]
    uncommitted = read_all(broker.bootstrap, topic, 1, "read_uncommitted")
    assert len(uncommitted) == 160, "read_uncommitted sees aborted and open records too"
    # 100 records, a commit marker, 50 records, an abort marker: the open
    # transaction starts at 152, where the last stable offset stays.
    assert end_offsets(broker.bootstrap, topic, 0, "read_committed")[1] == 152
    assert end_offsets(broker.bootstrap, topic, 0, "read_uncommitted")[1] == 162

    producer.commit_transaction(30)
    committed = read_all(broker.bootstrap, topic, 1, "read_committed")
    assert committed == [b"committed-%d" % i for i in range(100)] + [b"open-%d" % i for i in range(10)]
    assert end_offsets(broker.bootstrap, topic, 0, "read_committed")[1] == 163


def test_a_second_producer_fences_the_first(broker):
    topic = unique_topic("fence")
    create_topic(broker.bootstrap, topic, 2)
    transactional_id = unique_topic("zombie")
    first = transactional(broker.bootstrap, transactional_id)
    first.begin_transaction()
    for i in range(20):
        first.produce(topic, value=b"zombie-%d" % i)
    first.flush(30)
    second = transactional(broker.bootstrap, transactional_id)
    # The first producer's open transaction was aborted; it is fenced.
    with pytest.raises(KafkaException) as fenced:
        first.produce(topic, value=b"late")
        first.commit_transaction(30)
    error = fenced.value.args[0]
    assert error.fatal() or error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                              KafkaError.INVALID_PRODUCER_EPOCH), error
    second.begin_transaction()
    for i in range(20):
        second.produce(topic, value=b"second-%d" % i)
    second.commit_transaction(30)
    values = read_all(broker.bootstrap, topic, 2, "read_committed")
    assert sorted(values) == sorted(b"second-%d" % i for i in range(20))


def test_empty_transactions_commit_and_abort(broker):
    producer = transactional(broker.bootstrap, unique_topic("empty"))
    for _ in range(3):
        producer.begin_transaction()
        producer.commit_transaction(30)
        producer.begin_transaction()
        producer.abort_transaction(30)


def test_the_coordinator_aborts_a_transaction_past_its_timeout(broker_factory):
    broker = broker_factory("transaction.abort.timed.out.transaction.cleanup.interval.ms=200")
    topic = unique_topic("timeout")
    create_topic(broker.bootstrap, topic, 1)
    producer = transactional(broker.bootstrap, unique_topic("slow"), **{"transaction.timeout.ms": 1500})
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, value=b"late-%d" % i)
    producer.flush(30)
    assert end_offsets(broker.bootstrap, topic, 0, "read_committed")[1] == 0
    time.sleep(3)
    # Aborted by the coordinator: the last stable offset passed it.
    assert end_offsets(broker.bootstrap, topic, 0, "read_committed")[1] == 11
    with pytest.raises(KafkaException):
        producer.commit_transaction(30)
    assert read_all(broker.bootstrap, topic, 1, "read_committed") == []
    # Another producer goes on.
    again = transactional(broker.bootstrap, unique_topic("next"))
    again.begin_transaction()
    again.produce(topic, value=b"after")
    again.commit_transaction(30)
    assert read_all(broker.bootstrap, topic, 1, "read_committed") == [b"after"]


def fill(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=b"%d" % i, value=b"in-%08d" % i)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


#: librdkafka 2.x re-bootstraps when every broker it knows is down (one
#: broker killed): the group coordinator it had cached is decommissioned and
#: send_offsets_to_transaction() then waits forever (confluentinc/librdkafka
#: #5511, open). Tests that kill the only broker turn re-bootstrapping off.
NO_REBOOTSTRAP = {"metadata.recovery.strategy": "none"}


def transform(bootstrap: str, source: str, sink: str, group: str, count: int, faults=None, **extra) -> dict:
    """Consume-transform-produce with librdkafka: each batch read from
    `source` (read_committed) is written to `sink` in one transaction
    together with the consumer's offsets. On an abortable error the
    transaction is aborted and the consumer rewound to the committed
    offsets; a fatal error (fenced) starts a new producer. `faults(n)` runs
    after the n-th commit. Returns counters."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed",
         "enable.auto.commit": False, "auto.offset.reset": "earliest", **extra}
    )
    consumer.subscribe([source])
    transactional_id = unique_topic("ctp")
    producer = transactional(bootstrap, transactional_id, **{"transaction.timeout.ms": 30000, **extra})
    stats = {"commits": 0, "aborts": 0, "new_producers": 0}
    done = 0
    deadline = time.monotonic() + 240
    idle = 0
    while True:
        assert time.monotonic() < deadline, f"transformed {done} of {count} in time"
        messages = [m for m in consumer.consume(1000, 0.5) if not m.error()]
        if not messages:
            idle += 1
            if done >= count and idle > 4:
                break
            continue
        idle = 0
        try:
            producer.begin_transaction()
            for message in messages:
                producer.produce(sink, key=message.key(), value=message.value().replace(b"in-", b"out-"))
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(60)
            stats["commits"] += 1
            done += len(messages)
            if faults is not None:
                faults(stats["commits"])
        except KafkaException as exception:
            error = exception.args[0]
            if error.txn_requires_abort():
                stats["aborts"] += 1
                producer.abort_transaction(60)
            elif error.fatal():
                stats["new_producers"] += 1
                producer = transactional(bootstrap, transactional_id, **extra)
            elif not error.retriable():
                raise
            # Read again from what the group committed.
            committed = consumer.committed(consumer.assignment(), 30)
            for partition in committed:
                consumer.seek(TopicPartition(source, partition.partition, max(partition.offset, 0)))
    consumer.close()
    return stats


def test_consume_transform_produce_is_exactly_once(broker):
    source, sink = unique_topic("source"), unique_topic("sink")
    create_topic(broker.bootstrap, source, 3)
    create_topic(broker.bootstrap, sink, 3)
    fill(broker.bootstrap, source, 20000)
    stats = transform(broker.bootstrap, source, sink, unique_topic("group"), 20000)
    out = read_all(broker.bootstrap, sink, 3, "read_committed")
    assert len(out) == len(set(out)) == 20000, stats
    assert sorted(out) == [b"out-%08d" % i for i in range(20000)]


def test_consume_transform_produce_through_broker_kill9(broker):
    source, sink = unique_topic("source"), unique_topic("sink")
    create_topic(broker.bootstrap, source, 3)
    create_topic(broker.bootstrap, sink, 3)
    fill(broker.bootstrap, source, 30000)

    def restarts() -> None:
        # At whatever point the transform is: inside a transaction, during
        # its commit, or between two.
        for pause in (1.0, 1.3, 1.7):
            time.sleep(pause)
            broker.kill9()
            broker.start()

    faults = threading.Thread(target=restarts)
    faults.start()
    try:
        stats = transform(broker.bootstrap, source, sink, unique_topic("group"), 30000, **NO_REBOOTSTRAP)
    finally:
        faults.join()
    out = read_all(broker.bootstrap, sink, 3, "read_committed")
    duplicates = len(out) - len(set(out))
    assert duplicates == 0, f"{duplicates} records written twice ({stats})"
    assert sorted(out) == [b"out-%08d" % i for i in range(30000)], stats
    print(stats)


def test_kafka_python_transactions(broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KafkaTopicPartition

    topic = unique_topic("kp-txn")
    create_topic(broker.bootstrap, topic, 2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=unique_topic("kp"))
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(30):
        producer.send(topic, value=b"kept-%d" % i)
    producer.commit_transaction()
    producer.begin_transaction()
    for i in range(30):
        producer.send(topic, value=b"dropped-%d" % i)
    producer.flush()
    producer.abort_transaction()
    producer.close()

    def read(isolation_level: str) -> list[bytes]:
        consumer = KafkaConsumer(
            bootstrap_servers=broker.bootstrap, isolation_level=isolation_level, enable_auto_commit=False,
            consumer_timeout_ms=3000,
        )
        consumer.assign([KafkaTopicPartition(topic, p) for p in range(2)])
        consumer.seek_to_beginning()
        values = [record.value for record in consumer]
        consumer.close()
        return values

    assert sorted(read("read_committed")) == sorted(b"kept-%d" % i for i in range(30))
    assert len(read("read_uncommitted")) == 60
    # And librdkafka agrees with kafka-python.
    assert sorted(read_all(broker.bootstrap, topic, 2, "read_committed")) == sorted(
        b"kept-%d" % i for i in range(30)
    )


# ---------------------------------------------------------------------------
# Misuse, on the wire: Kafka's error codes.

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REQUEST = 42
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
CONCURRENT_TRANSACTIONS = 51
OPERATION_NOT_ATTEMPTED = 55
PRODUCER_FENCED = 90


def add_partitions(conn, transactional_id, producer_id, epoch, topics: dict[str, list[int]], version=0):
    """AddPartitionsToTxn v0 (or v3, flexible): {(topic, partition): error}."""
    if version >= 3:
        body = (
            wire.compact_string(transactional_id) + wire.int64(producer_id) + wire.int16(epoch)
            + wire.compact_array([wire.compact_string(t) + wire.compact_array([wire.int32(p) for p in ps]) + wire.EMPTY_TAGS
                                  for t, ps in topics.items()]) + wire.EMPTY_TAGS
        )
    else:
        body = (
            wire.string(transactional_id) + wire.int64(producer_id) + wire.int16(epoch)
            + wire.array([wire.string(t) + wire.array([wire.int32(p) for p in ps]) for t, ps in topics.items()])
        )
    reader = conn.call(wire.ADD_PARTITIONS_TO_TXN, version, body)
    reader.int32()  # throttle time
    flexible = version >= 3
    results = {}

    def partition(topic):
        index, error = reader.int32(), reader.int16()
        if flexible:
            reader.tags()
        results[(topic, index)] = error

    def topic_result():
        name = reader.compact_string() if flexible else reader.string()
        (reader.compact_array if flexible else reader.array)(lambda: partition(name))
        if flexible:
            reader.tags()

    (reader.compact_array if flexible else reader.array)(topic_result)
    if flexible:
        reader.tags()
    reader.assert_end()
    return results


def end_txn(conn, transactional_id, producer_id, epoch, commit, version=0) -> int:
    """EndTxn v0 (or v3, flexible): the error code."""
    if version >= 3:
        body = wire.compact_string(transactional_id) + wire.int64(producer_id) + wire.int16(epoch) + wire.int8(commit) + wire.EMPTY_TAGS
    else:
        body = wire.string(transactional_id) + wire.int64(producer_id) + wire.int16(epoch) + wire.int8(commit)
    reader = conn.call(wire.END_TXN, version, body)
    reader.int32()  # throttle time
    error = reader.int16()
    if version >= 3:
        reader.tags()
    reader.assert_end()
    return error


def test_misuse_gets_kafkas_errors(broker):
    from test_groups_admin import find_coordinator
    from test_idempotence import init_producer_id

    topic = unique_topic("misuse")
    create_topic(broker.bootstrap, topic, 1)
    tx = unique_topic("wire-tx")
    with wire.Connection(broker) as conn:
        assert find_coordinator(conn, tx, key_type=1)["error"] == NONE
        assert init_producer_id(conn, "")[0] == INVALID_REQUEST
        assert init_producer_id(conn, tx, timeout_ms=900_001)[0] == INVALID_TRANSACTION_TIMEOUT
        error, pid, epoch = init_producer_id(conn, tx)
        assert error == NONE and epoch == 0

        assert end_txn(conn, tx, pid, epoch, True) == INVALID_TXN_STATE, "nothing to commit"
        assert end_txn(conn, unique_topic("unknown"), pid, epoch, True) == INVALID_PRODUCER_ID_MAPPING
        assert end_txn(conn, tx, pid + 1, epoch, True) == INVALID_PRODUCER_ID_MAPPING
        assert add_partitions(conn, tx, pid, epoch + 1, {topic: [0]}) == {(topic, 0): INVALID_PRODUCER_EPOCH}
        assert add_partitions(conn, tx, pid, epoch + 1, {topic: [0]}, version=3) == {(topic, 0): PRODUCER_FENCED}
        assert add_partitions(conn, tx, pid, epoch, {topic: [0, 7], "no-such-topic": [0]}) == {
            (topic, 0): OPERATION_NOT_ATTEMPTED,
            (topic, 7): UNKNOWN_TOPIC_OR_PARTITION,
            ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION,
        }
        # A transactional batch for a partition not added to the
        # transaction is refused (KIP-890: the leader asks the coordinator).
        early = wire.record_batch(b"k", b"early", pid, epoch, 0, transactional=True)
        assert wire.produce(conn, topic, {0: early}, transactional_id=tx)[0][0] == INVALID_TXN_STATE
        assert add_partitions(conn, tx, pid, epoch, {topic: [0]}) == {(topic, 0): NONE}

        # In the transaction: transactional batches go in, a plain batch
        # of the same producer does not.
        batch = wire.record_batch(b"k", b"in-txn", pid, epoch, 0, transactional=True)
        assert wire.produce(conn, topic, {0: batch}, transactional_id=tx)[0] == (NONE, 0)
        plain = wire.record_batch(b"k", b"plain", pid, epoch, 1)
        assert wire.produce(conn, topic, {0: plain})[0][0] == INVALID_TXN_STATE

        assert end_txn(conn, tx, pid, epoch + 1, True, version=3) == PRODUCER_FENCED
        assert end_txn(conn, tx, pid, epoch, True) == NONE
        # Retried: done, or still being done.
        deadline = time.monotonic() + 10
        while (error := end_txn(conn, tx, pid, epoch, True)) == CONCURRENT_TRANSACTIONS:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert error == NONE
        assert end_txn(conn, tx, pid, epoch, False) == INVALID_TXN_STATE, "abort after commit"
        # A batch that arrives after its transaction ended opens nothing.
        late = wire.record_batch(b"k", b"late", pid, epoch, 1, transactional=True)
        assert wire.produce(conn, topic, {0: late}, transactional_id=tx)[0][0] == INVALID_TXN_STATE
        assert end_offsets(broker.bootstrap, topic, 0, "read_committed")[1] == 2, "the LSO passed the marker"

        # A new instance bumps the epoch; the old one is fenced.
        error, pid2, epoch2 = init_producer_id(conn, tx)
        assert (error, pid2, epoch2) == (NONE, pid, epoch + 1)
        assert add_partitions(conn, tx, pid, epoch, {topic: [0]}) == {(topic, 0): INVALID_PRODUCER_EPOCH}
    assert read_all(broker.bootstrap, topic, 1, "read_committed") == [b"in-txn"]


def test_consume_transform_produce_in_a_cluster_through_rolling_kill9(cluster_factory):
    """100,000 records through consume-transform-produce on three brokers
    (RF=3, min.insync.replicas=2, __transaction_state and
    __consumer_offsets replicated the same), each broker killed with
    SIGKILL and restarted in turn: the coordinators, the group and the
    partitions' leaders move, and the output is the input exactly once."""
    from test_replication import start, wait_full_isr

    cluster = start(cluster_factory, "min.insync.replicas=2")
    source, sink = unique_topic("source"), unique_topic("sink")
    create_topic(cluster.bootstrap, source, 3, replication_factor=3)
    create_topic(cluster.bootstrap, sink, 3, replication_factor=3)
    wait_full_isr(cluster, source)
    wait_full_isr(cluster, sink)
    count = 100_000
    started = time.monotonic()
    fill(cluster.bootstrap, source, count)
    filled = time.monotonic()

    def rolling() -> None:
        for victim in (1, 2, 3):
            time.sleep(2.5)
            cluster.brokers[victim].kill9()
            time.sleep(0.5)
            cluster.brokers[victim].start()

    faults = threading.Thread(target=rolling)
    faults.start()
    try:
        stats = transform(cluster.bootstrap, source, sink, unique_topic("group"), count)
    finally:
        faults.join()
    transformed = time.monotonic()
    out = read_all(cluster.bootstrap, sink, 3, "read_committed", settle=3)
    duplicates = len(out) - len(set(out))
    print(stats, f"fill {filled - started:.1f} s, transform {transformed - filled:.1f} s, read {time.monotonic() - transformed:.1f} s")
    assert duplicates == 0, f"{duplicates} records written twice ({stats})"
    assert sorted(out) == [b"out-%08d" % i for i in range(count)], stats


def test_the_admin_tool_shows_transactions_and_producers(broker):
    from test_admin_tool import admin_json

    topic = unique_topic("observed")
    create_topic(broker.bootstrap, topic, 2)
    transactional_id = unique_topic("watched")
    producer = transactional(broker.bootstrap, transactional_id)
    producer.begin_transaction()
    producer.produce(topic, value=b"x", partition=1)
    producer.flush(30)

    listed, _ = admin_json(broker, "transactions", "list")
    (mine,) = [t for t in listed if t["transactional_id"] == transactional_id]
    assert mine["state"] == "Ongoing"
    (described,), _ = admin_json(broker, "transactions", "describe", transactional_id)
    assert described["state"] == "Ongoing" and described["partitions"] == [f"{topic}-1"]
    assert described["producer_id"] == mine["producer_id"] and described["producer_epoch"] == 0
    producers, _ = admin_json(broker, "producers", "describe", topic)
    assert [(p["partition"], p["producer_id"], p["current_txn_start_offset"]) for p in producers] == [
        (1, mine["producer_id"], 0)
    ]

    producer.commit_transaction(30)
    deadline = time.monotonic() + 10
    while (state := admin_json(broker, "transactions", "describe", transactional_id)[0][0]["state"]) != "CompleteCommit":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    producers, _ = admin_json(broker, "producers", "describe", topic, "--partition", "1")
    assert producers[0]["current_txn_start_offset"] == -1
