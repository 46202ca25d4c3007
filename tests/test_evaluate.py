"""The evaluation runs end to end on a small sample and its numbers are well-formed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

from explorer.methods.evaluation import (
    DEFAULT_TASK_DIR,
    evaluate_attributes,
    evaluate_token_identity,
    source_text,
)
from explorer.tools.evaluate import add_arguments, run


def test_token_identity_precision(lm):
    frame = evaluate_token_identity(lm, n_positions=30, layers=[0, 15, 30])
    assert list(frame["layer"]) == [0, 15, 30]
    assert frame["positions"].iloc[0] == 30
    last = frame[frame["layer"] == 30].iloc[0]
    assert last["logit_lens"] == 1.0  # the last row's lens is the model's own prediction
    assert (frame["patchscope"].between(0, 1)).all()


def test_source_text_cut_after_subject():
    row = pd.Series({"subject": "United States", "prompt_source": " ancestors came to the United States with William",
                     "source_cropped_toks": "[]"})
    assert source_text(row) == " ancestors came to the United States"
    row = pd.Series({"subject": "Pizza", "prompt_source": "", "source_cropped_toks": "[]"})
    assert source_text(row) == "Pizza"


@pytest.mark.skipif(not DEFAULT_TASK_DIR.is_dir(), reason="the bundled Patchscopes task files are missing")
def test_attributes_and_cli(lm, tmp_path):
    frame = evaluate_attributes(lm, [DEFAULT_TASK_DIR / "country_currency.tsv"], layers=[5, 15], samples=2,
                                candidates=8, max_new_tokens=8, log=lambda m: None)
    assert set(frame["layer"]) == {5, 15} and (frame["baseline_correct"] <= 2).all()
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--quick", "--what", "token_identity", "--out-dir", str(tmp_path)])
    assert run(args) == 0
    assert (tmp_path / "eval_token_identity.csv").is_file()
    html = (Path(tmp_path) / "eval.html").read_text()
    import re

    assert not re.search(r"<script[^>]+src=[\"']https?://", html)  # plotly.js is inline, not from a CDN
    assert "Plotly.newPlot" in html
