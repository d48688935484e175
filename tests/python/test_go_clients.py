"""End-to-end tests with the Go clients of Debian bookworm, built offline in
GOPATH mode from Debian's packages (scripts/test.sh installs golang-go,
golang-github-shopify-sarama-dev and golang-github-segmentio-kafka-go-dev).
Neither asks ApiVersions first. Sarama 1.22 sends older request versions
than librdkafka or kafka-python (OffsetCommit v1, DescribeConfigs v0);
kafka-go 0.2.1 speaks Kafka 0.10's protocol (CreateTopics v0, Produce v2
and Fetch v2 with message sets of magic 1). The checks are tests/go/sarama
and tests/go/kafkago, one subcommand each."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port, unique_topic
from test_tls import certs  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(180)

GOPATH = Path("/usr/share/gocode")
SARAMA = GOPATH / "src/github.com/Shopify/sarama"
KAFKA_GO = GOPATH / "src/github.com/segmentio/kafka-go"


def build(tmp_path_factory, program: str, package_dir: Path, package: str) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go not found: `apt-get install golang-go` (scripts/test.sh does it)", pytrace=False)
    if not package_dir.is_dir():
        pytest.fail(f"{package_dir} missing: `apt-get install {package}` (scripts/test.sh does it)", pytrace=False)
    out = tmp_path_factory.mktemp("go") / f"{program}-check"
    env = dict(os.environ, GO111MODULE="off", GOPATH=str(GOPATH), GOFLAGS="")
    env.setdefault("GOCACHE", str(Path.home() / ".cache/go-build"))
    built = subprocess.run(
        [go, "build", "-o", str(out), "."],
        cwd=REPO_ROOT / "tests/go" / program,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert built.returncode == 0, f"building tests/go/{program} failed:\n{built.stderr.decode(errors='replace')}"
    return out


@pytest.fixture(scope="session")
def sarama_check(tmp_path_factory) -> Path:
    return build(tmp_path_factory, "sarama", SARAMA, "golang-github-shopify-sarama-dev")


@pytest.fixture(scope="session")
def kafkago_check(tmp_path_factory) -> Path:
    return build(tmp_path_factory, "kafkago", KAFKA_GO, "golang-github-segmentio-kafka-go-dev")


def run_check(binary: Path, broker, check: str, *extra: str) -> str:
    result = subprocess.run(
        [str(binary), "-bootstrap", broker.bootstrap, "-check", check, "-topic", unique_topic(f"go-{check}"), *extra],
        capture_output=True,
        timeout=150,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"{binary.name} {check} failed ({result.returncode}):\n{output}"
    return output


def test_sarama_metadata_and_offsets(broker, sarama_check):
    out = run_check(sarama_check, broker, "metadata")
    assert "DescribeCluster: 1 brokers" in out


def test_sarama_admin_topics_and_configs(broker, sarama_check):
    """CreateTopic, ListTopics (Metadata + DescribeConfigs v0), DescribeTopics,
    DescribeConfig / AlterConfig, CreatePartitions, DeleteTopic twice."""
    run_check(sarama_check, broker, "admin")


def test_sarama_every_codec(broker, sarama_check):
    out = run_check(sarama_check, broker, "codecs")
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        assert f"{codec}: 200 records produced and read back" in out


def test_sarama_told_kafka_0_10_uses_message_sets(broker, sarama_check):
    """Told it talks to Kafka 0.10.2, Sarama produces with Produce v2
    (messages of magic 1) and fetches with Fetch v3: converted both ways."""
    out = run_check(sarama_check, broker, "codecs", "-kafka-version", "0.10.2.0")
    for codec in ("none", "gzip", "snappy", "lz4"):
        assert f"{codec}: 200 records produced and read back" in out
    assert "zstd" not in out


def test_sarama_consumer_group_commits_and_resumes(broker, sarama_check):
    """Sarama's offset manager commits with OffsetCommit v1 (Kafka 3.x
    serves v0-v9; the kafka-protocol crate starts at v2)."""
    out = run_check(sarama_check, broker, "group")
    assert "50 on each of 2 partitions" in out


def test_sarama_group_admin(broker, sarama_check):
    run_check(sarama_check, broker, "group-admin")


def test_sarama_idempotent_producer(broker, sarama_check):
    """Sarama's idempotent producer (it crashed on the closed connection
    while InitProducerId was not implemented): 500 records acknowledged at
    consecutive offsets and read back in order."""
    out = run_check(sarama_check, broker, "idempotent")
    assert "500 records written once each, in order" in out


def test_kafka_go_topics(broker, kafkago_check):
    """CreateTopics v0 (twice: kafka-go takes TOPIC_ALREADY_EXISTS as done),
    Metadata v1, DeleteTopics v1."""
    run_check(kafkago_check, broker, "topics")


def test_kafka_go_produce_consume_every_codec(broker, kafkago_check):
    """Produce v2 and Fetch v2: message sets of magic 1, up-converted into
    record batches and down-converted back."""
    out = run_check(kafkago_check, broker, "produce-consume")
    for codec in ("none", "gzip", "snappy", "lz4"):
        assert f"{codec}: 300 messages written and read back" in out


def test_kafka_go_consumer_group_commits_and_resumes(broker, kafkago_check):
    out = run_check(kafkago_check, broker, "group")
    assert "resumed at offset 20" in out



def test_sarama_over_ssl_and_sasl_ssl_with_scram_and_plain(broker_factory, certs, sarama_check):  # noqa: F811
    """Sarama 1.22 over TLS (SSL) and SASL_SSL with SCRAM-SHA-512 (an RFC
    5802 client in the check: Sarama leaves SCRAM to its user) and PLAIN:
    every codec produced and read back over each."""
    from confluent_kafka.admin import AdminClient, ScramMechanism
    from test_scram import upsert
    from test_sasl import ALICE_PASSWORD, JAAS
    ssl_port, sasl_port = free_port(), free_port()
    broker = broker_factory(
        f"listeners=PLAINTEXT://{{host}}:{{port}},SSL://127.0.0.1:{ssl_port},SASL_SSL://127.0.0.1:{sasl_port}",
        "ssl.keystore.type=PEM", f"ssl.keystore.location={certs / 'keystore.pem'}",
        "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
        f"listener.name.sasl_ssl.plain.sasl.jaas.config={JAAS}",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    upsert(admin, "carol", "carol-secret", ScramMechanism.SCRAM_SHA_512)
    ca = str(certs / "ca.pem")

    class At:
        def __init__(self, port: int):
            self.bootstrap = f"127.0.0.1:{port}"

    out = run_check(sarama_check, At(ssl_port), "codecs", "-tls-ca", ca)
    assert "zstd: 200 records produced and read back" in out
    out = run_check(sarama_check, At(sasl_port), "codecs", "-tls-ca", ca, "-sasl-mechanism", "SCRAM-SHA-512",
                    "-user", "carol", "-password", "carol-secret")
    assert "zstd: 200 records produced and read back" in out
    out = run_check(sarama_check, At(sasl_port), "codecs", "-tls-ca", ca, "-sasl-mechanism", "PLAIN",
                    "-user", "alice", "-password", ALICE_PASSWORD)
    assert "none: 200 records produced and read back" in out
    # A wrong password: Sarama fails to connect.
    with pytest.raises(AssertionError):
        run_check(sarama_check, At(sasl_port), "metadata", "-tls-ca", ca, "-sasl-mechanism", "SCRAM-SHA-512",
                  "-user", "carol", "-password", "wrong")
