"""Fixtures for the Python end-to-end tests: run the real `kbroker` binary.

A broker gets a free port on 127.0.0.1 and its own data directory:

    kbroker --override listeners=PLAINTEXT://127.0.0.1:PORT
            --override log.dirs=TMP/data --override num.partitions=3
            [--override key=value ...]

Its stdout and stderr go to TMP/broker.log; when a test fails, the tail of
that log is attached to the failure report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 80


def broker_binary() -> Path:
    """`KBROKER_BIN`, else `${CARGO_TARGET_DIR:-target}/debug/kbroker`."""
    explicit = os.environ.get("KBROKER_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "debug" / "kbroker"


def _listen_port_window() -> range:
    """Ports the kernel never picks as the local end of an outgoing
    connection: those below the ephemeral range (`ip_local_port_range`).

    A port taken from the ephemeral range (bind to port 0, then let go) can
    be handed to some client's connection before the broker or etcd binds it
    (or binds it again after a restart), and the start fails with "address
    already in use"; below the range only a process that asks for the port
    by number can take it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = min(max(low, 1024), 65536)
    if low >= 12000:
        return range(10000, low)
    return range(low // 2, low)  # an unusual setting: half of what is below it


_PORT_WINDOW = _listen_port_window()
# Each process starts at a point of its own, so that a run does not reuse
# the ports the previous one left in TIME_WAIT.
_next_port = _PORT_WINDOW.start + (os.getpid() * 7919) % len(_PORT_WINDOW)


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` (a loopback address), free now and outside the
    ephemeral range, never handed out twice by this process."""
    global _next_port
    for _ in range(len(_PORT_WINDOW)):
        port = _next_port
        _next_port = _PORT_WINDOW.start + (port + 1 - _PORT_WINDOW.start) % len(_PORT_WINDOW)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {_PORT_WINDOW.start}-{_PORT_WINDOW.stop - 1}")


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Broker:
    """One `kbroker` process; restartable on the same port and data dir."""

    def __init__(
        self,
        workdir: Path,
        overrides: list[str],
        config_file: Path | None = None,
        host: str = "127.0.0.1",
    ):
        self.binary = broker_binary()
        if not self.binary.exists():
            pytest.fail(
                f"broker binary {self.binary} not found: run `cargo build -p broker` first "
                "(or set KBROKER_BIN)",
                pytrace=False,
            )
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "broker.log"
        self._host = host
        self.port = free_port(host)
        self._ssl_port: int | None = None
        #: The metrics listener's port (metrics.listener), kept across restarts.
        self.metrics_port = free_port(host)
        self.overrides = list(overrides)
        self.config_file = config_file
        self.proc: subprocess.Popen | None = None
        # Exit codes of processes ended on purpose (stop/kill9) are not errors.
        self.expected_exit = False
        self.starts = 0
        #: Run as this uid (the fault suite tells brokers apart by it).
        self.run_as: int | None = None
        #: Environment for the next starts, over the test's own.
        self.env: dict[str, str] = {}

    # -- addresses ---------------------------------------------------------
    @property
    def host(self) -> str:
        return self._host

    @property
    def bootstrap(self) -> str:
        return f"{self._host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._host}:{self.metrics_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "broker is not running"
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [str(self.binary)]
        if self.config_file is not None:
            cmd.append(str(self.config_file))
        cmd += ["--override", f"listeners=PLAINTEXT://{self._host}:{self.port}"]
        cmd += ["--override", f"log.dirs={self.data_dir}"]
        cmd += ["--override", "num.partitions=3"]
        # Its own metrics port: brokers of a test share a host.
        cmd += ["--override", f"metrics.listener=http://{self._host}:{self.metrics_port}"]
        for item in self.overrides:
            # `{host}` and `{port}` are this broker's own (for a `listeners`
            # override that adds listeners to the one the tests connect to),
            # `{ssl_port}` a second port of its own.
            item = item.replace("{host}", self._host).replace("{port}", str(self.port))
            if "{ssl_port}" in item:
                item = item.replace("{ssl_port}", str(self.ssl_port))
            cmd += ["--override", item]
        return cmd

    @property
    def ssl_port(self) -> int:
        """A second port of this broker's, taken on first use and kept."""
        if self._ssl_port is None:
            self._ssl_port = free_port(self._host)
        return self._ssl_port

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.starts += 1
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            if self.run_as is not None:
                self.data_dir.mkdir(exist_ok=True)
                for path in [self.workdir, *self.workdir.rglob("*")]:
                    os.chown(path, self.run_as, self.run_as)
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                user=self.run_as,
            )
        self.expected_exit = False
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            code = self.proc.poll()
            if code is not None:
                pytest.fail(
                    f"broker exited with {code} before listening on {self.bootstrap}:\n{self.log_tail()}",
                    pytrace=False,
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill9()
                pytest.fail(
                    f"broker did not listen on {self.bootstrap} within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.05)

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL after 30 s); returns the exit code."""
        if self.proc is None:
            return 0
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def pause(self) -> None:
        """SIGSTOP: the process stops, its sockets stay open."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        os.kill(self.pid, signal.SIGCONT)

    def kill9(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        if self.proc is None:
            return
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def restart(self, clean: bool = True) -> "Broker":
        """Starts again on the same port and data directory (stopping it first if running)."""
        if self.is_running():
            if clean:
                self.stop()
            else:
                self.kill9()
        return self.start()

    # -- inspection ----------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])

    def rss_bytes(self) -> int:
        """Resident set size of the running broker, from /proc."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def segment_bytes(self, topic: str) -> int:
        """Total size of the `.log` segment files of `topic` (0 if none are found)."""
        total = 0
        for path in self.data_dir.rglob("*.log"):
            if any(part.startswith(f"{topic}-") and part[len(topic) + 1:].isdigit() for part in path.parts):
                total += path.stat().st_size
        return total

    def assert_alive(self) -> None:
        assert self.is_running(), f"broker exited with {self.proc.returncode if self.proc else None}:\n{self.log_tail()}"


# ---------------------------------------------------------------------------
# etcd and clusters


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        pytest.fail("etcd not found: `apt-get install etcd-server` (scripts/test.sh does it)", pytrace=False)
    return path


class Etcd:
    """One etcd member on loopback with its own data directory (a cluster of one)."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1"):
        self.workdir = workdir
        self.host = host
        self.client_port = free_port(host)
        self.peer_port = free_port(host)
        self.log_path = workdir / "etcd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def start(self) -> "Etcd":
        peer = f"http://{self.host}:{self.peer_port}"
        cmd = [
            etcd_binary(),
            "--name", "etcd0",
            "--data-dir", str(self.workdir / "etcd-data"),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"etcd0={peer}",
            "--initial-cluster-state", "new",
            "--log-level", "warn",
            "--logger", "zap",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"etcd exited with {self.proc.returncode}:\n{self.log_path.read_text(errors='replace')[-3000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as answer:
                    if json.load(answer).get("health") == "true":
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"etcd did not become healthy within {START_TIMEOUT_S:.0f} s", pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


#: Short sessions, so that failover tests take seconds: a broker is dead to
#: the cluster 3 s after its last keep-alive.
SESSION_TIMEOUT_MS = 3000
HEARTBEAT_INTERVAL_MS = 500


class Cluster:
    """Brokers with node ids 1..n on 127.0.0.1..n, sharing one etcd under a prefix of their own."""

    def __init__(self, workdir: Path, etcd: Etcd, size: int, overrides: list[str]):
        self.etcd = etcd
        self.prefix = f"/kbroker-test/{uuid.uuid4().hex[:12]}"
        self.brokers: dict[int, Broker] = {}
        for node_id in range(1, size + 1):
            broker_dir = workdir / f"broker{node_id}"
            broker_dir.mkdir()
            self.brokers[node_id] = Broker(
                broker_dir,
                [
                    f"node.id={node_id}",
                    f"etcd.endpoints={etcd.endpoint}",
                    f"etcd.prefix={self.prefix}",
                    f"broker.session.timeout.ms={SESSION_TIMEOUT_MS}",
                    f"broker.heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}",
                ]
                + overrides,
                host=f"127.0.0.{node_id}",
            )

    def start(self) -> "Cluster":
        for broker in self.brokers.values():
            broker.start()
        self.wait_for_brokers(set(self.brokers))
        return self

    def running(self) -> list[Broker]:
        return [b for b in self.brokers.values() if b.is_running()]

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.running())

    def metadata(self, broker: Broker, timeout: float = 5.0):
        """Metadata as `broker` answers it (confluent-kafka's ClusterMetadata)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": broker.bootstrap, "topic.metadata.refresh.interval.ms": 100})
        return admin.list_topics(timeout=timeout)

    def wait_until(self, what: str, check, timeout: float = 30.0):
        """Polls `check()` until it returns something truthy; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                result = check()
                if result:
                    return result
            except Exception as error:  # a broker may be restarting
                last = error
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})", pytrace=False)

    def wait_for_brokers(self, node_ids: set[int], timeout: float = 30.0) -> None:
        """Every running broker lists exactly `node_ids`, and they agree on a controller."""

        def converged():
            controllers = set()
            for broker in self.running():
                metadata = self.metadata(broker)
                if set(metadata.brokers) != node_ids:
                    return False
                controllers.add(metadata.controller_id)
            return len(controllers) == 1 and controllers.pop() in node_ids

        self.wait_until(f"brokers {sorted(node_ids)} to be registered with one controller", converged, timeout)

    def controller(self) -> int:
        return self.metadata(self.running()[0]).controller_id

    def leaders(self, topic: str, broker: Broker | None = None) -> dict[int, int]:
        broker = broker or self.running()[0]
        topic_metadata = self.metadata(broker).topics[topic]
        return {p.id: p.leader for p in topic_metadata.partitions.values()}


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def broker_factory(request, tmp_path):
    """`start(*overrides, config_file=None)` starts a broker with extra `key=value` overrides."""
    brokers: list[Broker] = []
    request.node._kbrokers = brokers

    def start(*overrides: str, config_file: Path | None = None) -> Broker:
        workdir = tmp_path / f"broker{len(brokers)}"
        workdir.mkdir()
        broker = Broker(workdir, list(overrides), config_file=config_file)
        brokers.append(broker)
        return broker.start()

    yield start

    crashed = []
    for broker in brokers:
        if broker.proc is not None and broker.proc.poll() is not None and not broker.expected_exit:
            crashed.append(f"broker on {broker.bootstrap} exited unexpectedly with {broker.proc.returncode}")
        broker.kill9()
    if crashed:
        pytest.fail("; ".join(crashed), pytrace=False)


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A broker with a fresh data directory and the default overrides."""
    return broker_factory()


@pytest.fixture
def etcd(tmp_path):
    """An etcd of its own for the test, on 127.0.0.1."""
    workdir = tmp_path / "etcd"
    workdir.mkdir()
    server = Etcd(workdir).start()
    yield server
    server.stop()


@pytest.fixture
def cluster_factory(request, tmp_path, etcd):
    """`start(size=3, *overrides)` starts brokers 1..size in cluster mode on the test's etcd."""
    clusters: list[Cluster] = []
    request.node._kbrokers = []

    def start(size: int = 3, *overrides: str) -> Cluster:
        workdir = tmp_path / f"cluster{len(clusters)}"
        workdir.mkdir()
        cluster = Cluster(workdir, etcd, size, list(overrides))
        clusters.append(cluster)
        request.node._kbrokers.extend(cluster.brokers.values())
        return cluster.start()

    yield start

    crashed = []
    for cluster in clusters:
        for broker in cluster.brokers.values():
            if broker.proc is not None and broker.proc.poll() is not None and not broker.expected_exit:
                crashed.append(f"broker on {broker.bootstrap} exited unexpectedly with {broker.proc.returncode}")
            if broker.proc is not None and broker.proc.poll() is None:
                try:
                    broker.resume()
                except OSError:
                    pass
            broker.kill9()
    if crashed:
        pytest.fail("; ".join(crashed), pytrace=False)


@pytest.fixture
def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat not found: `apt-get install kcat` (scripts/test.sh does it)", pytrace=False)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for broker in getattr(item, "_kbrokers", []):
            report.sections.append(
                (f"broker log {broker.log_path} (last {LOG_TAIL_LINES} lines)", broker.log_tail())
            )
