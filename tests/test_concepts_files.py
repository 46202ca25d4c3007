"""Concept files and example files that are not what we write: each refused with one sentence, at load,
in the API, the command line and the app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.core.errors import InputError
from explorer.core.models import EMBEDDED_ID
from explorer.methods.concepts import Concept, load_with_extra
from explorer.methods.concepts.concept import file_stem
from explorer.methods.concepts.probe import Probe

D = 576  # the embedded model's state size
MODEL = EMBEDDED_ID  # the id the embedded model reports


def _concept(name: str = "neg", layers=(4, 8)) -> Concept:
    rng = np.random.default_rng(0)
    probes = {r: Probe(r, rng.normal(size=D), 0.1, 0.9, 0.95, 1.0, 30.0, 2.0) for r in layers}
    return Concept(name, MODEL, "last", probes, {"probe": "logistic"})


def _rewrite(path, tensors=None, head=None) -> None:
    """Write the concept file again with some tensors or metadata fields replaced (what a crafted file holds)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["explorer_concept"])
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    t.update(tensors or {})
    meta.update(head or {})
    save_file(t, str(path), metadata={"explorer_concept": json.dumps(meta)})


@pytest.mark.parametrize("tensors,head,match", [
    ({"w": torch.full((2, D), float("nan"), dtype=torch.float64)}, None, "not finite"),
    ({"layers": torch.tensor([-5, 8])}, None, "layer -5"),
    (None, {"pooling": "max"}, "pooling 'max'"),
    ({"layers": torch.tensor([], dtype=torch.int64)}, None, "corrupt concept data"),
    (None, {"name": {"a": 1}}, "name that is not a piece of text"),
    (None, {"steer": {}}, "empty or unreadable steering"),
    (None, {"steer": {"mode": "remove", "p0": 0.1, "layers": [999]}}, "layer 999"),
    (None, {"steer": {"mode": "explode", "p0": 0.1, "layers": [4]}}, "mode 'explode'"),
    (None, {"steer": {"mode": "remove", "p0": 5, "layers": [4]}}, "p0 = 5"),
    (None, {"meta": {"layer_choice": {"layers": [12], "p0": 0.1}}}, "layer 12"),
])
def test_crafted_concept_files_are_refused_at_load_with_one_sentence(tmp_path, tensors, head, match):
    path = _concept().save(tmp_path / "c.safetensors")
    _rewrite(path, tensors, head)
    with pytest.raises(InputError, match=match) as err:
        load_with_extra(path)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")  # one sentence


def test_a_good_steer_setting_and_layer_choice_load_and_are_used(tmp_path):
    c = _concept().with_layer_choice([8], 0.05, "a test")
    path = c.save(tmp_path / "c.safetensors", {"steer": {"mode": "add", "p0": 0.9, "layers": [4, 8]}})
    back, extra = load_with_extra(path)
    assert extra["steer"] == {"mode": "add", "p0": 0.9, "layers": [4, 8]}
    assert back.default_layers() == [8] and back.meta["layer_choice"]["p0"] == 0.05
    assert back.target("remove").p0 == 0.05  # the p0 chosen with the layers is the default target
    assert back.target("add").p0 == pytest.approx(0.99) and back.target("remove", k=3).p0 == pytest.approx(1e-3)
    assert _concept().default_layers() == [4, 8]  # no saved choice: the most accurate rows


def test_concept_names_are_cleaned_before_they_name_a_file(tmp_path):
    from explorer.ui.concept_tab import save
    from explorer.ui.session import Session

    for name in ("../../etc/evil", "a/b", "..", "x\\y z"):
        stem = file_stem(name)
        assert "/" not in stem and "\\" not in stem and not stem.startswith(".") and stem
    session = Session()
    session.concepts["../up/../x"] = _concept("../up/../x")
    out = save(session, "../up/../x")
    written = Path(out["value"])
    assert written.is_file() and written.resolve().parent == session.workdir().resolve()
    assert written.name.startswith("concept-") and written.name.endswith("_x.safetensors")
    assert Concept.load(written).name == "../up/../x"  # the name itself is kept, only the file name is cleaned


def _deep_jsonl(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    return deep


def test_a_deeply_nested_jsonl_is_one_sentence_in_the_cli_and_the_app(tmp_path, capsys):
    import gradio as gr

    from explorer.methods.concepts import load_file
    from explorer.tools.cli import main
    from explorer.ui.concept_tab import examples
    from explorer.ui.errors import friendly

    deep = _deep_jsonl(tmp_path)
    with pytest.raises(InputError, match="nests too deeply"):
        load_file(deep)
    assert main(["concept", "train", "--file", str(deep)]) == 2
    err = capsys.readouterr().err
    assert "error: Line 1 of 'deep.jsonl' nests too deeply" in err and "Traceback" not in err
    handler = friendly(lambda: examples("upload CSV/JSONL", "", "", "", "", str(deep)))
    with pytest.raises(gr.Error, match="nests too deeply"):
        handler()


def test_cli_refuses_a_crafted_file_and_colour_prints_no_nan(tmp_path, capsys, lm):
    from explorer.tools.cli import main

    path = _concept().save(tmp_path / "c.safetensors")
    assert main(["concept", "colour", "--load", str(path), "--prompt", "The food was cold"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    lines = out.strip().splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["4", "8"]  # only the rows that have a probe
    _rewrite(path, {"w": torch.full((2, D), float("nan"), dtype=torch.float64)})
    assert main(["concept", "colour", "--load", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not finite" in err and "Traceback" not in err
    _rewrite(path, {"w": torch.ones((2, D), dtype=torch.float64)}, {"steer": {"mode": "explode", "p0": 5,
                                                                              "layers": [999]}})
    assert main(["concept", "steer", "--load", str(path), "--max-new-tokens", "2"]) == 2
    assert "mode 'explode'" in capsys.readouterr().err
