"""Consumer groups with librdkafka (confluent-kafka): membership changes,
assignors, session and poll timeouts, static membership, durable commits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from clients import Record, create_topic, produce_all, producer
from conftest import unique_topic

pytestmark = pytest.mark.timeout(240)

FAST_GROUPS = "group.initial.rebalance.delay.ms=0"
# Members that take their time, so that membership changes happen while records remain.
SLOW = {"pause_s": 0.02}


def group_consumer(bootstrap: str, group: str, **extra) -> Consumer:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    conf.update(extra)
    return Consumer(conf)


class Member(threading.Thread):
    """Consumes in its own thread, committing every batch synchronously
    before the next poll, so that a partition changing hands resumes exactly
    where the previous owner stopped."""

    def __init__(self, bootstrap: str, group: str, topic: str, seen: list, pause_s: float = 0.0, **extra):
        super().__init__(daemon=True)
        self.pause_s = pause_s
        self.consumer = group_consumer(bootstrap, group, **extra)
        self.topic = topic
        self.seen = seen
        self.count = 0
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        # Kept by the rebalance callbacks: librdkafka's calls are not to be
        # made from a thread other than the polling one.
        self.partitions: set[int] = set()
        self.refused_commits = 0
        # Partitions assigned and not yet read from, and per partition the
        # offset the group had committed when this member first read it
        # (then the offset after the last record it read): anything below
        # was consumed and committed already. librdkafka's
        # consume() can hand over a batch fetched under an earlier
        # assignment of the same partition (confluent-kafka-python #1013):
        # those are dropped and counted, not counted as read.
        self.fresh: set[int] = set()
        self.floor: dict[int, int] = {}
        self.stale = 0
        # What it read and committed, by partition, to explain a record read
        # twice: (time, what happened).
        self.events: dict[int, list[tuple[float, str]]] = {}

    def _event(self, partition: int, what: str) -> None:
        self.events.setdefault(partition, []).append((time.monotonic(), f"{self.name}: {what}"))

    def _assigned(self, consumer, partitions) -> None:
        self.partitions |= {tp.partition for tp in partitions}
        self.fresh |= {tp.partition for tp in partitions}
        for tp in partitions:
            self.floor.pop(tp.partition, None)
            self._event(tp.partition, "assigned")

    def _revoked(self, consumer, partitions) -> None:
        self.partitions -= {tp.partition for tp in partitions}
        for tp in partitions:
            self._event(tp.partition, "revoked")

    def run(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked)
        try:
            while not self.stop_event.is_set():
                batch = self.consumer.consume(num_messages=200, timeout=0.2)
                got = self._current([m for m in batch if m.error() is None])
                self.errors.extend(str(m.error()) for m in batch if m.error() is not None)
                if got:
                    self.seen.extend((m.partition(), m.offset()) for m in got)
                    self.count += len(got)
                    for partition in {m.partition() for m in got}:
                        offsets = [m.offset() for m in got if m.partition() == partition]
                        self._event(partition, f"read {min(offsets)}-{max(offsets)}")
                    self.commit()
                    time.sleep(self.pause_s)
        except Exception as error:  # surfaced by the test
            self.errors.append(repr(error))
        finally:
            self.consumer.close()

    def _current(self, messages: list) -> list:
        """`messages` without those below the group's committed offset when
        this member's assignment of their partition began (see `floor`)."""
        for partition in {m.partition() for m in messages} & self.fresh:
            self.fresh.discard(partition)
            [committed] = self.consumer.committed([TopicPartition(self.topic, partition)], timeout=10)
            self.floor[partition] = max(committed.offset, 0)
        kept = [m for m in messages if m.offset() >= self.floor.get(m.partition(), 0)]
        for partition in {m.partition() for m in messages if m.offset() < self.floor.get(m.partition(), 0)}:
            offsets = [m.offset() for m in messages if m.partition() == partition and m.offset() < self.floor[partition]]
            self._event(partition, f"dropped {min(offsets)}-{max(offsets)}, below {self.floor[partition]}")
        self.stale += len(messages) - len(kept)
        # Within one assignment a partition's records come in order: a
        # batch below what this member already read in it is one librdkafka
        # fetched under an earlier assignment and hands over late (the same
        # issue, after the first read), not a record the group gave twice.
        for m in kept:
            self.floor[m.partition()] = max(self.floor.get(m.partition(), 0), m.offset() + 1)
        return kept

    def commit(self) -> None:
        try:
            for tp in self.consumer.commit(asynchronous=False) or []:
                if tp.offset >= 0 or tp.error:  # not the partitions with nothing to commit
                    self._event(tp.partition, f"committed {tp.offset}" + (f" ({tp.error})" if tp.error else ""))
        except KafkaException as error:
            code = error.args[0].code()
            # As from Apache Kafka: a commit while the group completes a
            # rebalance is refused; a later commit covers these offsets.
            # With cooperative-sticky, librdkafka may also commit with the
            # generation a rebalance just replaced (ILLEGAL_GENERATION, then
            # it rejoins: librdkafka issue #4059); applications go on.
            if code in (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION):
                self.refused_commits += 1
                for partition in self.partitions:
                    self._event(partition, f"commit refused: {error}")
            elif code != KafkaError._NO_OFFSET:
                raise

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def produce_records(bootstrap: str, topic: str, count: int) -> None:
    records = [Record(f"k{i % 1000}".encode(), f"v{i}".encode()) for i in range(count)]
    delivered = produce_all(producer(bootstrap, **{"linger.ms": 20}), topic, records)
    assert not delivered.failed and len(delivered.acked) == count


def test_group_of_three_reads_100k_records_exactly_once_while_members_come_and_go(broker_factory):
    broker = broker_factory(FAST_GROUPS)
    topic = unique_topic("g3")
    create_topic(broker.bootstrap, topic, 6)
    produce_records(broker.bootstrap, topic, 100_000)
    group = unique_topic("group")
    seen: list[tuple[int, int]] = []
    a = Member(broker.bootstrap, group, topic, seen, **SLOW)
    a.start()
    wait_for(lambda: len(seen) >= 15_000, 60, "the first member to get going")
    b = Member(broker.bootstrap, group, topic, seen, **SLOW)
    b.start()
    wait_for(lambda: b.count > 0, 60, "the second member to receive records")
    c = Member(broker.bootstrap, group, topic, seen, **SLOW)
    c.start()
    wait_for(lambda: c.count > 0, 60, "the third member to receive records")
    a.stop()  # leaves the group
    wait_for(lambda: len(seen) >= 100_000, 120, "all records")
    time.sleep(1.0)  # anything read twice would show up now
    b.stop()
    c.stop()
    for member in (a, b, c):
        assert not member.errors, member.errors
    duplicates = [place for place, n in Counter(seen).items() if n > 1]
    if duplicates:
        partition = duplicates[0][0]
        story = sorted(event for m in (a, b, c) for event in m.events.get(partition, []))
        start = story[0][0] if story else 0.0
        told = "\n".join(f"{at - start:8.3f} s {what}" for at, what in story[:120])
        pytest.fail(
            f"{len(duplicates)} records read twice, e.g. {duplicates[:5]}; refused commits "
            f"{[m.refused_commits for m in (a, b, c)]}; stale deliveries dropped "
            f"{[m.stale for m in (a, b, c)]}; partition {partition}:\n{told}"
        )
    assert len(seen) == 100_000
    assert all(m.count > 0 for m in (a, b, c)), [m.count for m in (a, b, c)]


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
def test_assignor_shares_partitions(broker_factory, assignor):
    broker = broker_factory(FAST_GROUPS)
    topic = unique_topic(f"assign-{assignor}")
    create_topic(broker.bootstrap, topic, 5)
    produce_records(broker.bootstrap, topic, 5000)
    group = unique_topic("group")
    seen: list[tuple[int, int]] = []
    extra = {"partition.assignment.strategy": assignor}
    a = Member(broker.bootstrap, group, topic, seen, **extra)
    b = Member(broker.bootstrap, group, topic, seen, **extra)
    a.start()
    b.start()
    wait_for(lambda: len(seen) >= 5000, 60, "all records")

    def shares():
        return [set(m.partitions) for m in (a, b)]

    try:
        wait_for(lambda: all(shares()) and set.union(*shares()) == set(range(5)), 30, "both members to share the partitions")
    except AssertionError as error:
        raise AssertionError(f"{error}; member errors: {a.errors} {b.errors}") from None
    first, second = shares()
    assert not first & second, f"a partition assigned twice: {first} {second}"

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    assert described.partition_assignor == assignor
    assert str(described.state).endswith("STABLE")
    assert len(described.members) == 2
    time.sleep(0.5)
    a.stop()
    b.stop()
    assert not a.errors and not b.errors, (a.errors, b.errors)
    assert len(set(seen)) == 5000, "every record was read"
    if assignor != "cooperative-sticky":
        # Eager members commit before they rejoin: nothing is read twice.
        # (Cooperative members keep consuming during the rebalance, and a
        # commit then is refused, so a moved partition may repeat a little.)
        assert len(seen) == 5000


CONSUMER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from confluent_kafka import Consumer
    bootstrap, group, topic = sys.argv[1:4]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 6000,
                  "heartbeat.interval.ms": 500, "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    while True:
        c.poll(0.2)
        if c.assignment():
            print("assigned", len(c.assignment()), flush=True)
    """
)


def test_member_that_stops_heartbeating_is_removed_after_its_session_timeout(broker_factory):
    broker = broker_factory(FAST_GROUPS)
    topic = unique_topic("session")
    create_topic(broker.bootstrap, topic, 4)
    group = unique_topic("group")
    other = subprocess.Popen(
        [sys.executable, "-c", CONSUMER_SCRIPT, broker.bootstrap, group, topic],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = other.stdout.readline().decode()
        assert line.startswith("assigned"), line
        survivor = group_consumer(broker.bootstrap, group)
        survivor.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(survivor.assignment()) != 2:
            survivor.poll(0.1)
            assert time.monotonic() < deadline, "the partitions were never shared"
        other.kill()  # no LeaveGroup, no more heartbeats
        killed_at = time.monotonic()
        while len(survivor.assignment()) != 4:
            survivor.poll(0.1)
            assert time.monotonic() - killed_at < 40, "the dead member's partitions never moved"
        took = time.monotonic() - killed_at
        # Not before the 6 s session timeout: the member was given its full session.
        assert took > 5.0, f"partitions moved after {took:.1f} s, before the session timeout"
        survivor.close()
    finally:
        other.kill()
        other.wait()
    assert "member session expired" in broker.log_text()


def test_member_past_max_poll_interval_leaves(broker_factory):
    broker = broker_factory(FAST_GROUPS)
    topic = unique_topic("maxpoll")
    create_topic(broker.bootstrap, topic, 4)
    group = unique_topic("group")
    slow = group_consumer(broker.bootstrap, group, **{"max.poll.interval.ms": 7000})
    fast = group_consumer(broker.bootstrap, group)
    slow.subscribe([topic])
    fast.subscribe([topic])
    deadline = time.monotonic() + 60
    while not (slow.assignment() and fast.assignment() and len(slow.assignment()) + len(fast.assignment()) == 4):
        slow.poll(0.05)
        fast.poll(0.05)
        assert time.monotonic() < deadline, "the partitions were never shared"
    # `slow` stops polling: after max.poll.interval.ms librdkafka leaves the group.
    stalled_at = time.monotonic()
    while len(fast.assignment()) != 4:
        fast.poll(0.1)
        assert time.monotonic() - stalled_at < 40, "the stalled member kept its partitions"
    assert time.monotonic() - stalled_at > 6.0
    fast.close()
    slow.close()


def test_static_member_restarts_without_a_rebalance(broker_factory):
    broker = broker_factory(FAST_GROUPS)
    topic = unique_topic("static")
    create_topic(broker.bootstrap, topic, 4)
    group = unique_topic("group")
    rebalances = Counter()

    def counting(name):
        return {
            "on_assign": lambda c, ps: rebalances.update([f"{name}-assign"]),
            "on_revoke": lambda c, ps: rebalances.update([f"{name}-revoke"]),
        }

    def static_consumer(instance: str) -> Consumer:
        return group_consumer(broker.bootstrap, group, **{"group.instance.id": instance, "session.timeout.ms": 20000})

    a = static_consumer("instance-a")
    b = static_consumer("instance-b")
    a.subscribe([topic], **counting("a"))
    b.subscribe([topic], **counting("b"))
    deadline = time.monotonic() + 60
    while not (a.assignment() and b.assignment() and len(a.assignment()) + len(b.assignment()) == 4):
        a.poll(0.05)
        b.poll(0.05)
        assert time.monotonic() < deadline, "the partitions were never shared"
    b_partitions = sorted(tp.partition for tp in b.assignment())
    a_events = dict(rebalances)
    b.close()  # a static member sends no LeaveGroup
    b = static_consumer("instance-b")
    b.subscribe([topic], **counting("b2"))
    deadline = time.monotonic() + 30
    while not b.assignment():
        b.poll(0.05)
        a.poll(0.05)
        assert time.monotonic() < deadline, "the restarted static member got nothing"
    for _ in range(20):  # a rebalance, had there been one, would reach `a` now
        a.poll(0.1)
    assert sorted(tp.partition for tp in b.assignment()) == b_partitions
    assert {k: v for k, v in rebalances.items() if k.startswith("a-")} == {k: v for k, v in a_events.items() if k.startswith("a-")}
    a.close()
    b.close()


def test_commits_with_metadata_survive_kill9(broker_factory):
    broker = broker_factory(FAST_GROUPS)
    topic = unique_topic("commits")
    create_topic(broker.bootstrap, topic, 3)
    produce_records(broker.bootstrap, topic, 300)
    group = unique_topic("group")
    consumer = group_consumer(broker.bootstrap, group)
    wanted = [TopicPartition(topic, p, 10 * (p + 1), f"meta-{p}") for p in range(3)]
    consumer.commit(offsets=wanted, asynchronous=False)
    consumer.close()

    broker.kill9()
    broker.start()

    consumer = group_consumer(broker.bootstrap, group)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    assert [(tp.partition, tp.offset, tp.metadata) for tp in committed] == [(p, 10 * (p + 1), f"meta-{p}") for p in range(3)]
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 300 - 60 and time.monotonic() < deadline:
        got.extend(m for m in consumer.consume(500, 0.2) if m.error() is None)
    assert min(m.offset() for m in got if m.partition() == 2) == 30, "consumption resumed at the committed offset"
    assert len(got) == 300 - 60
    consumer.close()


def test_group_max_size_refuses_one_member_too_many(broker_factory):
    broker = broker_factory(FAST_GROUPS, "group.max.size=2")
    topic = unique_topic("maxsize")
    create_topic(broker.bootstrap, topic, 3)
    group = unique_topic("group")
    members = [group_consumer(broker.bootstrap, group) for _ in range(3)]
    for member in members[:2]:
        member.subscribe([topic])
    deadline = time.monotonic() + 30
    while not all(m.assignment() for m in members[:2]):
        for member in members[:2]:
            member.poll(0.05)
        assert time.monotonic() < deadline, "the first two members never got partitions"
    members[2].subscribe([topic])
    errors = []
    deadline = time.monotonic() + 30
    while not errors:
        message = members[2].poll(0.1)
        for member in members[:2]:
            member.poll(0)
        if message is not None and message.error() is not None:
            errors.append(message.error())
        assert time.monotonic() < deadline, "the third member was never refused"
    assert errors[0].code() == KafkaError.GROUP_MAX_SIZE_REACHED, errors[0]
    assert not members[2].assignment()
    for member in members:
        member.close()
