"""The short version of ``page-time``: one opening of the page in Chromium, each figure printed and real."""

from __future__ import annotations

import json

import pytest

from explorer.tools.cli import main

pytestmark = pytest.mark.browser


def test_one_timed_opening_prints_its_figures(capsys):
    assert main(["page-time", "--openings", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("opening 1: gallery grid drawn")
    figures = json.loads(out[-1])
    assert figures["openings"] == 1 and figures["viewport"] == "1366x768"
    for key in ("median_grid_drawn_s", "median_colour_switch_s", "median_run_s"):
        assert 0 < figures[key] < 120  # measured, and each step finished inside its wait
    assert figures["max_grid_drawn_s"] == figures["median_grid_drawn_s"]  # one opening: its own median


def test_no_openings_is_one_sentence(capsys):
    assert main(["page-time", "--openings", "0"]) == 2
    assert capsys.readouterr().err == "error: --openings must be at least 1.\n"
