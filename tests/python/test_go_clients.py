"""End-to-end tests with the Go clients of Debian bookworm, built offline in
GOPATH mode from Debian's packages (scripts/test.sh installs golang-go and
golang-github-shopify-sarama-dev): Sarama 1.22 sends older request
versions than librdkafka or kafka-python, and does not ask ApiVersions
first. The checks are tests/go/sarama (one subcommand each)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, unique_topic

pytestmark = pytest.mark.timeout(180)

GOPATH = Path("/usr/share/gocode")
SARAMA = GOPATH / "src/github.com/Shopify/sarama"


@pytest.fixture(scope="session")
def sarama_check(tmp_path_factory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go not found: `apt-get install golang-go` (scripts/test.sh does it)", pytrace=False)
    if not SARAMA.is_dir():
        pytest.fail(f"{SARAMA} missing: `apt-get install golang-github-shopify-sarama-dev` (scripts/test.sh does it)", pytrace=False)
    out = tmp_path_factory.mktemp("go") / "sarama-check"
    env = dict(os.environ, GO111MODULE="off", GOPATH=str(GOPATH), GOFLAGS="")
    env.setdefault("GOCACHE", str(Path.home() / ".cache/go-build"))
    built = subprocess.run(
        [go, "build", "-o", str(out), "."],
        cwd=REPO_ROOT / "tests/go/sarama",
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert built.returncode == 0, f"building tests/go/sarama failed:\n{built.stderr.decode(errors='replace')}"
    return out


def run_check(binary: Path, broker, check: str) -> str:
    result = subprocess.run(
        [str(binary), "-bootstrap", broker.bootstrap, "-check", check, "-topic", unique_topic(f"sarama-{check}")],
        capture_output=True,
        timeout=150,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"sarama check {check} failed ({result.returncode}):\n{output}"
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


def test_sarama_consumer_group_commits_and_resumes(broker, sarama_check):
    """Sarama's offset manager commits with OffsetCommit v1 (Kafka 3.x
    serves v0-v9; the kafka-protocol crate starts at v2)."""
    out = run_check(sarama_check, broker, "group")
    assert "50 on each of 2 partitions" in out


def test_sarama_group_admin(broker, sarama_check):
    run_check(sarama_check, broker, "group-admin")
