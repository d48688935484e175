"""End-to-end tests with kafka-python, the pure-Python client (no flexible
versions: it exercises the non-flexible encodings of every API it uses)."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    InvalidTopicError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from conftest import unique_topic

pytestmark = pytest.mark.timeout(180)


def admin(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)


def read_all(broker, topic: str, partitions: list[int], expected: int, timeout_s: float = 30.0):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    for p in partitions:
        consumer.seek(TopicPartition(topic, p), 0)
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_produce_and_consume_with_codec(broker, codec):
    topic = unique_topic(f"kp-{codec or 'none'}")
    admin(broker).create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec, acks="all", linger_ms=10)
    base_ts = int(time.time() * 1000) - 10_000
    sent, futures = [], []
    for i in range(2000):
        key = f"key-{i % 50}".encode()
        value = (f"value-{i}-" * 20).encode()
        headers = [("i", str(i).encode())]
        futures.append(producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=base_ts + i))
        sent.append((key, value, headers, base_ts + i))
    producer.flush(30)
    for future in futures:
        future.get(timeout=30)
    producer.close()

    records = read_all(broker, topic, [0, 1], len(sent))
    assert len(records) == len(sent)
    got = {r.headers[0][1]: (r.key, r.value, r.headers, r.timestamp) for r in records}
    assert got == {str(i).encode(): (k, v, h, ts) for i, (k, v, h, ts) in enumerate(sent)}
    for partition in (0, 1):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))
        order = [int(r.headers[0][1]) for r in records if r.partition == partition]
        assert order == sorted(order)
    if codec is not None:
        raw = sum(len(v) for _, v, _, _ in sent)
        assert broker.segment_bytes(topic) < raw // 3, "batches are stored compressed, as sent"


def test_null_and_empty_keys_and_values(broker):
    topic = unique_topic("kp-nulls")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1)
    pairs = [(None, b"v"), (b"", b""), (b"k", None), (None, b""), (b"", None)]
    for key, value in pairs:
        producer.send(topic, key=key, value=value, partition=0).get(timeout=30)
    producer.close()
    records = read_all(broker, topic, [0], len(pairs))
    assert [(r.key, r.value) for r in records] == pairs


def test_admin_create_list_delete_topics(broker):
    client = admin(broker)
    topic = unique_topic("kp-admin")
    client.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1, topic_configs={"retention.ms": "3600000"})])
    assert topic in client.list_topics()
    [described] = client.describe_topics([topic])
    assert described["error_code"] == 0
    assert len(described["partitions"]) == 4

    with pytest.raises(TopicAlreadyExistsError):
        client.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    with pytest.raises(InvalidTopicError):
        client.create_topics([NewTopic("bad/name", num_partitions=1, replication_factor=1)])

    client.delete_topics([topic])
    deadline = time.monotonic() + 10
    while topic in client.list_topics() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert topic not in client.list_topics()
    with pytest.raises(UnknownTopicOrPartitionError):
        client.delete_topics([topic])
    client.close()


def test_validate_only_creates_nothing(broker):
    client = admin(broker)
    topic = unique_topic("kp-validate")
    client.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)], validate_only=True)
    assert topic not in client.list_topics()
    client.close()


def test_offsets_by_time_and_end_offsets(broker):
    topic = unique_topic("kp-times")
    admin(broker).create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, max_in_flight_requests_per_connection=1)
    base_ts = int(time.time() * 1000) - 600_000
    for i in range(100):
        producer.send(topic, value=b"x", partition=0, timestamp_ms=base_ts + 10 * i).get(timeout=30)
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    tp = TopicPartition(topic, 0)
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    assert consumer.end_offsets([tp]) == {tp: 100}
    found = consumer.offsets_for_times({tp: base_ts + 255})
    assert found[tp].offset == 26 and found[tp].timestamp == base_ts + 260
    assert consumer.offsets_for_times({tp: base_ts + 10_000}) == {tp: None}
    consumer.close()


def test_record_over_max_message_bytes_is_refused(broker_factory):
    broker = broker_factory("message.max.bytes=100000")
    topic = unique_topic("kp-big")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=1_000_000, retries=0)
    producer.send(topic, value=b"a" * 90_000, partition=0).get(timeout=30)
    with pytest.raises(MessageSizeTooLargeError):
        producer.send(topic, value=b"b" * 150_000, partition=0).get(timeout=30)
    producer.close()
    assert [len(r.value) for r in read_all(broker, topic, [0], 1)] == [90_000]


def test_unknown_topic_without_auto_creation(broker_factory):
    broker = broker_factory("auto.create.topics.enable=false")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=2000)
    with pytest.raises(KafkaTimeoutError):
        producer.send(unique_topic("kp-missing"), value=b"v").get(timeout=10)
    producer.close()
