"""Controlled shutdown: on SIGTERM a broker hands the partitions it leads
to other in-sync replicas (through the controller, as Kafka's
ControlledShutdown does) before it closes its listeners. A rolling restart
of all three brokers with SIGTERM under an idempotent acks=all librdkafka
producer and a consumer group: no delivery error, nothing lost, nothing
written twice, everything consumed. The same roll with kill -9 is measured
beside it (p99 produce latency during each roll is printed for the note)."""

from __future__ import annotations

import re
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from conftest import unique_topic
from test_replication import create, states, wait_full_isr

pytestmark = pytest.mark.timeout(420)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PARTITIONS = 3


class Load:
    """An idempotent acks=all producer writing unique values at `rate`/s in
    a thread; each delivery's latency from produce() to its report."""

    def __init__(self, bootstrap: str, topic: str, prefix: str, rate: float = 300):
        self.topic = topic
        self.prefix = prefix
        self.rate = rate
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120000,
            "topic.metadata.refresh.interval.ms": 1000,
        })
        self.lock = threading.Lock()
        self.acked: dict[bytes, float] = {}  # value → latency (s)
        self.sent_at: dict[bytes, float] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _report(self, err, msg) -> None:
        now = time.monotonic()
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.acked[msg.value()] = now - self.sent_at[msg.value()]

    def _run(self) -> None:
        started = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            due = started + sent / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                # (A negative timeout would make poll wait for ever.)
                self.producer.poll(min(0.01, wait))
                continue
            value = f"{self.prefix}-{sent:08d}".encode()
            with self.lock:
                self.sent_at[value] = time.monotonic()
            self.producer.produce(self.topic, value=value, on_delivery=self._report)
            sent += 1
            self.producer.poll(0)
        self.producer.flush(120)

    def start(self) -> "Load":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(150)

    def p99_ms(self, since: float, until: float) -> float:
        with self.lock:
            latencies = sorted(lat for value, lat in self.acked.items() if since <= self.sent_at[value] <= until)
        assert latencies, "nothing was acknowledged during the roll"
        return 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]


class GroupReader:
    """A consumer of a group, in a thread: every value it is given."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
                                  "topic.metadata.refresh.interval.ms": 1000, "log_level": 2})
        self.consumer.subscribe([topic])
        self.seen: set[bytes] = set()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self.consumer.consume(500, 0.2):
                if message.error() is None:
                    with self.lock:
                        self.seen.add(message.value())
        self.consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)


def read_back(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of the topic below the high watermarks."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("check"),
                         "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        values, done = [], {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 60
        while len(done) < PARTITIONS and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            values.append(message.value())
            if message.offset() + 1 >= ends[message.partition()]:
                done.add(message.partition())
        assert len(done) == PARTITIONS, f"reading back timed out: ends {ends}"
        return values
    finally:
        consumer.close()


def roll(cluster, topic: str, how: str) -> None:
    for node_id in sorted(cluster.brokers):
        broker = cluster.brokers[node_id]
        if how == "sigterm":
            assert broker.stop() == 0, f"broker {node_id} did not exit cleanly"
        else:
            broker.kill9()
        broker.start()
        cluster.wait_for_brokers(set(cluster.brokers), timeout=60)
        wait_full_isr(cluster, topic, timeout=60)


def test_a_rolling_restart_with_sigterm_loses_nothing_and_fails_no_delivery(cluster_factory):
    cluster = cluster_factory(3, "default.replication.factor=3", "min.insync.replicas=2",
                              "offsets.topic.replication.factor=3", "replica.lag.time.max.ms=2000")
    topic = unique_topic("controlled")
    create(cluster, topic, PARTITIONS)
    wait_full_isr(cluster, topic)
    group = GroupReader(cluster.bootstrap, topic, unique_topic("roll-group"))
    figures = {}
    loads = []
    for how in ("sigterm", "kill9"):
        load = Load(cluster.bootstrap, topic, prefix=how).start()
        loads.append(load)
        time.sleep(3)
        began = time.monotonic()
        roll(cluster, topic, how)
        ended = time.monotonic()
        time.sleep(3)
        load.stop()
        with load.lock:
            print(f"{how}: sent {len(load.sent_at)}, acknowledged {len(load.acked)}, errors {len(load.errors)} "
                  f"{load.errors[:3]}, roll {ended - began:.1f} s", flush=True)
        figures[how] = (load.p99_ms(began, ended), len(load.acked), len(load.errors), ended - began)
        if how == "sigterm":
            assert load.errors == [], f"deliveries failed during the SIGTERM roll: {load.errors[:5]}"
            for node_id, broker in cluster.brokers.items():
                log = ANSI.sub("", broker.log_text())
                assert "controlled shutdown: leadership moved" in log, f"broker {node_id} did no controlled shutdown"
    print("\n".join(f"{how}: p99 produce latency during the roll {p99:.0f} ms, {acked} acknowledged, "
                    f"{errors} delivery errors, roll {took:.0f} s" for how, (p99, acked, errors, took) in figures.items()))

    # Nothing acknowledged lost, nothing written twice.
    values = read_back(cluster.bootstrap, topic)
    assert len(values) == len(set(values)), f"{len(values) - len(set(values))} records written twice"
    acknowledged = set().union(*(set(load.acked) for load in loads))
    missing = acknowledged - set(values)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:3]}"
    # The group consumed every acknowledged record.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with group.lock:
            if acknowledged <= group.seen:
                break
        time.sleep(0.5)
    group.stop()
    assert acknowledged <= group.seen, f"the group never got {len(acknowledged - group.seen)} records"
    # Leadership went back where it was spread (every partition led).
    assert all(leader > 0 for leader, _, _ in states(cluster, topic).values())


def test_a_partition_no_other_replica_can_lead_does_not_hold_up_the_shutdown(cluster_factory):
    cluster = cluster_factory(3, "default.replication.factor=1", "controlled.shutdown.max.retries=2",
                              "controlled.shutdown.retry.backoff.ms=1000")
    topic = unique_topic("alone")
    create(cluster, topic, 1, replication_factor=1)
    leader_id = states(cluster, topic)[0][0]
    broker = cluster.brokers[leader_id]
    started = time.monotonic()
    assert broker.stop() == 0
    took = time.monotonic() - started
    log = ANSI.sub("", broker.log_text())
    assert "no other in-sync replica can lead these" in log and f"{topic}-0" in log
    assert took < 10, f"the shutdown took {took:.1f} s"
