"""librdkafka's own regression tests, as its maintainers run them against
Apache Kafka, run against a three-broker cluster of ours (so that their
replication factor 3 topics can be made): idempotent producers (0090),
transactions — produce, commit, abort, fencing, empty transactions, misuse,
consume-transform-produce with send_offsets_to_transaction, read_committed
watermarks (0103) — and read_committed fetches skipping aborted records
(0129). The runner is built from the librdkafka source the rdkafka-sys
crate ships (scripts/librdkafka-tests.sh).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runner_dir() -> Path:
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "librdkafka-tests.sh")], capture_output=True, text=True, timeout=900
    )
    if built.returncode != 0:
        pytest.fail(f"building librdkafka's test runner failed:\n{built.stderr[-3000:]}", pytrace=False)
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("test", ["0090", "0103", "0129"])
def test_librdkafka_regression_test(runner_dir, cluster_factory, tmp_path, test):
    cluster = cluster_factory(3, "default.replication.factor=3", "replica.lag.time.max.ms=2000")
    conf = tmp_path / "test.conf"
    conf.write_text(f"bootstrap.servers={cluster.bootstrap}\ntest.topic.random=true\n")
    env = dict(
        os.environ,
        TESTS=test,
        TEST_KAFKA_VERSION="3.9.0",
        RDKAFKA_TEST_CONF=str(conf),
        LD_LIBRARY_PATH=f"{runner_dir.parent / 'src'}:{runner_dir.parent / 'src-cpp'}",
    )
    result = subprocess.run(
        ["./test-runner"], cwd=runner_dir, env=env, capture_output=True, text=True, timeout=800
    )
    output = result.stdout + result.stderr
    (tmp_path / f"{test}.out").write_text(output)
    summary = [line for line in output.splitlines() if "PASSED" in line or "FAILED" in line or "SKIPPED" in line]
    print("\n".join(summary[-20:]))
    assert result.returncode == 0, f"librdkafka test {test} failed:\n{output[-6000:]}"
    assert f"{test}_" in output and "PASSED" in output
