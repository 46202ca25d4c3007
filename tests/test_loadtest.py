"""A short version of the load test: concurrent clients, one with an edit, results equal single-user ones."""

from __future__ import annotations

import pytest

from explorer.tools.loadtest import loadtest

pytestmark = pytest.mark.slow


def test_short_loadtest():
    out = loadtest(clients=3, n_cells=2, max_new_tokens=5, deadline_s=400, log=lambda m: None)
    assert out["errors"] == 0, out["error_messages"]
    assert out["all_equal"], out["equal_per_client"]
    assert out["requests"] >= 3 * 2 and out["p95_s"] >= out["p50_s"] > 0
