"""The fault suite, short versions: each scenario of `faults.py` against a
fresh cluster (three brokers, its own etcd), its checker's report printed.
Long versions: `.venv/bin/python tests/python/faults.py --long`."""

from __future__ import annotations

import pytest

import faults

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("scenario", list(faults.SCENARIOS))
def test_fault_scenario(scenario, tmp_path, request):
    env = faults.Env(tmp_path, long=False)
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
