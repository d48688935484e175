"""librdkafka's own regression tests, as its maintainers run them against
Apache Kafka, run against a three-broker cluster of ours (so that their
replication factor 3 topics can be made): idempotent producers (0090),
transactions — produce, commit, abort, fencing, empty transactions, misuse,
consume-transform-produce with send_offsets_to_transaction, read_committed
watermarks (0103) — and read_committed fetches skipping aborted records
(0129); and from its admin test (0081) the ACL sub-tests (CreateAcls,
DescribeAcls, DeleteAcls, against brokers with the authorizer on) and the
SCRAM credential sub-tests (Describe/AlterUserScramCredentials). The runner
is built from the librdkafka source the rdkafka-sys crate ships
(scripts/librdkafka-tests.sh).
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


#: Brokers with the built-in authorizer on; the runner connects as
#: User:ANONYMOUS over PLAINTEXT, let in where no ACL names a resource.
AUTHORIZER = [
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found=true",
]


@pytest.mark.parametrize(
    "test, subtests, overrides",
    [
        ("0090", None, []),
        ("0103", None, []),
        ("0129", None, []),
        # Sub-tests are chosen by a substring of their function's name.
        ("0081", "Acls", AUTHORIZER),
        # One of its three SCRAM sub-tests (each sleeps 10 s in librdkafka).
        ("0081", "main queue, null bytes: false", []),
    ],
    ids=["0090", "0103", "0129", "0081-acls", "0081-scram-credentials"],
)
def test_librdkafka_regression_test(runner_dir, cluster_factory, tmp_path, test, subtests, overrides):
    cluster = cluster_factory(3, "default.replication.factor=3", "replica.lag.time.max.ms=2000", *overrides)
    conf = tmp_path / "test.conf"
    conf.write_text(f"bootstrap.servers={cluster.bootstrap}\ntest.topic.random=true\n")
    env = dict(
        os.environ,
        TESTS=test,
        **({"SUBTESTS": subtests} if subtests else {}),
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
    if subtests:
        # The sub-tests chosen ran (a name that matches none runs nothing).
        ran = [line for line in output.splitlines() if "[ do_test_" in line and subtests in line and ": PASS (" in line]
        assert ran, f"no {subtests} sub-test of {test} passed:\n{output[-3000:]}"
        print(f"{len(ran)} {subtests} sub-tests passed")
