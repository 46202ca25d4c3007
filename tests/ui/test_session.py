"""Sessions on the shared model: their cache share, their memory budget, and closing a tab."""

from __future__ import annotations

from explorer.ui.explore import interpret_cells, run_prompt
from explorer.ui.session import AppConfig, ModelRegistry, Session


def drain(it) -> None:
    for _ in it:
        pass


def test_a_sessions_readings_are_charged_to_it_and_freed_when_it_closes():
    registry = ModelRegistry(AppConfig(session_cache_mb=1))
    ex = registry.get("default")
    a, b = Session(), Session()
    run_prompt(registry, a, "default", "The Eiffel Tower is in Paris", False)
    run_prompt(registry, b, "default", "Water boils at 100 degrees", False)
    settings = ex.settings("refers_to", max_new_tokens=4)
    drain(interpret_cells(registry, a, [(10, 2), (12, 3)], settings, batch_size=2))
    drain(interpret_cells(registry, b, [(8, 1)], settings, batch_size=1))
    cache = ex.interpreter.results
    assert cache.owner_bytes(a.session_id) > 0 and cache.owner_bytes(b.session_id) > 0
    assert cache.max_bytes_per_owner == 2**20
    n_before = len(cache)
    registry.forget_session(a)
    a.close()
    assert cache.owner_bytes(a.session_id) == 0 and len(cache) == n_before - 2
    assert cache.owner_bytes(b.session_id) > 0  # the other user's readings stay cached
    assert a.grid is None and a.results is None and b.grid is not None


def test_the_global_budget_drops_the_longest_idle_grid_first():
    registry = ModelRegistry(AppConfig())
    sessions = [Session() for _ in range(3)]
    for i, s in enumerate(sessions):
        run_prompt(registry, s, "default", f"Session number {i} writes a fairly ordinary sentence here", False)
    one = sessions[0].nbytes()
    registry.budget.max_bytes = int(2.5 * one)
    newest = Session()
    run_prompt(registry, newest, "default", "A newcomer arrives with a prompt of the same size, more or less", False)
    assert sessions[0].grid is None  # idle longest: dropped, its user is asked to run again
    assert newest.grid is not None and sessions[2].grid is not None
    assert registry.budget.total_bytes() <= registry.budget.max_bytes


def test_cross_model_reading_maps_a_row_and_explains_bad_input(tiny):
    import pytest

    from explorer.api import Explorer
    from explorer.core.errors import InputError
    from explorer.ui.study_tabs import cross_read

    registry = ModelRegistry(AppConfig())
    s = Session()
    with pytest.raises(InputError, match="Run a prompt first"):
        cross_read(registry, s, "default", 10, None, "", 6)
    run_prompt(registry, s, "default", "The Eiffel Tower is in Paris", False)
    summary, table = cross_read(registry, s, "default", 12, None, "2,4", 6)
    assert list(table["token"]) == [2, 4]
    assert "layer 12 of **default** to layer 12" in summary and "held-out" in summary
    assert all(isinstance(t, str) and t for t in table.iloc[:, 3])  # the mapped readings are text
    # the same layer of the same model is (close to) the identity map: the readings are the model's own
    assert registry.cross_reader("default", "default").map(12, 12).r2_heldout > 0.95
    _, row = cross_read(registry, s, "default", 12, "", "", 6)
    assert len(row) == 7 and (row.iloc[:, 2] == row.iloc[:, 3]).sum() >= 5
    with pytest.raises(InputError, match="Token positions"):
        cross_read(registry, s, "default", 12, None, "99", 6)
    with pytest.raises(InputError, match="source layer"):
        cross_read(registry, s, "default", 40, None, "", 6)
    # another architecture and width (GPT-2, d=64) with the same tokenizer reads through its own map
    registry._explorers["tiny-gpt2"] = Explorer(tiny("gpt2"))
    summary, table = cross_read(registry, s, "tiny-gpt2", 12, None, "3", 4)
    assert "to layer 1 of **tiny-gpt2**" in summary and len(table) == 1  # 12/30 of 3 blocks -> layer 1
    assert registry.cross_reader("default", "tiny-gpt2").map(12, 1).weight.shape == (576, 64)
    registry._explorers["words"] = Explorer(word_level_model(tiny("llama")))
    with pytest.raises(InputError, match="tokenise the text differently"):
        cross_read(registry, s, "words", 12, None, "2", 6)


def word_level_model(base):
    """A model whose (real, word-level) tokenizer splits text unlike the default's."""
    import dataclasses

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1, "a": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    return dataclasses.replace(base, tokenizer=PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]"),
                               model_id="words")


def test_a_shared_session_carries_its_control_edit(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    import pytest
    import torch

    from explorer.core.errors import InputError
    from explorer.methods.control import TrainSettings, concept_state, supervised_control
    from explorer.methods.session_io import copy_as_python, export_session
    from explorer.ui.sharing import restore, snapshot

    registry = ModelRegistry(AppConfig())
    ex = registry.get("default")
    prompt = "The Eiffel Tower is in the city of"
    edit = supervised_control(ex.lm, prompt, 10, [3], concept_state(ex.lm, "an elephant", 10),
                              TrainSettings(steps=3)).edit
    plain, a, b = Session(), Session(), Session()
    run_prompt(registry, plain, "default", prompt, False)
    a.edit = edit
    run_prompt(registry, a, "default", prompt, False)
    assert not torch.equal(a.grid.hidden[12], plain.grid.hidden[12])  # the edit is in a's grid
    settings = ex.settings("refers_to", max_new_tokens=5)
    drain(interpret_cells(registry, a, [(12, 3), (20, 7)], settings, batch_size=2))
    text = export_session(snapshot(a))

    view = restore(registry, b, text)
    assert "control edit" in view.status and b.edit.edit_id == a.edit.edit_id
    assert torch.equal(b.grid.hidden, a.grid.hidden)
    assert b.results.records() == a.results.records()
    drain(interpret_cells(registry, b, [(15, 3)], settings, batch_size=1))
    drain(interpret_cells(registry, a, [(15, 3)], settings, batch_size=1))
    assert b.results.get(15, 3).interpretation == a.results.get(15, 3).interpretation

    damaged = json.loads(text)
    damaged["edit"]["safetensors_base64"] = damaged["edit"]["safetensors_base64"][:-40] + "A" * 40
    with pytest.raises(InputError, match="control edit"):
        restore(registry, Session(), json.dumps(damaged))
    empty_prompt = {**json.loads(text), "prompt": "   "}
    untouched = Session()
    with pytest.raises(InputError):
        restore(registry, untouched, json.dumps(empty_prompt))
    assert untouched.edit is None and untouched.grid is None  # a failed import leaves the session as it was

    # "Copy as Python" loads the edit from the exported file and reproduces the table.
    (tmp_path / "selfie_session.json").write_text(text, encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", copy_as_python(snapshot(a))], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    for cell in a.results.cells:
        assert cell.interpretation in out.stdout
