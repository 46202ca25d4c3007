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
    assert data["provenance"]["model_id"] == "SmolLM2-135M-Instruct-Q4_1"
    assert data["provenance"]["weights"].startswith("GGUF Q4_1")
    assert data["provenance"]["k"] == 1 and data["provenance"]["max_new_tokens"] == 6
    back = InterpretationSet.from_json(text)
    assert back.records() == results.records()
    frame = pd.read_csv(io.StringIO(results.to_csv(tmp_path / "r.csv")))
    assert len(frame) == 2 and json.loads(frame["relevancy_score"][0]) == results.records()[0]["relevancy_score"]
    assert "explorer_version" in frame.columns


def test_each_reading_carries_the_variant_that_made_it(lm, tmp_path):
    """Readings before and after an edit in one table: every export says per row which model made it."""
    from explorer.methods.control import Edit, applied
    from explorer.methods.session_io import SessionSnapshot, export_session, import_session

    ex = Explorer(lm)
    grid = ex.run("The Eiffel Tower is in the city of")
    params = {k: v.detach().clone() * (3.0 if k.endswith("down_proj.weight") else 1.0)
              for k, v in lm.arch.mlps[7].named_parameters()}
    edit = Edit(layer=8, params=params)
    table = ex.interpret(grid, "15:7", max_new_tokens=4)
    with applied(lm, edit):
        for cell in ex.interpret(grid, "10:3", max_new_tokens=4).cells:
            table.add(cell)
    want = [edit.edit_id, None]  # sorted by layer: 10:3 (edited), 15:7 (stock)
    assert [r["variant"] for r in table.records()] == want
    assert list(table.to_frame()["variant"]) == want
    csv = pd.read_csv(io.StringIO(table.to_csv()), keep_default_na=False)
    assert list(csv["variant"]) == [edit.edit_id, ""] and set(csv["grid_edit_id"]) == {""}
    parquet = pd.read_parquet(table.to_parquet(tmp_path / "r.parquet"))
    assert [v if isinstance(v, str) else None for v in parquet["variant"]] == want
    assert list(parquet["token_texts"].map(list)) == [r["token_texts"] for r in table.records()]
    back = InterpretationSet.from_json(table.to_json())
    assert [c.variant for c in sorted(back.cells, key=lambda c: c.layer)] == want
    snap = import_session(export_session(SessionSnapshot(model="default", prompt=grid.prompt, results=table)))
    assert [r["variant"] for r in snap.results.records()] == want
