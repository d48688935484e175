"""The fault suite, short versions: each scenario of `faults.py` against a
fresh cluster (three brokers, its own etcd), its checker's report printed;
the core ones again with the brokers talking to each other over SASL_SSL
(TLS 1.3 and SCRAM-SHA-512, ACLs on).
Long versions: `.venv/bin/python tests/python/faults.py --long`."""

from __future__ import annotations

import re

import pytest

import faults

ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.timeout(300)

#: Run again with SASL_SSL between brokers: replication through two
#: leader kills in a row, a cut network and a rolling restart
#: (`faults.py --security sasl_ssl` runs any other, kill-leader included).
OVER_SASL_SSL = ["network-partition", "double-failover", "rolling-restart"]


def run_scenario(scenario: str, security: str, tmp_path, request) -> "faults.Report":
    env = faults.Env(tmp_path, long=False, security=security)
    request.node._kbrokers = []
    try:
        # Broker logs go into the failure report (conftest's hook).
        original = env.cluster

        def cluster(*args, **kwargs):
            made = original(*args, **kwargs)
            request.node._kbrokers.extend(made.brokers.values())
            return made

        env.cluster = cluster
        report = faults.SCENARIOS[scenario](env)
    finally:
        env.close()
    print(report.line())
    assert report.lost == 0 and not report.problems, report.line()
    assert report.acknowledged > 0
    return report


@pytest.mark.parametrize("scenario", list(faults.SCENARIOS))
def test_fault_scenario(scenario, tmp_path, request):
    run_scenario(scenario, "plaintext", tmp_path, request)


@pytest.mark.parametrize("scenario", OVER_SASL_SSL)
def test_fault_scenario_with_sasl_ssl_between_brokers(scenario, tmp_path, request):
    run_scenario(scenario, "sasl_ssl", tmp_path, request)
    if scenario == "network-partition":
        return  # its brokers ran in a child process, in a namespace of their own
    # Leadership moved through every broker: each was fetched from through
    # its SASL_SSL listener (the only one a broker looks for others on),
    # authenticated with SCRAM, and no broker was refused along the way.
    for broker in request.node._kbrokers:
        log = ANSI.sub("", broker.log_text())
        authenticated = [line for line in log.splitlines()
                         if 'listener="SASL_SSL"' in line and "SASL authenticated" in line]
        assert any('principal=User:broker mechanism="SCRAM-SHA-512"' in line for line in authenticated), \
            f"{broker.workdir.name} never authenticated another broker over SASL_SSL"
        assert "authentication failed" not in log and "TLS handshake failed" not in log
        printed = "\n".join(line for line in log.splitlines() if not line.startswith("==== start"))
        assert faults.BROKER_PASSWORD not in printed
