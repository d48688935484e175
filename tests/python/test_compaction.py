"""Log compaction (cleanup.policy=compact) as consumers see it: after the
cleaner has run, a compacted topic holds the latest record of every key,
tombstones go after delete.retention.ms, and keyless records are refused."""

from __future__ import annotations

import os
import random
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from clients import Record, create_topic, produce_all, producer
from conftest import unique_topic

pytestmark = pytest.mark.timeout(180)

CLEANER = "log.cleaner.backoff.ms=200"
# Small segments so that most of the data is outside the active segment,
# which the cleaner never touches, and a ratio that lets every pass run.
COMPACTED = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}


def keyed_history(seed: int, count: int, keys: int) -> list[Record]:
    """Updates of `keys` keys, about one in ten a tombstone."""
    rng = random.Random(seed)
    history = []
    for i in range(count):
        key = f"key-{rng.randrange(keys)}".encode()
        value = None if rng.random() < 0.1 else f"value-{i}".encode()
        history.append(Record(key, value, partition=0))
    return history


def fillers(tag: str, count: int) -> list[Record]:
    """Records with keys of their own: they push the history out of the active segment."""
    return [Record(f"filler-{tag}-{i}".encode(), os.urandom(100), partition=0) for i in range(count)]


def latest(records: list[Record]) -> dict[bytes, bytes | None]:
    model = {}
    for record in records:
        model[record.key] = record.value
    return model


def read_log(broker, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every record of partition 0, from the log start to the high watermark."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        log = []
        deadline = time.monotonic() + 30
        while (not log or log[-1][0] < high - 1) and high > 0:
            assert time.monotonic() < deadline, "could not read up to the high watermark"
            for m in consumer.consume(num_messages=10000, timeout=0.2):
                assert m.error() is None, m.error()
                log.append((m.offset(), m.key(), m.value()))
        return log
    finally:
        consumer.close()


def wait_for_log(broker, topic: str, condition, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while True:
        log = read_log(broker, topic)
        if condition(log):
            return log
        assert time.monotonic() < deadline, f"the cleaner never produced the expected log ({len(log)} records)"
        time.sleep(0.3)


def test_compacted_topic_keeps_the_latest_record_of_every_key(broker_factory):
    broker = broker_factory(CLEANER)
    topic = unique_topic("compact")
    create_topic(broker.bootstrap, topic, 1, COMPACTED)
    history = keyed_history(seed=1, count=3000, keys=100)
    prod = producer(broker.bootstrap, **{"linger.ms": 5, "compression.type": "lz4", "batch.size": 2000})
    assert not produce_all(prod, topic, history).failed
    assert not produce_all(prod, topic, fillers("a", 100)).failed
    model = latest(history)

    def compacted(log):
        history_keys = [key for _, key, _ in log if key.startswith(b"key-")]
        return len(history_keys) == len(model)

    log = wait_for_log(broker, topic, compacted)
    offsets = [offset for offset, _, _ in log]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert offsets[-1] == len(history) + 100 - 1, "the last offset is unchanged"
    got = {key: value for _, key, value in log if key.startswith(b"key-")}
    assert got == model, "each key's latest value, tombstones included (not yet expired)"

    broker.restart()
    assert read_log(broker, topic) == log, "compaction is durable"


def test_a_consumer_inside_a_wholly_superseded_head_goes_on_after_cleaning(broker_factory):
    """The cleaner drops every record of the log's first segments: a group
    consumer whose committed offset lies there goes on from the next record
    kept, as in Kafka (the log start does not move), instead of being told
    OFFSET_OUT_OF_RANGE and reset to the log end (librdkafka's default)."""
    broker = broker_factory(CLEANER)
    topic = unique_topic("compact-head")
    create_topic(broker.bootstrap, topic, 1, COMPACTED)
    prod = producer(broker.bootstrap, **{"linger.ms": 5, "batch.size": 2000})
    head = [Record(b"key-%02d" % k, b"head" * 25, partition=0) for k in range(20)]
    assert not produce_all(prod, topic, head).failed
    group = unique_topic("head-group")
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 6)])
    [message] = consumer.consume(num_messages=1, timeout=10)
    assert message.error() is None and message.offset() == 6
    consumer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    consumer.close()
    # Every key again, several times over, then fillers: the head's segments
    # hold nothing but superseded records.
    rounds = [Record(b"key-%02d" % k, b"round-%d" % r, partition=0) for r in range(5) for k in range(20)]
    assert not produce_all(prod, topic, rounds).failed
    assert not produce_all(prod, topic, fillers("head", 60)).failed
    model = latest(rounds)

    def compacted(log):
        return len([key for _, key, _ in log if key.startswith(b"key-")]) == len(model)

    log = wait_for_log(broker, topic, compacted)
    assert min(offset for offset, key, _ in log if key.startswith(b"key-")) >= len(head), "the head is gone"
    watcher = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("w")})
    assert watcher.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0] == 0, "the log start stays"
    watcher.close()
    resumed = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        resumed.subscribe([topic])
        got = {}
        deadline = time.monotonic() + 30
        while len(got) < len(model) and time.monotonic() < deadline:
            for m in resumed.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, m.error()
                if m.key().startswith(b"key-"):
                    got[m.key()] = m.value()
        assert got == model, f"after cleaning, the group read {len(got)} of {len(model)} keys' latest values"
    finally:
        resumed.close()


def test_tombstones_go_after_delete_retention(broker_factory):
    broker = broker_factory(CLEANER)
    topic = unique_topic("tombstones")
    create_topic(broker.bootstrap, topic, 1, {**COMPACTED, "delete.retention.ms": "0"})
    history = keyed_history(seed=2, count=2000, keys=50)
    prod = producer(broker.bootstrap, **{"linger.ms": 5, "batch.size": 2000})
    assert not produce_all(prod, topic, history).failed
    model = latest(history)
    live = {key: value for key, value in model.items() if value is not None}
    assert len(live) < len(model), "the history ends with some tombstones"

    # Keep adding data of other keys: each pass makes a dirty section, and
    # a tombstone that survived one pass goes in the next.
    round_ = 0

    def tombstones_gone(log):
        nonlocal round_
        round_ += 1
        assert not produce_all(prod, topic, fillers(str(round_), 60)).failed
        got = {key: value for _, key, value in log if key.startswith(b"key-")}
        return got == live

    wait_for_log(broker, topic, tombstones_gone)


def test_keyless_records_are_refused_on_compacted_topics(broker):
    topic = unique_topic("keyless")
    create_topic(broker.bootstrap, topic, 1, COMPACTED)
    prod = producer(broker.bootstrap, **{"linger.ms": 0, "message.timeout.ms": 5000, "retries": 0})
    refused = produce_all(prod, topic, [Record(None, b"no key", partition=0)])
    assert [e.code() for e, _ in refused.failed] == [KafkaError.INVALID_RECORD]
    assert not produce_all(prod, topic, [Record(b"k", b"keyed", partition=0)]).failed
    # A topic that is not compacted takes keyless records.
    plain = unique_topic("plain")
    create_topic(broker.bootstrap, plain, 1)
    assert not produce_all(prod, plain, [Record(None, b"no key", partition=0)]).failed


def test_kill_9_while_cleaning_leaves_a_readable_log(broker_factory):
    """The cleaner runs every 20 ms while rounds of updates arrive; after each
    round the broker is killed at a random moment (now and then mid-pass)
    and restarted. The log always opens and reads whole, every acknowledged
    key's latest record is there, and in the end it is fully compacted."""
    broker = broker_factory("log.cleaner.backoff.ms=20")
    topic = unique_topic("compact-kill")
    create_topic(broker.bootstrap, topic, 1, {**COMPACTED, "segment.bytes": "2048"})
    history = keyed_history(seed=3, count=8000, keys=300)
    rng = random.Random(3)
    acked = []
    for round_ in range(8):
        chunk = history[round_ * 1000 : (round_ + 1) * 1000]
        prod = producer(broker.bootstrap, **{"linger.ms": 5, "batch.size": 1500})
        assert not produce_all(prod, topic, chunk).failed
        acked += chunk
        time.sleep(rng.uniform(0.0, 0.05))
        broker.kill9()
        broker.start()
        log = read_log(broker, topic)
        offsets = [offset for offset, _, _ in log]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        got = {key: value for _, key, value in log}
        assert got == latest(acked), f"round {round_}: a key's latest record is missing or stale"
    model = latest(acked)
    prod = producer(broker.bootstrap, **{"linger.ms": 5})
    assert not produce_all(prod, topic, fillers("end", 100)).failed

    def compacted(log):
        return len([key for _, key, _ in log if key.startswith(b"key-")]) == len(model)

    wait_for_log(broker, topic, compacted)
