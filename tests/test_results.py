"""Results serialise to the original interpret() columns, CSV and JSON, and round-trip."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from explorer.api import Explorer
from explorer.core.results import COMPAT_COLUMNS, InterpretationSet


@pytest.fixture(scope="module")
def results(lm):
    ex = Explorer(lm)
    grid = ex.run("The Eiffel Tower is in the city of")
    return ex.interpret(grid, "15:7,10:3", max_new_tokens=6)


def test_compat_view_has_the_original_columns(results):
    frame = results.to_frame(compat=True)
    assert list(frame.columns) == COMPAT_COLUMNS
    assert len(frame) == 2 and set(frame["layer"]) == {15, 10}
    assert all(isinstance(v, list) for v in frame["relevancy_score"])


def test_json_and_csv_round_trip(results, tmp_path):
    text = results.to_json(tmp_path / "r.json", with_provenance=True)
    data = json.loads(text)
    assert data["provenance"]["model_id"] == "SmolLM2-135M-Instruct"
    assert data["provenance"]["k"] == 1 and data["provenance"]["max_new_tokens"] == 6
    back = InterpretationSet.from_json(text)
    assert back.records() == results.records()
    frame = pd.read_csv(io.StringIO(results.to_csv(tmp_path / "r.csv")))
    assert len(frame) == 2 and json.loads(frame["relevancy_score"][0]) == results.records()[0]["relevancy_score"]
    assert "explorer_version" in frame.columns
