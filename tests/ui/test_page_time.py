"""The short version of ``page-time``: one opening of the page in Chromium, each figure printed and real.

Run as its own process, as a user runs it (this test process already drives a browser of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]


def page_time(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.run([sys.executable, "-m", "explorer", "page-time", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_one_timed_opening_prints_its_figures():
    run = page_time("--openings", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout.strip().splitlines()
    assert out[0].startswith("opening 1: gallery grid drawn")
    figures = json.loads(out[-1])
    assert figures["openings"] == 1 and figures["viewport"] == "1366x768"
    for key in ("median_grid_drawn_s", "median_colour_switch_s", "median_run_s"):
        assert 0 < figures[key] < 120  # measured, and each step finished inside its wait
    assert figures["max_grid_drawn_s"] == figures["median_grid_drawn_s"]  # one opening: its own median


def test_no_openings_is_one_sentence():
    run = page_time("--openings", "0")
    assert run.returncode == 2
    assert run.stderr == "error: --openings must be at least 1.\n"
