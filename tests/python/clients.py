"""Small helpers shared by the client tests: produce and consume with
confluent-kafka (librdkafka) and collect delivery reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    timestamp: int | None = None
    partition: int | None = None


@dataclass
class Delivered:
    """Delivery reports of a producer: what the broker acknowledged and what failed."""

    acked: list[tuple[int, int, bytes | None, bytes | None]] = field(default_factory=list)
    failed: list[tuple[KafkaError, bytes | None]] = field(default_factory=list)

    def callback(self, err, msg) -> None:
        if err is not None:
            self.failed.append((err, msg.key()))
        else:
            self.acked.append((msg.partition(), msg.offset(), msg.key(), msg.value()))


def create_topic(bootstrap: str, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})])
    futures[topic].result(timeout=30)


def producer(bootstrap: str, **extra) -> Producer:
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"}
    conf.update(extra)
    return Producer(conf)


def produce_all(prod: Producer, topic: str, records: list[Record]) -> Delivered:
    """Produces every record and waits for all delivery reports."""
    delivered = Delivered()
    for record in records:
        kwargs = {}
        if record.partition is not None:
            kwargs["partition"] = record.partition
        if record.headers is not None:
            kwargs["headers"] = record.headers
        if record.timestamp is not None:
            kwargs["timestamp"] = record.timestamp
        while True:
            try:
                prod.produce(topic, key=record.key, value=record.value, on_delivery=delivered.callback, **kwargs)
                break
            except BufferError:
                prod.poll(0.1)
        prod.poll(0)
    remaining = prod.flush(60)
    assert remaining == 0, f"{remaining} records still undelivered after 60 s"
    return delivered


def consume_partitions(bootstrap: str, topic: str, partitions: list[int], expected: int, timeout_s: float = 60.0, **extra):
    """Reads `expected` messages from the beginning of `partitions` by assignment
    (no group coordination: group.id is set because librdkafka requires one,
    offsets are never committed)."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "unused-assign-only",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
    }
    conf.update(extra)
    consumer = Consumer(conf)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10000, timeout=0.5)
            for msg in batch:
                assert msg.error() is None, f"consumer error: {msg.error()}"
                messages.append(msg)
        # Anything beyond `expected` shows up within a short extra poll.
        extra_batch = consumer.consume(num_messages=100, timeout=0.5)
        messages.extend(m for m in extra_batch if m.error() is None)
    finally:
        consumer.close()
    return messages
