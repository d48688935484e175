"""The docker-compose cluster (docker-compose.yml) on this machine's Docker:
images built locally, three etcd members and three brokers, kcat through the
listeners published on 127.0.0.1, a leader killed and leadership moving, all
records read back. It is `bash scripts/compose.sh test`, run here so that CI
runs it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.timeout(1200)


def test_the_compose_cluster_serves_kcat_and_survives_a_broker(tmp_path):
    for tool in ("docker", "cargo"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: the compose check needs Docker and the Rust toolchain", pytrace=False)
    if shutil.which("docker-compose") is None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode != 0:
        pytest.fail("neither `docker compose` nor `docker-compose` is installed", pytrace=False)
    log = tmp_path / "compose.log"
    # The static broker unoptimised: the release build alone took longer
    # than the rest of this check, and it is what the images run that is
    # checked here, not the broker's speed.
    env = dict(os.environ, KBROKER_COMPOSE_PROFILE="dev")
    with open(log, "wb") as out:
        done = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "compose.sh"), "test"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, timeout=1100, env=env,
        )
    text = log.read_text(errors="replace")
    assert done.returncode == 0, text[-6000:]
    assert "compose cluster check passed" in text
    moved = [line for line in text.splitlines() if " moved from broker" in line]
    assert moved, text[-3000:]
    print(moved[0])


def test_the_secured_compose_cluster_serves_sasl_ssl_with_scram_and_acls(tmp_path):
    """docker-compose.secure.yml: certificates and passwords generated on
    start, SCRAM credentials formatted into etcd, SASL_SSL between brokers
    and for clients, ACLs on. It is `bash scripts/compose.sh secure-test`."""
    for tool in ("docker", "cargo", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: the secured compose check needs it", pytrace=False)
    log = tmp_path / "compose-secure.log"
    env = dict(os.environ, KBROKER_COMPOSE_PROFILE="dev")
    with open(log, "wb") as out:
        done = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "compose.sh"), "secure-test"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, timeout=1100, env=env,
        )
    text = log.read_text(errors="replace")
    assert done.returncode == 0, text[-6000:]
    assert "secured compose cluster check passed" in text
    passwords = [(REPO_ROOT / "docker" / "secure" / name).read_text().strip()
                 for name in ("broker.password", "admin.password")]
    assert not any(password in text for password in passwords), "a password was printed"
