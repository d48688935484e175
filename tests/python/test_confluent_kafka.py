"""End-to-end tests with confluent-kafka (librdkafka 2.16 from the PyPI wheel)."""

from __future__ import annotations

import threading
import time
import zlib
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from clients import Record, consume_partitions, create_topic, produce_all, producer
from conftest import unique_topic

pytestmark = pytest.mark.timeout(300)


def test_100k_keyed_records_round_trip_in_order(broker):
    """100k keyed records with headers and timestamps over 4 partitions come back
    per partition in production order, every field intact."""
    topic = unique_topic("keyed")
    create_topic(broker.bootstrap, topic, 4)
    base_ts = int(time.time() * 1000) - 3_600_000
    count = 100_000
    records = [
        Record(
            key=f"key-{i % 997}".encode(),
            value=f"value-{i}-".encode() + bytes([i % 251]) * (i % 64),
            headers=[("seq", str(i).encode()), ("empty", b"")],
            timestamp=base_ts + i,
        )
        for i in range(count)
    ]
    prod = producer(broker.bootstrap, **{"linger.ms": 20, "batch.num.messages": 5000})
    delivered = produce_all(prod, topic, records)
    assert not delivered.failed, delivered.failed[:5]
    assert len(delivered.acked) == count

    messages = consume_partitions(broker.bootstrap, topic, [0, 1, 2, 3], count)
    assert len(messages) == count

    by_partition = defaultdict(list)
    for msg in messages:
        by_partition[msg.partition()].append(msg)
    assert len(by_partition) == 4, "librdkafka's partitioner spreads 997 keys over all partitions"
    key_partition = {}
    for partition, msgs in by_partition.items():
        assert [m.offset() for m in msgs] == list(range(len(msgs))), f"partition {partition}: offsets not dense"
        seqs = [int(dict(m.headers())["seq"]) for m in msgs]
        assert seqs == sorted(seqs), f"partition {partition}: records out of production order"
        for msg, seq in zip(msgs, seqs):
            expected = records[seq]
            assert msg.key() == expected.key
            assert msg.value() == expected.value
            assert msg.headers() == [("seq", str(seq).encode()), ("empty", b"")]
            assert msg.timestamp() == (1, expected.timestamp)  # TIMESTAMP_CREATE_TIME
            assert key_partition.setdefault(msg.key(), partition) == partition, "a key moved partitions"


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_compression_codec_round_trip(broker, codec):
    """Batches are stored as they arrive: compressed on disk, whole on read."""
    topic = unique_topic(f"codec-{codec}")
    create_topic(broker.bootstrap, topic, 1)
    count = 5000
    value = b"0123456789abcdef" * 32  # 512 compressible bytes
    records = [Record(key=str(i).encode(), value=value + str(i).encode(), partition=0) for i in range(count)]
    prod = producer(broker.bootstrap, **{"compression.type": codec, "linger.ms": 50})
    delivered = produce_all(prod, topic, records)
    assert not delivered.failed and len(delivered.acked) == count

    messages = consume_partitions(broker.bootstrap, topic, [0], count)
    assert [(m.key(), m.value()) for m in messages] == [(r.key, r.value) for r in records]

    raw = count * len(value)
    on_disk = broker.segment_bytes(topic)
    if codec == "none":
        assert on_disk > raw
    else:
        assert 0 < on_disk < raw // 4, f"{codec}: {on_disk} bytes on disk for {raw} raw bytes"


def test_null_and_empty_keys_and_values(broker):
    topic = unique_topic("nulls")
    create_topic(broker.bootstrap, topic, 1)
    records = [
        Record(None, None, partition=0),
        Record(b"", b"", partition=0),
        Record(None, b"value", partition=0),
        Record(b"key", None, partition=0),
        Record(b"", None, partition=0),
        Record(None, b"", partition=0),
    ]
    delivered = produce_all(producer(broker.bootstrap), topic, records)
    assert not delivered.failed
    messages = consume_partitions(broker.bootstrap, topic, [0], len(records))
    assert [(m.key(), m.value()) for m in messages] == [(r.key, r.value) for r in records]


def test_max_message_bytes_broker_and_topic_limits(broker_factory):
    """A batch up to the limit is accepted; one over it gets MSG_SIZE_TOO_LARGE,
    under the broker's message.max.bytes and a topic's max.message.bytes."""
    broker = broker_factory("message.max.bytes=200000")
    topic = unique_topic("limit")
    create_topic(broker.bootstrap, topic, 1)
    prod = producer(broker.bootstrap, **{"linger.ms": 0, "message.max.bytes": 1_000_000})
    ok = produce_all(prod, topic, [Record(b"k", b"x" * 190_000, partition=0)])
    assert not ok.failed and len(ok.acked) == 1
    too_big = produce_all(prod, topic, [Record(b"k", b"y" * 300_000, partition=0)])
    assert len(too_big.failed) == 1
    assert too_big.failed[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE, too_big.failed[0][0]

    small = unique_topic("limit-topic")
    create_topic(broker.bootstrap, small, 1, {"max.message.bytes": "50000"})
    ok = produce_all(prod, small, [Record(b"k", b"x" * 40_000, partition=0)])
    assert not ok.failed
    too_big = produce_all(prod, small, [Record(b"k", b"y" * 60_000, partition=0)])
    assert [e.code() for e, _ in too_big.failed] == [KafkaError.MSG_SIZE_TOO_LARGE]

    messages = consume_partitions(broker.bootstrap, topic, [0], 1)
    assert [len(m.value()) for m in messages] == [190_000]
    messages = consume_partitions(broker.bootstrap, small, [0], 1)
    assert [len(m.value()) for m in messages] == [40_000]


def test_auto_created_topic_gets_num_partitions(broker_factory):
    broker = broker_factory("num.partitions=5")
    topic = unique_topic("auto")
    delivered = produce_all(producer(broker.bootstrap), topic, [Record(b"k", b"v")])
    assert not delivered.failed
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
    assert metadata.topics[topic].error is None
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2, 3, 4]


def test_auto_creation_disabled(broker_factory):
    broker = broker_factory("auto.create.topics.enable=false")
    topic = unique_topic("noauto")
    prod = producer(broker.bootstrap, **{"message.timeout.ms": 3000})
    delivered = produce_all(prod, topic, [Record(b"k", b"v")])
    assert len(delivered.failed) == 1
    assert delivered.failed[0][0].code() in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT)
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
    assert metadata.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_list_offsets_by_timestamp(broker):
    topic = unique_topic("times")
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": "4096"})  # several segments
    base_ts = int(time.time() * 1000) - 1_000_000
    records = [Record(f"{i}".encode(), b"v" * 100, timestamp=base_ts + i * 1000, partition=0) for i in range(200)]
    # One record per request so that every record has its own batch and timestamp index entry.
    prod = producer(broker.bootstrap, **{"linger.ms": 0, "max.in.flight": 1})
    delivered = produce_all(prod, topic, records)
    assert not delivered.failed

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    try:
        lookups = {
            base_ts - 5: 0,  # before everything: the first offset
            base_ts: 0,
            base_ts + 1: 1,  # the first record with timestamp >= the target
            base_ts + 50_500: 51,
            base_ts + 199_000: 199,
            base_ts + 199_001: -1,  # after the last record: no offset (OFFSET_END)
        }
        for ts, expected in lookups.items():
            [result] = consumer.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert result.error is None
            assert result.offset == expected, f"timestamp {ts - base_ts:+}: offset {result.offset}, want {expected}"
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert (low, high) == (0, 200)
    finally:
        consumer.close()


@pytest.mark.parametrize("acks", ["all", "1"])
def test_kill9_during_produce_loses_no_acknowledged_record(broker, acks):
    """kill -9 in the middle of a stream of produce requests; after a restart every
    acknowledged record is at the offset it was acknowledged with."""
    topic = unique_topic(f"kill9-acks{acks}")
    create_topic(broker.bootstrap, topic, 3, {"segment.bytes": "262144"})
    prod = producer(
        broker.bootstrap,
        **{"acks": acks, "linger.ms": 2, "message.timeout.ms": 20000, "retry.backoff.ms": 50},
    )
    delivered_lock = threading.Lock()
    acked: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    failures = []

    def on_delivery(err, msg):
        with delivered_lock:
            if err is None:
                place = (msg.partition(), msg.offset())
                assert place not in acked, f"offset {place} acknowledged twice"
                acked[place] = (msg.key(), msg.value())
            else:
                failures.append(err)

    stop = threading.Event()

    def produce_forever():
        i = 0
        while not stop.is_set():
            try:
                prod.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode() * 10, on_delivery=on_delivery)
                i += 1
            except BufferError:
                prod.poll(0.05)
                continue
            if i % 100 == 0:
                prod.poll(0)

    thread = threading.Thread(target=produce_forever)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 20_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 20_000, "producer did not get going"
        broker.kill9()
        acked_at_kill = len(acked)
        time.sleep(0.5)
        broker.restart()
        # Keep producing a moment against the restarted broker, then drain.
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    assert prod.flush(30) == 0
    assert len(acked) > acked_at_kill, "the producer resumed after the restart"

    per_partition = defaultdict(int)
    for partition, offset in acked:
        per_partition[partition] = max(per_partition[partition], offset + 1)
    found = {}
    for partition, end in per_partition.items():
        for msg in consume_partitions(broker.bootstrap, topic, [partition], end):
            found[(msg.partition(), msg.offset())] = (msg.key(), msg.value())
    missing = [place for place, record in acked.items() if found.get(place) != record]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged records lost or changed, e.g. {missing[:5]}"


def test_topic_and_data_survive_restart(broker):
    topic = unique_topic("persist")
    create_topic(broker.bootstrap, topic, 2, {"retention.ms": "86400000"})
    records = [Record(f"{i}".encode(), f"{i}".encode() * 50, partition=i % 2) for i in range(1000)]
    assert not produce_all(producer(broker.bootstrap), topic, records).failed
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    before = admin.list_topics(topic, timeout=10).topics[topic]

    assert broker.stop() == 0, "SIGTERM is a clean shutdown"
    broker.start()
    after = admin.list_topics(topic, timeout=10).topics[topic]
    assert sorted(after.partitions) == sorted(before.partitions) == [0, 1]
    messages = consume_partitions(broker.bootstrap, topic, [0, 1], 1000)
    got = sorted((m.key(), m.value()) for m in messages)
    assert got == sorted((r.key, r.value) for r in records)


def test_unknown_partition_is_refused(broker):
    topic = unique_topic("parts")
    create_topic(broker.bootstrap, topic, 1)
    prod = producer(broker.bootstrap, **{"message.timeout.ms": 3000})
    delivered = produce_all(prod, topic, [Record(b"k", b"v", partition=7)])
    assert [e.code() for e, _ in delivered.failed] == [KafkaError._UNKNOWN_PARTITION]
    with pytest.raises(KafkaException):
        create_topic(broker.bootstrap, topic, 1)  # already exists


def test_crc_of_stored_batches_is_kafkas(broker):
    """The log stores what the client sent: a consumer with check.crcs=true
    verifies every batch's CRC-32C."""
    topic = unique_topic("crc")
    create_topic(broker.bootstrap, topic, 1)
    records = [Record(None, zlib.compress(str(i).encode() * 20), partition=0) for i in range(500)]
    assert not produce_all(producer(broker.bootstrap, **{"compression.type": "lz4"}), topic, records).failed
    messages = consume_partitions(broker.bootstrap, topic, [0], 500, **{"check.crcs": True})
    assert [m.value() for m in messages] == [r.value for r in records]
