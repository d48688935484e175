"""Retention as clients see it: segments whose newest record is older than
retention.ms, and the oldest segments while the partition is larger than
retention.bytes, are deleted by the broker's retention check; the earliest
offset (ListOffsets, through librdkafka and kafka-python) moves and a consumer
from the beginning reads exactly what is left. Topic configs altered on a
running broker take effect without a restart."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from clients import Record, consume_partitions, create_topic, produce_all, producer
from conftest import unique_topic

pytestmark = pytest.mark.timeout(120)

CHECK_OFTEN = "log.retention.check.interval.ms=200"
HOUR_MS = 3_600_000


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()


def earliest_by_kafka_python(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = KpTopicPartition(topic, 0)
        return consumer.beginning_offsets([tp])[tp]
    finally:
        consumer.close()


def wait_for_log_start(bootstrap: str, topic: str, condition, what: str, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        low, _ = watermarks(bootstrap, topic)
        if condition(low):
            return low
        assert time.monotonic() < deadline, f"{what}: the log start stayed at {low}"
        time.sleep(0.2)


def records(count: int, timestamp_ms: int, tag: str) -> list[Record]:
    return [Record(f"{tag}-{i}".encode(), b"v" * 200, timestamp=timestamp_ms, partition=0) for i in range(count)]


def test_retention_ms_deletes_old_segments_once_set(broker_factory):
    broker = broker_factory(CHECK_OFTEN)
    topic = unique_topic("retention-ms")
    # Small segments (and batches: a batch never splits), Kafka's default retention (7 days).
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": "4096"})
    now_ms = int(time.time() * 1000)
    prod = producer(broker.bootstrap, **{"linger.ms": 0, "batch.size": 2000})
    old = records(200, now_ms - 2 * HOUR_MS, "old")
    assert not produce_all(prod, topic, old).failed
    fresh = records(50, now_ms, "fresh")
    assert not produce_all(prod, topic, fresh).failed

    # Two-hour-old records are well within 7 days: several checks keep them.
    time.sleep(1)
    assert watermarks(broker.bootstrap, topic) == (0, 250)

    # One hour: the segments holding only old records go, on a live broker.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", str(HOUR_MS), incremental_operation=AlterConfigOpType.SET)],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    low = wait_for_log_start(broker.bootstrap, topic, lambda low: low > 0, "retention.ms=1h")
    # Only whole segments go: the one where the fresh records start stays.
    assert 0 < low <= 200
    assert earliest_by_kafka_python(broker.bootstrap, topic) == low
    got = consume_partitions(broker.bootstrap, topic, [0], 250 - low)
    assert [m.offset() for m in got] == list(range(low, 250))
    assert [m.key() for m in got[-50:]] == [r.key for r in fresh], "every fresh record stays"

    # The log start survives a restart.
    broker.restart()
    assert watermarks(broker.bootstrap, topic) == (low, 250)


def test_retention_bytes_keeps_the_newest_segments(broker_factory):
    broker = broker_factory(CHECK_OFTEN)
    topic = unique_topic("retention-bytes")
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": "4096", "retention.bytes": "16384"})
    prod = producer(broker.bootstrap, **{"linger.ms": 0, "batch.size": 2000})
    produced = records(600, int(time.time() * 1000), "r")  # about 140 KB
    assert not produce_all(prod, topic, produced).failed

    # What is left is the tail: at least retention.bytes, and less than that
    # plus a segment plus the active segment. A record takes 200 to 320
    # bytes on disk here (a batch of a few, 200-byte values). The checks
    # that ran while the records arrived may have deleted only part of it.
    def small_enough(low):
        return (600 - low) * 200 <= 16384 + 2 * 4096

    low = wait_for_log_start(broker.bootstrap, topic, small_enough, "retention.bytes=16384")
    # The last check may have run before the last records arrived, and the
    # next one delete one more segment: wait until three checks in a row
    # leave the log start where it is.
    while True:
        time.sleep(0.6)
        again, _ = watermarks(broker.bootstrap, topic)
        if again == low:
            break
        low = again
    time.sleep(1)  # several more checks: they delete nothing more
    assert watermarks(broker.bootstrap, topic) == (low, 600)
    left = 600 - low
    assert left * 320 >= 16384, f"deleted too much: {left} records left"
    assert earliest_by_kafka_python(broker.bootstrap, topic) == low
    got = consume_partitions(broker.bootstrap, topic, [0], left)
    assert [m.key() for m in got] == [r.key for r in produced[low:]]
