"""Fault runner and checker: faults injected into a real cluster (etcd and
three brokers on loopback) while kafka-python writes unique values with
acks=all; afterwards everything is read back (librdkafka) and checked.

The checker fails on any acknowledged record missing (or at another offset
than the one acknowledged), any value at two offsets, any offset holding two
different values across reads or across the replicas' segment files, and
offsets going backwards within a read.

    .venv/bin/python tests/python/faults.py                 # every scenario, short
    .venv/bin/python tests/python/faults.py kill-leader --long
    .venv/bin/python tests/python/faults.py --list

The broker binary is KBROKER_BIN or target/debug/kbroker (release for long
runs: `cargo build --release -p broker` and KBROKER_BIN=target/release/kbroker).
`tests/python/test_faults.py` runs the short version of each in CI.

    .venv/bin/python tests/python/faults.py --security sasl_ssl kill-leader

runs a scenario with the brokers talking to each other over SASL_SSL
(TLS 1.3, SCRAM-SHA-512 as `User:broker`, ACLs on): replica fetches,
transaction markers and every other inter-broker request go through TLS and
SCRAM while the faults happen. Clients stay on the PLAINTEXT listener.

The producer sends each value once (retries=0): without an idempotent
producer a retry may write a value twice, which the checker would count
against the broker. Values whose delivery failed may or may not be in
the log; only acknowledged ones must be.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest  # noqa: E402  (the cluster classes fail through it)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import (  # noqa: E402  (the cluster classes the tests use)
    HEARTBEAT_INTERVAL_MS,
    START_TIMEOUT_S,
    Broker,
    Cluster,
    broker_binary,
    etcd_binary,
    free_port,
    unique_topic,
)


class FaultTestFailure(AssertionError):
    pass


# ---------------------------------------------------------------------------
# etcd: one member or three


class EtcdMembers:
    """`size` etcd members on 127.0.0.1 forming one cluster; members can be
    killed and started again on their data directories."""

    def __init__(self, workdir: Path, size: int = 1):
        self.workdir = workdir
        self.names = [f"etcd{i}" for i in range(size)]
        self.client_ports = {name: free_port() for name in self.names}
        self.peer_ports = {name: free_port() for name in self.names}
        self.procs: dict[str, subprocess.Popen] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.client_ports[name]}"

    @property
    def endpoint(self) -> str:
        """Every member, comma-separated, as `etcd.endpoints` takes them."""
        return ",".join(self.url(name) for name in self.names)

    def start(self) -> "EtcdMembers":
        for name in self.names:
            self.start_member(name)
        for name in self.names:
            self.wait_healthy(name)
        return self

    def start_member(self, name: str) -> None:
        peer = f"http://127.0.0.1:{self.peer_ports[name]}"
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)
        cmd = [
            etcd_binary(),
            "--name", name,
            "--data-dir", str(self.workdir / f"{name}-data"),
            "--listen-client-urls", self.url(name),
            "--advertise-client-urls", self.url(name),
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.workdir.name,
            "--log-level", "warn",
            "--logger", "zap",
        ]
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise FaultTestFailure(f"etcd member {name} exited with {self.procs[name].returncode}")
            try:
                with urllib.request.urlopen(f"{self.url(name)}/health", timeout=1) as answer:
                    if json.load(answer).get("health") == "true":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise FaultTestFailure(f"etcd member {name} did not become healthy within {START_TIMEOUT_S:.0f} s")

    def kill(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for name in self.names:
            self.kill(name)


# ---------------------------------------------------------------------------
# The workload and what it saw


@dataclass
class History:
    """What the producer was told: value → (partition, offset) for every
    acknowledged record, and the errors of the others by name."""

    acked: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    #: (monotonic time, partition) of each acknowledgement, for failover gaps.
    ack_times: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failures(self) -> int:
        return sum(self.failed.values())

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without any acknowledgement in [start, end]."""
        times = sorted(t for t, _ in self.ack_times if start <= t <= end)
        points = [start, *times, end]
        return max((b - a for a, b in zip(points, points[1:])), default=0.0)


class Workload:
    """One kafka-python producer (acks=all, retries=0) writing unique values
    to `topic` at up to `rate` records/s, in a thread, until `stop()` or
    `count` records have been sent.

    kafka-python, not librdkafka: with retries=0 it sends each value once.
    librdkafka (2.x, `message.send.max.retries=0`) was seen sending a batch
    again after its first send had timed out on a leader cut off from the
    cluster — a duplicate no broker can prevent without idempotence."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float, history: History, prefix: str = "v"):
        from kafka import KafkaProducer

        self.topic = topic
        self.count = count
        self.rate = rate
        self.history = history
        self.prefix = prefix.encode()
        self.sent = 0
        self._stop = threading.Event()
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            retries=0,
            linger_ms=5,
            request_timeout_ms=5000,
            max_block_ms=5000,
            metadata_max_age_ms=500,
            retry_backoff_ms=50,
        )
        self.thread = threading.Thread(target=self._run, name=f"workload-{topic}", daemon=True)

    def _failed(self, error: BaseException) -> None:
        name = getattr(type(error), "message", None) or type(error).__name__
        with self.history.lock:
            self.history.failed[name] = self.history.failed.get(name, 0) + 1

    def _acked(self, value: bytes, metadata) -> None:
        with self.history.lock:
            self.history.acked[value] = (metadata.partition, metadata.offset)
            self.history.ack_times.append((time.monotonic(), metadata.partition))

    def _run(self) -> None:
        started = time.monotonic()
        while self.sent < self.count and not self._stop.is_set():
            due = started + self.sent / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.05))
                continue
            value = self.prefix + b"-%09d" % self.sent
            self.sent += 1
            try:
                future = self.producer.send(self.topic, value=value)
            except Exception as error:  # no metadata or buffer in time: not sent
                self._failed(error)
                continue
            future.add_callback(lambda metadata, value=value: self._acked(value, metadata))
            future.add_errback(self._failed)
        # kafka-python 2.3.3 never completes the records of a produce request
        # whose connection dropped (its errback raises a TypeError in
        # Sender._failed_produce; fixed in 3.x, whose admin API differs):
        # flush waits for them until its timeout. With retries=0 and 5 s
        # request timeouts, whatever the broker will answer is answered
        # within 10 s; those records stay neither acknowledged nor failed.
        try:
            self.producer.flush(10)
        except Exception as error:  # what is unanswered by now counts as failed
            self._failed(error)
        try:
            self.producer.close(2)  # after flush, only batches it will never complete are left
        except Exception:  # nothing left to learn from it
            pass

    def start(self) -> "Workload":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 120.0) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise FaultTestFailure("the producer did not finish")

    def acked(self) -> int:
        with self.history.lock:
            return len(self.history.acked)


# ---------------------------------------------------------------------------
# Reading back


def read_back(
    bootstrap: str, topic: str, partitions: int, at_least: dict[int, int] | None = None, timeout: float = 60.0
) -> dict[int, list[tuple[int, bytes]]]:
    """Every record below each partition's high watermark, in the order a
    fresh consumer receives them. The high watermark is asked for again
    (leaders may just have moved) until it is at least `at_least[p]`: just
    after an election it can be below what was acknowledged, for a moment."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("checker"),
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 500,
            "log_level": 2,
        }
    )
    try:
        from confluent_kafka import KafkaException

        ends = {}
        deadline = time.monotonic() + timeout
        for p in range(partitions):
            wanted = (at_least or {}).get(p, 0)
            while True:
                try:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    if high >= wanted:
                        break
                except KafkaException as error:  # NOT_LEADER while metadata catches up
                    high = f"unknown ({error})"
                if time.monotonic() > deadline:
                    raise FaultTestFailure(f"{topic}-{p}: high watermark {high}, below {wanted} acknowledged")
                time.sleep(0.2)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        reads: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        done = {p for p in range(partitions) if ends[p] == 0}
        deadline = time.monotonic() + timeout
        while len(done) < partitions:
            if time.monotonic() > deadline:
                positions = {p: (reads[p][-1][0] if reads[p] else None) for p in range(partitions)}
                raise FaultTestFailure(f"reading back timed out: ends {ends}, last offsets read {positions}")
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            p = message.partition()
            reads[p].append((message.offset(), message.value()))
            if message.offset() + 1 >= ends[p]:
                done.add(p)
        return reads
    finally:
        consumer.close()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


BATCH_HEADER = 61


def segment_records(partition_dir: Path) -> dict[int, bytes]:
    """offset → value of every record in a replica's segment files (record
    batches v2 as stored, uncompressed; control batches skipped)."""
    records: dict[int, bytes] = {}
    for path in sorted(partition_dir.glob("*.log")):
        data = path.read_bytes()
        pos = 0
        while pos + BATCH_HEADER <= len(data):
            base_offset, length = struct.unpack_from(">qi", data, pos)
            end = pos + 12 + length
            if length < BATCH_HEADER - 12 or end > len(data):
                break
            attributes = struct.unpack_from(">h", data, pos + 21)[0]
            if attributes & 0x07:
                raise FaultTestFailure(f"{path}: compressed batch at {base_offset}; the checker writes uncompressed")
            if not attributes & 0x20:
                count = struct.unpack_from(">i", data, pos + 57)[0]
                at = pos + BATCH_HEADER
                for _ in range(count):
                    _, at = _varint(data, at)  # record length
                    at += 1  # attributes
                    _, at = _varint(data, at)  # timestamp delta
                    delta, at = _varint(data, at)
                    key_len, at = _varint(data, at)
                    at += max(key_len, 0)
                    value_len, at = _varint(data, at)
                    value = data[at : at + value_len] if value_len >= 0 else b""
                    at += max(value_len, 0)
                    headers, at = _varint(data, at)
                    for _ in range(headers):
                        hk, at = _varint(data, at)
                        at += hk
                        hv, at = _varint(data, at)
                        at += max(hv, 0)
                    records[base_offset + delta] = value
            pos = end
    return records


# ---------------------------------------------------------------------------
# The checker


@dataclass
class Report:
    scenario: str
    acknowledged: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    read: int = 0
    lost: int = 0
    figures: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        figures = " ".join(f"{k}={v}" for k, v in self.figures.items())
        return (
            f"{self.scenario}: acknowledged={self.acknowledged} failed={sum(self.failed.values())} "
            f"{dict(self.failed) or ''} read={self.read} lost={self.lost} problems={len(self.problems)} {figures}"
        ).replace("  ", " ")


def check(report: Report, history: History, reads: list[dict[int, list[tuple[int, bytes]]]], replicas: dict[str, dict[int, bytes]] | None = None, watermarks: dict[int, int] | None = None) -> Report:
    """Fills `report` from what the producer was told, what the reads
    returned and (optionally) the replicas' logs of one partition each
    (`replicas`: "broker/partition" → offset → value, compared below
    `watermarks`). Raises FaultTestFailure listing every problem."""
    problems = report.problems
    report.acknowledged = len(history.acked)
    report.failed = dict(history.failed)
    seen: dict[tuple[int, int], bytes] = {}
    where: dict[bytes, tuple[int, int]] = {}
    for read in reads:
        for partition, records in read.items():
            last = -1
            for offset, value in records:
                if offset <= last:
                    problems.append(f"offsets went backwards in partition {partition}: {offset} after {last}")
                last = offset
                previous = seen.setdefault((partition, offset), value)
                if previous != value:
                    problems.append(f"partition {partition} offset {offset} held {previous!r} and {value!r}")
                other = where.setdefault(value, (partition, offset))
                if other != (partition, offset):
                    problems.append(f"value {value!r} at {other} and at {(partition, offset)}")
    report.read = len(seen)
    for value, (partition, offset) in history.acked.items():
        if seen.get((partition, offset)) != value:
            report.lost += 1
            if report.lost <= 10:
                problems.append(
                    f"acknowledged {value!r} at {partition}/{offset} is missing (found {seen.get((partition, offset))!r}, value at {where.get(value)})"
                )
    if report.lost > 10:
        problems.append(f"... {report.lost} acknowledged records missing in all")
    for name, log in (replicas or {}).items():
        partition = int(name.rsplit("/", 1)[1])
        end = (watermarks or {}).get(partition, 0)
        for offset in range(end):
            value = seen.get((partition, offset))
            if value is not None and log.get(offset) != value:
                problems.append(f"replica {name} has {log.get(offset)!r} at {offset}, the leader served {value!r}")
                break
    if problems:
        raise FaultTestFailure(f"{report.line()}\n" + "\n".join(problems[:40]))
    return report


# ---------------------------------------------------------------------------
# A running cluster and its helpers


#: How brokers talk to each other: "plaintext" or "sasl_ssl".
SECURITIES = ("plaintext", "sasl_ssl")
#: The brokers' own SCRAM password in the sasl_ssl mode (per run).
BROKER_PASSWORD = "broker-" + os.urandom(6).hex()


def sasl_ssl_overrides(certs: Path) -> list[str]:
    """A PLAINTEXT listener for clients and a SASL_SSL one between brokers
    (`{ssl_port}`), SCRAM-SHA-512 as User:broker, ACLs on (clients, as
    User:ANONYMOUS, are let in by allow.everyone.if.no.acl.found; a follower
    fetch needs CLUSTER_ACTION, which User:broker has as a super user)."""
    jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="broker" password="{BROKER_PASSWORD}";')
    return [
        "listeners=PLAINTEXT://{host}:{port},SASL_SSL://{host}:{ssl_port}",
        "inter.broker.listener.name=SASL_SSL",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={certs / 'keystore.pem'}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={certs / 'ca.pem'}",
        "ssl.enabled.protocols=TLSv1.3",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=true",
        "super.users=User:broker",
    ]


class Env:
    """Makes clusters under `workdir`; remembers them to tear them down."""

    def __init__(self, workdir: Path, long: bool, security: str = "plaintext"):
        if security not in SECURITIES:
            raise ValueError(f"security {security!r}: one of {SECURITIES}")
        self.workdir = workdir
        self.long = long
        self.security = security
        self.clusters: list[Cluster] = []
        self.etcds: list[EtcdMembers] = []

    def inter_broker_ports(self, broker: Broker) -> list[int]:
        """The ports other brokers reach `broker` on."""
        return [broker.ssl_port] if self.security == "sasl_ssl" else [broker.port]

    def cluster(self, *overrides: str, etcd_members: int = 1, session_timeout_ms: int = 3000, run_as_base: int | None = None) -> Cluster:
        index = len(self.clusters)
        etcd_dir = self.workdir / f"etcd{index}"
        etcd_dir.mkdir(parents=True)
        etcd = EtcdMembers(etcd_dir, etcd_members).start()
        self.etcds.append(etcd)
        cluster_dir = self.workdir / f"cluster{index}"
        cluster_dir.mkdir(parents=True)
        security: list[str] = []
        if self.security == "sasl_ssl":
            certs = self.workdir / "certs"
            if not (certs / "keystore.pem").exists():
                import tlsfiles

                tlsfiles.broker_keystore(certs)
            security = sasl_ssl_overrides(certs)
        cluster = Cluster(
            cluster_dir,
            etcd,
            3,
            [
                "default.replication.factor=3",
                "min.insync.replicas=2",
                "replica.lag.time.max.ms=2000",
                f"broker.session.timeout.ms={session_timeout_ms}",
                *security,
                *overrides,
            ],
        )
        if self.security == "sasl_ssl":
            # The brokers' credential, in etcd before the first start.
            formatted = subprocess.run(
                [str(broker_binary()), "format", "--override", f"etcd.endpoints={etcd.endpoint}",
                 "--override", f"etcd.prefix={cluster.prefix}",
                 "--add-scram", f"SCRAM-SHA-512=[name=broker,password={BROKER_PASSWORD}]"],
                capture_output=True, text=True, timeout=90)
            if formatted.returncode != 0:
                raise FaultTestFailure(f"kbroker format --add-scram failed: {formatted.stderr[-2000:]}")
        if run_as_base is not None:
            for node_id, broker in cluster.brokers.items():
                broker.run_as = run_as_base + node_id
        self.clusters.append(cluster)
        return cluster.start()

    def close(self) -> None:
        for cluster in self.clusters:
            for broker in cluster.brokers.values():
                if broker.is_running():
                    try:
                        broker.resume()
                    except OSError:
                        pass
                broker.kill9()
        for etcd in self.etcds:
            etcd.stop()

    def brokers(self) -> list[Broker]:
        return [b for c in self.clusters for b in c.brokers.values()]


def create_topic(cluster: Cluster, topic: str, partitions: int, assignment=None, **configs: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    if assignment is not None:
        new = NewTopic(topic, num_partitions=len(assignment), replica_assignment=assignment, config=configs)
    else:
        new = NewTopic(topic, num_partitions=partitions, replication_factor=3, config=configs)
    admin.create_topics([new])[topic].result(timeout=30)
    wait_full_isr(cluster, topic)


def partition_states(cluster: Cluster, topic: str, broker: Broker | None = None) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition → (leader, replicas, sorted ISR) as `broker` (default: the
    first running one) answers."""
    partitions = cluster.metadata(broker or cluster.running()[0]).topics[topic].partitions
    return {p.id: (p.leader, list(p.replicas), sorted(p.isrs)) for p in partitions.values()}


def leader_of(cluster: Cluster, topic: str, partition: int = 0, broker: Broker | None = None) -> int:
    return partition_states(cluster, topic, broker)[partition][0]


def wait_full_isr(cluster: Cluster, topic: str, timeout: float = 60.0) -> None:
    def full():
        states = partition_states(cluster, topic)
        return all(leader > 0 and sorted(replicas) == isr for leader, replicas, isr in states.values())

    wait(cluster, f"every replica of {topic} in sync", full, timeout)


def wait(cluster: Cluster, what: str, check, timeout: float = 30.0):
    """`check()`'s first truthy result within `timeout` (errors from brokers
    restarting under the checks are retried; a FaultTestFailure a check
    raises ends the wait at once, as itself)."""
    failures: list[FaultTestFailure] = []

    def guarded():
        try:
            return check()
        except FaultTestFailure as failure:
            failures.append(failure)
            return True

    result = cluster.wait_until(what, guarded, timeout)
    if failures:
        raise failures[0]
    return result


def wait_acks(workload: Workload, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while workload.acked() < count:
        if time.monotonic() > deadline:
            raise FaultTestFailure(f"only {workload.acked()} of {count} records acknowledged in {timeout:.0f} s")
        time.sleep(0.05)


def acked_ends_of(history: History) -> dict[int, int]:
    """Per partition, one past the last offset acknowledged so far."""
    with history.lock:
        acked = list(history.acked.values())
    ends: dict[int, int] = {}
    for partition, offset in acked:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def finish(report: Report, cluster: Cluster, topic: str, partitions: int, history: History, reads: int = 2) -> Report:
    """Heals, then reads everything back (`reads` times, each through a new
    consumer) and compares every replica's segment files with what was read."""
    for broker in cluster.brokers.values():
        if not broker.is_running():
            broker.start()
    cluster.wait_for_brokers(set(cluster.brokers), timeout=60)
    wait_full_isr(cluster, topic)
    # kafka-python's close() stops waiting after its timeout, but its
    # sender thread may go on: it was seen sending buffered batches to a
    # leader restarted here, acknowledged after the ends to read back to
    # were taken. Read again until no acknowledgement came meanwhile.
    for _ in range(5):
        acked_ends = acked_ends_of(history)
        results = [read_back(cluster.bootstrap, topic, partitions, acked_ends) for _ in range(reads)]
        if acked_ends_of(history) == acked_ends:
            break
    watermarks = {p: (records[-1][0] + 1 if records else 0) for p, records in results[0].items()}
    # Followers may still be fetching the last batches: wait until each
    # replica's log has every offset read before comparing.
    replicas: dict[str, dict[int, bytes]] = {}
    for node_id, broker in cluster.brokers.items():
        for p in range(partitions):
            directory = broker.data_dir / f"{topic}-{p}"
            wanted = [offset for offset, _ in results[0][p]]

            def caught_up(directory=directory, wanted=wanted):
                log = segment_records(directory)
                return log if all(offset in log for offset in wanted) else None

            replicas[f"{node_id}/{p}"] = wait(cluster, f"broker {node_id}'s replica of {topic}-{p} to catch up", caught_up, 30)
    return check(report, history, results, replicas, watermarks)


# ---------------------------------------------------------------------------
# The scenarios


def kill_leader(env: Env) -> Report:
    """1. kill -9 the leader of a partition five times during an acks=all
    produce (RF=3, min.insync.replicas=2), restarting it each time."""
    report = Report("kill-leader")
    cluster = env.cluster()
    topic = unique_topic("faults-kill")
    partitions = 3
    create_topic(cluster, topic, partitions)
    # Acknowledgements before, between and after the kills (six steps: at
    # least 100,000 in the long version). Not a fixed total sent: a failover
    # fails the records queued for the dead leader (retries=0), 3,000 and
    # more at times, and a fixed total could run out before the last kill.
    step = 16_700 if env.long else 1_700
    history = History()
    workload = Workload(cluster.bootstrap, topic, 10**9, rate=4000 if env.long else 1500, history=history).start()
    failovers = []
    for kill in range(5):
        wait_acks(workload, workload.acked() + step)
        victim = leader_of(cluster, topic, 0)
        killed = time.monotonic()
        cluster.brokers[victim].kill9()
        if kill % 2:
            # Restarted only once another leads: failover by session expiry.
            wait(cluster, f"kill {kill}: a new leader", lambda: leader_of(cluster, topic, 0) not in (victim, -1), 30)
            failovers.append(time.monotonic() - killed)
        # Otherwise at once: its new session ends the old one, and it is
        # elected anew (or another is) without waiting for the expiry.
        cluster.brokers[victim].start()
        wait(cluster, f"kill {kill}: partition 0 led again", lambda: leader_of(cluster, topic, 0) > 0, 30)
        wait_full_isr(cluster, topic)
    wait_acks(workload, workload.acked() + step)
    workload.stop()
    report.figures["kills"] = 5
    report.figures["failover_by_expiry_s"] = "/".join(f"{f:.1f}" for f in failovers)
    return finish(report, cluster, topic, partitions, history)


def pause_leader(env: Env) -> Report:
    """2. SIGSTOP the leader for longer than its lease TTL, then SIGCONT: it
    acknowledges nothing once a newer epoch exists; replicas end identical
    (its unreplicated tail truncated)."""
    report = Report("pause-leader")
    cluster = env.cluster()
    topic = unique_topic("faults-pause")
    create_topic(cluster, topic, 1)
    history = History()
    count = 40_000 if env.long else 8_000
    workload = Workload(cluster.bootstrap, topic, count, rate=1000, history=history).start()
    wait_acks(workload, count // 4)
    victim_id = leader_of(cluster, topic)
    victim = cluster.brokers[victim_id]
    before_epoch = _leader_epoch(cluster, topic)
    witness = next(b for i, b in cluster.brokers.items() if i != victim_id)
    victim.pause()
    paused = time.monotonic()
    wait(cluster, "a new leader while the old one is stopped", lambda: leader_of(cluster, topic, 0, witness) not in (victim_id, -1), 30)
    new_leader_at = time.monotonic()
    time.sleep(1.0)
    victim.resume()
    report.figures["new_leader_after_s"] = f"{new_leader_at - paused:.1f}"
    workload.join()
    after_epoch = _leader_epoch(cluster, topic)
    # Everything acknowledged after the new epoch began came from the new leader.
    if after_epoch <= before_epoch:
        raise FaultTestFailure(f"leader epoch did not grow: {before_epoch} → {after_epoch}")
    report.figures["ack_gap_s"] = f"{history.longest_gap(paused, time.monotonic()):.1f}"
    return finish(report, cluster, topic, 1, history)


def _leader_epoch(cluster: Cluster, topic: str, partition: int = 0) -> int:
    from kafka import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        described = client.describe_topics([topic])[0]
        return {p["partition"]: p for p in described["partitions"]}[partition]["leader_epoch"]
    finally:
        client.close()


def isr_shrink_then_kill(env: Env) -> Report:
    """4. Followers stall until the ISR is the leader alone (producers get
    NOT_ENOUGH_REPLICAS, min.insync.replicas=2), then the leader is killed:
    no replica outside the ISR is elected; the partition waits for it."""
    report = Report("isr-shrink-then-kill")
    # Sessions outlast the stall, so that the followers leave the ISR by lag,
    # not by losing their sessions.
    cluster = env.cluster("replica.lag.time.max.ms=1000", session_timeout_ms=8000)
    topic = unique_topic("faults-shrink")
    create_topic(cluster, topic, 1)
    history = History()
    workload = Workload(cluster.bootstrap, topic, 10**9, rate=500, history=history).start()
    wait_acks(workload, 500)
    leader = leader_of(cluster, topic)
    followers = [b for i, b in cluster.brokers.items() if i != leader]
    for broker in followers:
        broker.pause()
    try:
        answering = cluster.brokers[leader]
        wait(cluster, "the ISR to shrink to the leader", lambda: partition_states(cluster, topic, answering)[0][2] == [leader], 20)
        time.sleep(1.5)
        with history.lock:
            refused = history.failed.get("NOT_ENOUGH_REPLICAS", 0) + history.failed.get("NOT_ENOUGH_REPLICAS_AFTER_APPEND", 0)
        if refused == 0:
            raise FaultTestFailure(f"no NOT_ENOUGH_REPLICAS with the ISR at the leader alone: {history.failed}")
        acked_before_kill = workload.acked()
        cluster.brokers[leader].kill9()
    finally:
        for broker in followers:
            broker.resume()
    # The followers are alive but out of sync: none may lead, through the
    # expiry of the dead leader's session and beyond.
    deadline = time.monotonic() + 12
    offline_seen = False
    while time.monotonic() < deadline:
        try:
            state = partition_states(cluster, topic)[0]
        except Exception:  # a resumed broker catching up with etcd
            time.sleep(0.2)
            continue
        if state[0] not in (-1, leader):
            raise FaultTestFailure(f"replica {state[0]} outside the ISR became leader: {state}")
        offline_seen |= state[0] == -1
        time.sleep(0.2)
    if not offline_seen:
        raise FaultTestFailure("the partition never went offline after its only in-sync replica died")
    acked_while_offline = workload.acked() - acked_before_kill
    workload.stop()
    report.figures["not_enough_replicas"] = refused
    report.figures["acked_while_offline"] = acked_while_offline
    if acked_while_offline:
        raise FaultTestFailure(f"{acked_while_offline} records acknowledged with the only in-sync replica dead")
    return finish(report, cluster, topic, 1, history)


def double_failover(env: Env) -> Report:
    """5. Kill the leader, then the new leader as soon as it is elected
    (before the high watermark has reached the others); after both return,
    every replica holds the same records up to the high watermark."""
    report = Report("double-failover")
    cluster = env.cluster()
    topic = unique_topic("faults-double")
    create_topic(cluster, topic, 1)
    history = History()
    workload = Workload(cluster.bootstrap, topic, 10**9, rate=1500, history=history).start()
    wait_acks(workload, 10_000 if env.long else 1500)
    first = leader_of(cluster, topic)
    cluster.brokers[first].kill9()
    second = wait(cluster, "a second leader", lambda: (l := leader_of(cluster, topic)) not in (first, -1) and l, 30)
    cluster.brokers[second].kill9()
    third = wait(cluster, "a third leader", lambda: (l := leader_of(cluster, topic)) not in (first, second, -1) and l, 30)
    report.figures["leaders"] = f"{first}->{second}->{third}"
    time.sleep(1.0)
    cluster.brokers[first].start()
    cluster.brokers[second].start()
    wait_full_isr(cluster, topic)
    wait_acks(workload, workload.acked() + (10_000 if env.long else 1500))
    workload.stop()
    return finish(report, cluster, topic, 1, history)


def etcd_loss(env: Env) -> Report:
    """6. Lose one of three etcd members: the cluster keeps acknowledging.
    Then lose them all: no acknowledged write is lost, and the brokers
    acknowledge again once etcd is back."""
    report = Report("etcd-loss")
    cluster = env.cluster(etcd_members=3)
    etcd: EtcdMembers = cluster.etcd
    topic = unique_topic("faults-etcd")
    create_topic(cluster, topic, 3)
    history = History()
    workload = Workload(cluster.bootstrap, topic, 10**9, rate=1000, history=history).start()
    wait_acks(workload, 1000)
    etcd.kill(etcd.names[0])
    lost_one = time.monotonic()
    acked = workload.acked()
    wait_acks(workload, acked + 3000, timeout=30)
    report.figures["acked_with_one_member_down"] = workload.acked() - acked
    report.figures["ack_gap_one_member_s"] = f"{history.longest_gap(lost_one, time.monotonic()):.1f}"
    etcd.start_member(etcd.names[0])
    etcd.wait_healthy(etcd.names[0])
    for name in etcd.names:
        etcd.kill(name)
    lost_all = time.monotonic()
    time.sleep(6)
    # Two members make a quorum again before all three are healthy: the
    # outage ends when the first is started.
    restarting = time.monotonic()
    for name in etcd.names:
        etcd.start_member(name)
    for name in etcd.names:
        etcd.wait_healthy(name)
    back = time.monotonic()
    acked = workload.acked()
    wait_acks(workload, acked + 1000, timeout=60)
    first_ack = min((t for t, _ in history.ack_times if t > back), default=None)
    report.figures["etcd_down_s"] = f"{back - lost_all:.1f}"
    report.figures["ack_gap_all_down_s"] = f"{history.longest_gap(lost_all, back):.1f}"
    last_ack_without_etcd = max((t for t, _ in history.ack_times if lost_all <= t <= restarting), default=lost_all)
    report.figures["acked_without_etcd_for_s"] = f"{last_ack_without_etcd - lost_all:.1f}"
    # A broker proves its session for the session timeout minus a quarter
    # after its last answered keep-alive; acks in flight may land a little later.
    if last_ack_without_etcd - lost_all > 3.0 + 1.0:
        raise FaultTestFailure(f"acknowledged {last_ack_without_etcd - lost_all:.1f} s after etcd was lost (3 s sessions)")
    report.figures["acks_again_after_s"] = f"{(first_ack or back) - back:.1f}"
    workload.stop()
    return finish(report, cluster, topic, 3, history)


def rolling_restart(env: Env) -> Report:
    """7. Restart every broker in turn under load while a consumer group of
    two reads and commits: nothing acknowledged goes unconsumed, and no
    record is consumed again past its group's committed offset."""
    report = Report("rolling-restart")
    cluster = env.cluster()
    topic = unique_topic("faults-roll")
    partitions = 4
    create_topic(cluster, topic, partitions)
    history = History()
    workload = Workload(cluster.bootstrap, topic, 10**9, rate=800, history=history).start()
    group = unique_topic("roll-group")
    consumers = [GroupReader(cluster.bootstrap, topic, group, name=f"c{i}").start() for i in range(2)]
    wait_acks(workload, 1000)
    rounds = 2 if env.long else 1
    for _ in range(rounds):
        for node_id, broker in cluster.brokers.items():
            broker.stop()
            time.sleep(0.5)
            broker.start()
            cluster.wait_for_brokers(set(cluster.brokers), timeout=60)
            wait_full_isr(cluster, topic)
            acked = workload.acked()
            wait_acks(workload, acked + 500)
    workload.stop()
    expected = {(p, o) for p, o in history.acked.values()}
    wait(cluster, "the group to consume everything acknowledged", lambda: expected <= set().union(*(c.consumed() for c in consumers)), 90)
    for consumer in consumers:
        consumer.stop()
    problems = [p for c in consumers for p in c.problems]
    consumed = sum(c.count for c in consumers)
    report.figures["consumed"] = consumed
    # Records a reader got again, by itself or after the other had them
    # (allowed at or above the committed offset, as Kafka's at-least-once).
    report.figures["redelivered"] = consumed - len(set().union(*(c.consumed() for c in consumers)))
    report.figures["restarts"] = rounds * 3
    report.problems.extend(problems)
    return finish(report, cluster, topic, partitions, history, reads=1)


class GroupReader:
    """A consumer of a group, committing synchronously after every record
    it processes; notes every record consumed again below what its group
    had committed for that partition."""

    def __init__(self, bootstrap: str, topic: str, group: str, name: str):
        from confluent_kafka import Consumer

        self.name = name
        self.topic = topic
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
                "topic.metadata.refresh.interval.ms": 500,
                "log_level": 2,
            }
        )
        self.lock = threading.Lock()
        self.seen: set[tuple[int, int]] = set()
        self.count = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"group-{name}", daemon=True)
        #: Shared across the group's readers: partition → committed offset.
        self.committed = GroupReader.commits.setdefault(group, {})

    commits: dict[str, dict[int, int]] = {}

    def _run(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        self.consumer.subscribe([self.topic])
        while not self._stop.is_set():
            messages = [m for m in self.consumer.consume(500, 0.2) if not m.error()]
            if not messages:
                continue
            ends: dict[int, int] = {}
            with self.lock:
                for message in messages:
                    p, o = message.partition(), message.offset()
                    self.count += 1
                    committed = self.committed.get(p, 0)
                    if o < committed:
                        self.problems.append(f"{self.name} consumed {p}/{o} again below the committed offset {committed}")
                    self.seen.add((p, o))
                    ends[p] = max(ends.get(p, 0), o + 1)
            try:
                self.consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in ends.items()], asynchronous=False)
                with self.lock:
                    for p, o in ends.items():
                        self.committed[p] = max(self.committed.get(p, 0), o)
            except KafkaException:
                pass  # a rebalance or a coordinator move: these may come again
        self.consumer.close()

    def start(self) -> "GroupReader":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)

    def consumed(self) -> set[tuple[int, int]]:
        with self.lock:
            return set(self.seen)



NETNS_ENV = "KBROKER_FAULTS_IN_NETNS"
#: Brokers of the network scenario run as these uids (+ node id), which the
#: iptables rules of its namespace match on.
RUN_AS_BASE = 61000


def network_partition(env: Env) -> Report:
    """3. Cut the leader off from etcd and from its followers but not from
    clients: it stops acknowledging (acks=1, asked directly) within the
    session timeout, a new leader takes over, and after healing nothing
    acknowledged with acks=all is lost and its unreplicated tail is gone.
    Runs in a network namespace of its own (`unshare --net`), where iptables
    tells the brokers apart by the uid each runs as."""
    if os.environ.get(NETNS_ENV) != "1":
        return _in_network_namespace("network-partition", env.long, env.security)
    report = Report("network-partition")
    session_s = 3.0
    cluster = env.cluster(run_as_base=RUN_AS_BASE, session_timeout_ms=int(session_s * 1000))
    topic = unique_topic("faults-net")
    create_topic(cluster, topic, 1)
    history = History()
    count = 30_000 if env.long else 8_000
    workload = Workload(cluster.bootstrap, topic, count, rate=1000, history=history).start()
    wait_acks(workload, 1000)
    leader_id = leader_of(cluster, topic)
    leader = cluster.brokers[leader_id]
    others = {i: b for i, b in cluster.brokers.items() if i != leader_id}
    probe = AcksOneProbe(leader, topic).start()
    time.sleep(0.5)
    etcd: EtcdMembers = cluster.etcd
    blocked_ports = [*etcd.client_ports.values(), *(p for b in others.values() for p in env.inter_broker_ports(b))]
    rules = [
        ["-o", "lo", "-p", "tcp", "-m", "owner", "--uid-owner", str(leader.run_as),
         "-m", "multiport", "--dports", ",".join(map(str, blocked_ports)), "-j", "DROP"],
        *(["-o", "lo", "-p", "tcp", "-m", "owner", "--uid-owner", str(b.run_as),
           "-m", "multiport", "--dports", ",".join(map(str, env.inter_broker_ports(leader))), "-j", "DROP"]
          for b in others.values()),
    ]
    cut = time.monotonic()
    for rule in rules:
        subprocess.run(["iptables", "-A", "OUTPUT", *rule], check=True)
    try:
        witness = next(iter(others.values()))
        new_leader = wait(
            cluster,
            "a new leader, as the other brokers see it",
            lambda: (l := _leader_seen_by(cluster, witness, topic)) not in (leader_id, -1) and l,
            session_s + 20,
        )
        took_over = time.monotonic()
        wait(cluster, "the cut-off leader to refuse", lambda: probe.refused_since(cut), session_s + 10)
    finally:
        probe.stop()
        time.sleep(0.5)
        subprocess.run(["iptables", "-F", "OUTPUT"], check=True)
    last_ack = probe.last_success()
    report.figures["cut_leader_acked_for_s"] = f"{max(0.0, (last_ack or cut) - cut):.2f}"
    report.figures["new_leader_after_s"] = f"{took_over - cut:.1f}"
    report.figures["leaders"] = f"{leader_id}->{new_leader}"
    if last_ack is not None and last_ack - cut > session_s + 1.0:
        raise FaultTestFailure(f"the cut-off leader acknowledged {last_ack - cut:.2f} s after the cut (session {session_s} s)")
    workload.join()
    report.figures["ack_gap_s"] = f"{history.longest_gap(cut, time.monotonic()):.1f}"
    return finish(report, cluster, topic, 1, history)


def _leader_seen_by(cluster: Cluster, broker: Broker, topic: str) -> int:
    partitions = cluster.metadata(broker).topics[topic].partitions
    return partitions[0].leader


def _in_network_namespace(name: str, long: bool, security: str) -> Report:
    """Runs scenario `name` in a child process in a new network namespace
    (its own loopback and iptables, gone with it); its report back."""
    if shutil.which("unshare") is None or shutil.which("iptables") is None:
        raise FaultTestFailure("the network scenario needs `unshare` (util-linux) and `iptables` (apt-get install iptables)")
    cmd = ["unshare", "--net", "--", sys.executable, str(Path(__file__).resolve()), name, "--report-json",
           "--security", security]
    if long:
        cmd.append("--long")
    env = dict(os.environ, **{NETNS_ENV: "1"})
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    for line in done.stdout.splitlines():
        if line.startswith("REPORT "):
            fields = json.loads(line[len("REPORT "):])
            return Report(**fields)
    raise FaultTestFailure(f"{name} in its network namespace failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}")


class AcksOneProbe:
    """Produces one record every 50 ms with acks=1 on a connection straight
    to `broker` (raw Produce v9), noting when each answer came and whether
    it was a success."""

    def __init__(self, broker: Broker, topic: str):
        self.broker = broker
        self.topic = topic
        self.answers: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="acks1-probe", daemon=True)

    def _run(self) -> None:
        import wire

        sent = 0
        while not self._stop.is_set():
            try:
                with wire.Connection(self.broker) as conn:
                    conn.sock.settimeout(2.0)
                    while not self._stop.is_set():
                        batch = wire.record_batch(b"", b"probe-%09d" % sent)
                        sent += 1
                        code = _produce_acks_1(conn, self.topic, batch)
                        self.answers.append((time.monotonic(), code))
                        time.sleep(0.05)
            except (OSError, AssertionError):
                time.sleep(0.1)

    def start(self) -> "AcksOneProbe":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)

    def refused_since(self, since: float) -> bool:
        return any(t > since and code != 0 for t, code in list(self.answers))

    def last_success(self) -> float | None:
        return max((t for t, code in list(self.answers) if code == 0), default=None)


def _produce_acks_1(conn, topic: str, batch: bytes) -> int:
    """Produce v9 (flexible) of one batch to partition 0 with acks=1: its error code."""
    from wire import EMPTY_TAGS, PRODUCE, compact_array, compact_bytes, compact_string, int16, int32

    partition = int32(0) + compact_bytes(batch) + EMPTY_TAGS
    topic_data = compact_string(topic) + compact_array([partition]) + EMPTY_TAGS
    body = compact_string(None) + int16(1) + int32(5_000) + compact_array([topic_data]) + EMPTY_TAGS
    reader = conn.call(PRODUCE, 9, body)
    reader.uvarint()  # topics (one)
    reader.compact_string()
    reader.uvarint()  # partitions (one)
    reader.int32()
    return reader.int16()


SCENARIOS = {
    "kill-leader": kill_leader,
    "pause-leader": pause_leader,
    "network-partition": network_partition,
    "isr-shrink-then-kill": isr_shrink_then_kill,
    "double-failover": double_failover,
    "etcd-loss": etcd_loss,
    "rolling-restart": rolling_restart,
}


def run(name: str, workdir: Path, long: bool = False, security: str = "plaintext") -> Report:
    env = Env(workdir, long, security)
    try:
        return SCENARIOS[name](env)
    finally:
        env.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--long", action="store_true", help="the long versions (100k records, more faults)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, data)")
    parser.add_argument("--security", choices=SECURITIES, default="plaintext",
                        help="how the brokers talk to each other (default: plaintext)")
    parser.add_argument("--report-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.list:
        for name, scenario in SCENARIOS.items():
            print(f"{name}: {scenario.__doc__.split(chr(10))[0]}")
        return 0
    if os.environ.get(NETNS_ENV) == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    failures = 0
    for name in args.scenarios or list(SCENARIOS):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name}; --list shows them")
        workdir = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))
        workdir.chmod(0o755)  # brokers of the network scenario run as other uids
        started = time.monotonic()
        try:
            report = run(name, workdir, args.long, args.security)
        except (Exception, pytest.fail.Exception) as error:  # report, go on with the next
            failures += 1
            print(f"FAIL {name} ({time.monotonic() - started:.0f} s): {error}\n  logs: {workdir}", flush=True)
            continue
        print(f"PASS {report.line()} ({time.monotonic() - started:.0f} s)", flush=True)
        if args.report_json:
            fields = {k: getattr(report, k) for k in ("scenario", "acknowledged", "failed", "read", "lost", "figures", "problems")}
            print("REPORT " + json.dumps(fields), flush=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
