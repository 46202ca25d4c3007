"""Control edits: effective, isolated per context (also concurrently), revertible, saved and loaded."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from explorer.core.errors import EditError, InputError
from explorer.core.grid import capture
from explorer.interpret.engine import Interpreter, collect, make_settings
from explorer.methods.control import (
    Edit,
    Judge,
    TrainSettings,
    applied,
    compare_answers,
    concept_state,
    reinforcement_control,
    steer,
    steering_vector,
    supervised_control,
)

PROMPT = "The Eiffel Tower is in the city of"
LAYER, TOKEN = 10, 3


@pytest.fixture(scope="module")
def edit(lm):
    target = concept_state(lm, "an elephant", LAYER)
    res = supervised_control(lm, PROMPT, LAYER, [TOKEN], target, TrainSettings(steps=15))
    assert res.reduction > 0.6 and res.distances[-1] < res.distances[0]
    return res.edit


def logits(lm, text="The capital of France is"):
    ids = torch.tensor([lm.tokenizer.encode(text)])
    with torch.inference_mode():
        return lm.model(input_ids=ids).logits


def test_edit_changes_the_edited_context_and_reading(lm, edit):
    stock = logits(lm, PROMPT)
    with applied(lm, edit):
        edited = logits(lm, PROMPT)
        grid = capture(lm, PROMPT)
    assert not torch.allclose(stock, edited)
    s = make_settings(lm, "refers_to", max_new_tokens=8)
    reading = collect(Interpreter(lm).iter_cells(grid, [(LAYER, TOKEN)], s))[(LAYER, TOKEN)]
    assert "elephant" in reading.interpretation.lower()
    # rows before the edited block are untouched
    stock_grid = capture(lm, PROMPT)
    assert torch.equal(stock_grid.hidden[:LAYER], grid.hidden[:LAYER])


def test_revert_is_bit_identical(lm, edit):
    before = logits(lm, PROMPT)
    with applied(lm, edit):
        during = logits(lm, PROMPT)
    after = logits(lm, PROMPT)
    assert not torch.allclose(during, before, atol=1e-3)  # the edit really changed the outputs
    assert torch.equal(after, before)  # and reverting restores them bit for bit
    mlp = lm.arch.mlps[edit.layer - 1]
    assert any(not torch.equal(edit.params[k], v) for k, v in mlp.named_parameters())  # new weights...
    private = edit.module(lm)
    assert private is not mlp and all(p.data_ptr() != q.data_ptr() for p, q in zip(private.parameters(),
                                                                                     mlp.parameters()))


def test_edit_id_is_computed_once_and_the_params_are_frozen(lm, edit):
    import hashlib

    h = hashlib.sha1(str(edit.layer).encode())
    for name in sorted(edit.params):
        h.update(name.encode())
        h.update(edit.params[name].to(torch.float32).contiguous().numpy().tobytes())
    assert edit.edit_id == "edit-" + h.hexdigest()[:16]
    with pytest.raises(TypeError):
        edit.params["x"] = torch.zeros(1)  # type: ignore[index]
    with pytest.raises(AttributeError):
        edit.layer = 3


def test_other_contexts_see_the_stock_model_even_concurrently(lm, edit):
    stock = logits(lm, PROMPT)
    with applied(lm, edit):
        edited = logits(lm, PROMPT)
    out: dict[str, list] = {"edited": [], "stock": []}
    start = threading.Barrier(2)

    def editor():
        start.wait()
        with applied(lm, edit):
            for _ in range(4):
                out["edited"].append(logits(lm, PROMPT))

    def other():
        start.wait()
        for _ in range(4):
            out["stock"].append(logits(lm, PROMPT))

    ts = [threading.Thread(target=editor), threading.Thread(target=other)]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    assert all(torch.equal(x, stock) for x in out["stock"])
    assert all(torch.allclose(x, edited, atol=1e-5) for x in out["edited"])


def test_save_and_load_reproduce_outputs(lm, edit, tmp_path):
    path = edit.save(tmp_path / "e.safetensors")
    loaded = Edit.load(path, lm)
    assert loaded.edit_id == edit.edit_id and loaded.layer == LAYER
    assert loaded.meta["kind"] == "supervised" and loaded.meta["model_id"] == lm.model_id
    with applied(lm, edit):
        a = logits(lm, PROMPT)
    with applied(lm, loaded):
        b = logits(lm, PROMPT)
    assert torch.equal(a, b)
    assert path.stat().st_size < 2 * edit.nbytes() + 100_000


def test_bad_edit_files(lm, tmp_path, edit):
    with pytest.raises(EditError, match="does not exist"):
        Edit.load(tmp_path / "none.safetensors", lm)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(EditError):
        Edit.load(junk, lm)
    other = Edit(layer=edit.layer, params=edit.params, meta={**edit.meta, "model_id": "another-model"})
    with pytest.raises(EditError, match="another-model"):
        Edit.load(other.save(tmp_path / "o.safetensors"), lm)


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(steps=-5), dict(steps=10**6), dict(lr=0), dict(lr=-1e-3),
                                    dict(lr=5.0), dict(lr=math.nan), dict(beta=-1)])
def test_bad_settings(kwargs):
    with pytest.raises(InputError):
        TrainSettings(**kwargs).validate()


def test_bad_inputs(lm):
    target = torch.zeros(lm.hidden_size)
    for layer in (0, 31, -1, 2.5):
        with pytest.raises(InputError):
            supervised_control(lm, PROMPT, layer, [1], target)
    with pytest.raises(InputError):
        supervised_control(lm, PROMPT, 5, [99], target)
    with pytest.raises(InputError):
        supervised_control(lm, PROMPT, 5, [1], torch.zeros(3))
    with pytest.raises(InputError, match="empty"):
        concept_state(lm, "  ", 5)
    with pytest.raises(InputError, match="empty"):
        Judge("")


def test_reinforcement_control_reduces_mentions(lm):
    judge = Judge("Paris", ["paris", "france"], mode="keywords")
    res = reinforcement_control(lm, "The Eiffel Tower is a famous landmark in Paris, France", 10, judge,
                                TrainSettings(steps=10, lr=2e-3, beta=0.0))  # the README's setting
    assert len(res.rewards) == 11  # before the first step, then after each of the 10
    assert res.share_after < res.share_before  # fewer readings mention the concept
    assert res.rewards[-1] > res.rewards[0]
    assert 0 <= res.retention_after <= 1 and res.edit.meta["kind"] == "reinforcement"


def test_keyword_judge_scores_mentions(lm):
    judge = Judge("Paris", ["paris", "france"], mode="keywords")
    assert judge.rewards(lm, ["We went to Paris", "a quiet village", "FRANCE is large"]) == [-1, 1, -1]


def test_model_judge_scores(lm):
    judge = Judge("animals", mode="model")
    assert judge.rewards(lm, ["Many animals live in the forest"]) == [-1]  # a mention is always penalised
    yes_no = judge._yes_minus_no(lm, ["a dog and a cat", "the invoice total is forty dollars"])
    assert yes_no[0] > yes_no[1]  # the model's own yes/no ranks an animal text above an invoice


def test_steering_and_answers(lm, edit):
    vec = steering_vector(lm, "love", "hate", 8)
    out = steer(lm, "Write one sentence about my neighbour.", vec, 8, 4.0, max_new_tokens=12)
    assert out["before"] != out["after"]
    same = steer(lm, "Write one sentence about my neighbour.", vec, 8, 0.0, max_new_tokens=12)
    assert same["before"] == same["after"]
    rows = compare_answers(lm, edit, ["What is the Eiffel Tower?"], max_new_tokens=10)
    assert rows[0]["prompt"] == "What is the Eiffel Tower?" and rows[0]["before"]
    with pytest.raises(InputError):
        steer(lm, "x", vec, 8, float("nan"))


def test_control_eval_quick_runs(lm):
    import io

    from explorer.tools.control_eval import evaluate

    buf = io.StringIO()
    rep = evaluate(lm, quick=True, steps=10, out=buf)
    assert rep["supervised_cases"] == 2
    assert all(r["distance_after"] < r["distance_before"] for r in rep["supervised"])
    assert "Reinforcement Control" in buf.getvalue()
