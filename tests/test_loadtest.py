"""A short version of the load test: one client of each role (click, row, edit and revert, steer, import,
disconnect mid-job) at once; every result equals its single-user reference and nothing is left held."""

from __future__ import annotations

import pytest

from explorer.tools.loadtest import loadtest
from explorer.tools.loadtest_clients import ROLES

pytestmark = pytest.mark.slow


def test_short_loadtest():
    out = loadtest(clients=len(ROLES), n_cells=1, max_new_tokens=5, deadline_s=600, log=lambda m: None)
    assert out["errors"] == 0, out["error_messages"]
    assert out["roles"] == ROLES
    assert out["all_equal"], out["equal_per_client"]
    assert out["clicks"] == len(ROLES)  # one click-to-text latency per client
    assert out["p95_s"] >= out["p50_s"] > 0
    assert out["server_rss_peak_mb"] > out["server_rss_start_mb"] > 0
    assert out["sessions_held_after"] == 0 and out["control_jobs_running_after"] == 0
