"""Topic administration beyond create/delete, with confluent-kafka's and
kafka-python's admin clients: CreatePartitions, DeleteRecords,
DescribeCluster, DescribeLogDirs; DescribeTopicPartitions (Java 4.x admin
clients) by hand-encoded requests."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from kafka import KafkaAdminClient
from kafka import TopicPartition as KpTopicPartition

from clients import Record, consume_partitions, create_topic, produce_all, producer
from conftest import unique_topic
from wire import (
    DESCRIBE_TOPIC_PARTITIONS,
    EMPTY_TAGS,
    Connection,
    compact_array,
    compact_string,
    int8,
    int32,
)

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 15


def admin(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def partition_count(broker, topic: str) -> int:
    return len(admin(broker).list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions)


def test_create_partitions_grows_a_topic(broker):
    topic = unique_topic("grow")
    create_topic(broker.bootstrap, topic, 2)
    client = admin(broker)

    client.create_partitions([NewPartitions(topic, 5)], validate_only=True)[topic].result(timeout=TIMEOUT_S)
    assert partition_count(broker, topic) == 2, "validate-only changes nothing"

    client.create_partitions([NewPartitions(topic, 5)])[topic].result(timeout=TIMEOUT_S)
    assert partition_count(broker, topic) == 5
    delivered = produce_all(producer(broker.bootstrap), topic, [Record(b"k", b"in-4", partition=4)])
    assert not delivered.failed and delivered.acked[0][:2] == (4, 0)

    for count, expected in ((3, KafkaError.INVALID_PARTITIONS), (5, KafkaError.INVALID_PARTITIONS)):
        with pytest.raises(KafkaException) as refused:
            client.create_partitions([NewPartitions(topic, count)])[topic].result(timeout=TIMEOUT_S)
        assert refused.value.args[0].code() == expected
    missing = unique_topic("nope")
    futures = client.create_partitions([NewPartitions(missing, 3)])
    with pytest.raises(KafkaException) as unknown:
        futures[missing].result(timeout=TIMEOUT_S)
    assert unknown.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    broker.restart()
    assert partition_count(broker, topic) == 5, "the new partitions survive a restart"
    assert [m.value() for m in consume_partitions(broker.bootstrap, topic, [4], 1)] == [b"in-4"]


def test_kafka_python_create_partitions(broker):
    from kafka.admin import NewPartitions as KpNewPartitions

    topic = unique_topic("kp-grow")
    create_topic(broker.bootstrap, topic, 1)
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    client.create_partitions({topic: KpNewPartitions(total_count=3)})
    client.close()
    assert partition_count(broker, topic) == 3


def test_delete_records_moves_the_log_start(broker):
    topic = unique_topic("delrec")
    create_topic(broker.bootstrap, topic, 2, {"segment.bytes": "2048"})
    records = [Record(f"{i}".encode(), b"v" * 100, partition=0) for i in range(100)]
    records += [Record(b"k", b"v", partition=1) for _ in range(10)]
    assert not produce_all(producer(broker.bootstrap, **{"linger.ms": 0}), topic, records).failed
    client = admin(broker)

    [result] = client.delete_records([TopicPartition(topic, 0, 60)], request_timeout=TIMEOUT_S).values()
    assert result.result(timeout=TIMEOUT_S).low_watermark == 60
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S) == (60, 100)
    messages = consume_partitions(broker.bootstrap, topic, [0], 40, **{"auto.offset.reset": "earliest"})
    assert [m.offset() for m in messages][:1] == [60] and len(messages) == 40

    # Past the high watermark: OFFSET_OUT_OF_RANGE, nothing changes.
    [result] = client.delete_records([TopicPartition(topic, 0, 101)], request_timeout=TIMEOUT_S).values()
    with pytest.raises(KafkaException) as refused:
        result.result(timeout=TIMEOUT_S)
    assert refused.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    # -1 means "up to the high watermark".
    [result] = client.delete_records([TopicPartition(topic, 1, -1)], request_timeout=TIMEOUT_S).values()
    assert result.result(timeout=TIMEOUT_S).low_watermark == 10
    assert consumer.get_watermark_offsets(TopicPartition(topic, 1), timeout=TIMEOUT_S) == (10, 10)

    broker.restart()
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S) == (60, 100)
    consumer.close()


def test_describe_cluster(broker):
    client = admin(broker)
    description = client.describe_cluster(include_authorized_operations=True).result(timeout=TIMEOUT_S)
    assert len(description.cluster_id) == 22
    assert description.controller.id == 1
    assert [(n.id, n.host, n.port) for n in description.nodes] == [(1, "127.0.0.1", broker.port)]
    assert description.authorized_operations, "no ACLs: every cluster operation is allowed"

    kp_client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    cluster = kp_client.describe_cluster()
    kp_client.close()
    assert cluster["cluster_id"] == description.cluster_id
    assert cluster["controller_id"] == 1


def test_describe_log_dirs(broker):
    topic = unique_topic("dirs")
    create_topic(broker.bootstrap, topic, 2)
    assert not produce_all(producer(broker.bootstrap), topic, [Record(None, b"x" * 1000, partition=1)] * 20).failed
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    response = client.describe_log_dirs()  # v0: kafka-python sends no other
    client.close()
    [(error_code, log_dir, topics)] = response.log_dirs
    assert error_code == 0 and log_dir.endswith("data")
    [partitions] = [partitions for name, partitions in topics if name == topic]
    sizes = {index: size for index, size, _lag, _future in partitions}
    assert sizes[0] == 0 and sizes[1] > 20 * 1000


def describe_topic_partitions(conn: Connection, topics: list[str], limit: int, cursor=None):
    body = compact_array([compact_string(t) + EMPTY_TAGS for t in topics]) + int32(limit)
    body += int8(-1) if cursor is None else int8(1) + compact_string(cursor[0]) + int32(cursor[1]) + EMPTY_TAGS
    body += EMPTY_TAGS
    r = conn.call(DESCRIBE_TOPIC_PARTITIONS, 0, body)
    r.int32()  # throttle

    def node():
        return r.int32()

    def partition():
        error, index, leader, epoch = r.int16(), r.int32(), r.int32(), r.int32()
        replicas, isr = r.compact_array(node), r.compact_array(node)
        r.compact_array(node), r.compact_array(node), r.compact_array(node)  # ELR, last known ELR, offline
        r.tags()
        return (error, index, leader, epoch, replicas, isr)

    def topic():
        error, name = r.int16(), r.compact_string()
        r.take(16)  # topic id
        internal = r.int8()
        partitions = r.compact_array(partition)
        r.int32()  # authorized operations
        r.tags()
        return (error, name, internal, partitions)

    described = r.compact_array(topic)
    next_cursor = None
    if r.int8() >= 0:
        next_cursor = (r.compact_string(), r.int32())
        r.tags()
    r.tags()
    r.assert_end()
    return described, next_cursor


def test_describe_topic_partitions_pages_with_a_cursor(broker):
    first, second = sorted([unique_topic("dtp-a"), unique_topic("dtp-b")])
    create_topic(broker.bootstrap, first, 3)
    create_topic(broker.bootstrap, second, 4)
    missing = "zz-" + unique_topic("missing")
    seen = []
    cursor = None
    pages = 0
    with Connection(broker) as conn:
        while True:
            topics, cursor = describe_topic_partitions(conn, [second, missing, first], 2, cursor)
            pages += 1
            for error, name, internal, partitions in topics:
                if name == missing:
                    assert error == 3 and not partitions
                    continue
                assert error == 0 and internal == 0
                seen += [(name, p[1]) for p in partitions]
                assert all(p[0] == 0 and p[2] == 1 and p[4] == [1] and p[5] == [1] for p in partitions)
            if cursor is None:
                break
            assert pages < 10
    assert seen == [(first, p) for p in range(3)] + [(second, p) for p in range(4)]
    assert pages == 4, "7 partitions at 2 per page"
