"""A short version of the benchmark: every figure the JSON promises is there and sane."""

from __future__ import annotations

import json

import pytest

from explorer.tools.bench import bench, print_table, text_ids

pytestmark = pytest.mark.slow


def test_short_bench(lm, capsys):
    r = bench(lm, quick=True, batch_sizes=[1, 4], lengths=[16, 48], max_new_tokens=6)
    for key in ("cells_per_s", "text_cells_per_s", "bound_cells_per_s", "ratio", "text_ratio", "first_text_ms",
                "cell_ms", "repeat_ms", "grid_forward_ms", "plain_forward_ms", "peak_rss_mb", "by_batch"):
        assert key in r
    assert set(r["by_batch"]) == {"1", "4"} and set(r["grid_forward_ms"]) == {"16", "48"}
    for m in r["by_batch"].values():
        assert m["ratio"] == pytest.approx(m["cells_per_s"] / m["bound_cells_per_s"])
        assert m["cells_per_s"] <= m["text_cells_per_s"] * 1.5  # relevancy costs something, never negative time
    assert r["repeat_ms"] < r["cell_ms"]  # the repeat is served from the cache
    assert 0 < r["first_text_ms"] < r["cell_ms"]
    assert r["relevancy_tree_ms"] > 0 and r["relevancy_padded_ms"] > 0 and r["relevancy_max_diff"] < 1e-4
    print_table(r)
    json.dumps(r)
    assert "grid capture" in capsys.readouterr().out


def test_text_ids_exact_length(lm):
    assert len(text_ids(lm, 16)) == 16 and len(text_ids(lm, 300)) == 300
