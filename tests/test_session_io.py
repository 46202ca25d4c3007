"""Session export/import round trip and the 'copy as Python' snippet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from explorer.api import Explorer
from explorer.core.errors import InputError
from explorer.methods.session_io import SessionSnapshot, copy_as_python, export_session, import_session

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def snapshot(lm):
    ex = Explorer(lm)
    grid = ex.run("The Eiffel Tower is in the city of")
    settings = {"template": "refers_to", "n_placeholders": 5, "k": 1, "max_new_tokens": 6, "strength": 1.0,
                "batch_size": 4}
    res = ex.interpret(grid, [(15, 7), (10, 3)], **settings)
    return SessionSnapshot(model="default", prompt=grid.prompt, settings=settings, results=res,
                           provenance=res.provenance)


def test_round_trip_is_identical(snapshot):
    back = import_session(export_session(snapshot))
    assert back.results.records() == snapshot.results.records()
    assert back.settings == snapshot.settings and back.prompt == snapshot.prompt and back.model == "default"
    with pytest.raises(InputError):
        import_session("{not json")
    with pytest.raises(InputError):
        import_session('{"format": "something else"}')


def test_copy_as_python_reproduces_the_table(snapshot):
    code = copy_as_python(snapshot)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    frame = snapshot.results.to_frame(compat=True)
    for text in frame["interpretation"]:
        assert text in out.stdout


def _set(data, path: tuple, value) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _one_sentence(message: str) -> None:
    assert message.endswith(".") and "Traceback" not in message and "\n" not in message, message
    assert len(message) < 300, message


def test_every_number_in_a_session_file_is_checked_against_its_range(snapshot):
    """Before: token ids of 10**12, max_new_tokens 1e18 and the rest below were all accepted."""
    import copy
    import json

    base = json.loads(export_session(snapshot))
    assert {"k", "max_new_tokens", "n_placeholders", "strength"} <= set(base["results"][0])  # per-reading settings
    cases = [
        (("settings", "max_new_tokens"), 1e18, "max new tokens 1e+18 is not a whole number from 1 to 256"),
        (("settings", "max_new_tokens"), 257, "max new tokens 257 is not a whole number from 1 to 256"),
        (("settings", "max_new_tokens"), 0, "max new tokens 0 is not"),
        (("settings", "n_placeholders"), 65, "number of placeholders 65 is not a whole number from 1 to 64"),
        (("settings", "k"), -1, "injection layer k -1 is not"),
        (("settings", "strength"), 5, "injection strength 5 is not a number above 0 and at most 4"),
        (("settings", "strength"), 0, "injection strength 0 is not"),
        (("settings", "batch_size"), 10**9, "batch size 1000000000 is not a whole number from 1 to 256"),
        (("results", 0, "generated_ids", 0), 10**12, "'generated_ids' that are not a list of token ids"),
        (("results", 0, "generated_ids", 0), -1, "'generated_ids' that are not a list of token ids"),
        (("results", 0, "max_new_tokens"), 1e18, "Reading 1 of the session file has settings out of range: max new"),
        (("results", 1, "n_placeholders"), 10**6, "Reading 2 of the session file has settings out of range"),
        (("results", 0, "relevancy_score", 0), 7.5, "outside 0 to 1"),
        (("edit",), {"edit_id": "edit-x", "layer": 10**12}, "edit layer"),
        (("gallery",), {"title": "t", "selected": [10**12, 0]}, "'selected'"),
    ]
    for path, value, words in cases:
        data = copy.deepcopy(base)
        _set(data, path, value)
        with pytest.raises(InputError) as e:
            import_session(json.dumps(data))
        assert words in str(e.value), (path, value, str(e.value))
        _one_sentence(str(e.value))
    edge = copy.deepcopy(base)  # the ends of each range are accepted
    edge["settings"].update(max_new_tokens=256, n_placeholders=64, k=0, strength=4.0, batch_size=256)
    edge["results"][0].update(max_new_tokens=1, n_placeholders=1, relevancy_score=[0.0, 1.0])
    back = import_session(json.dumps(edge))
    assert back.settings["max_new_tokens"] == 256 and back.results.cells[0].relevancy_score == [0.0, 1.0]
    with pytest.raises(InputError, match="not JSON"):
        import_session("[" * 100_000 + "]" * 100_000)


def test_an_import_checks_token_ids_and_k_against_the_model_it_names(snapshot, lm):
    """Token ids must lie in the named model's vocabulary and k among its layers; a refused file leaves the
    session as it was."""
    import copy
    import json

    from explorer.ui.session import AppConfig, ModelRegistry, Session
    from explorer.ui.sharing import restore

    registry = ModelRegistry(AppConfig())
    vocab, n_layers = len(lm.tokenizer), lm.n_layers
    base = json.loads(export_session(snapshot))
    cases = [
        (("results", 1, "generated_ids", 0), vocab, f"token id {vocab}, outside this model's vocabulary of {vocab}"),
        (("settings", "k"), n_layers, f"settings use injection layer k {n_layers}, but this model takes k from 0 "
                                      f"to {n_layers - 1}"),
        (("results", 0, "k"), n_layers + 5, f"uses injection layer k {n_layers + 5}"),
    ]
    for path, value, words in cases:
        data = copy.deepcopy(base)
        _set(data, path, value)
        import_session(json.dumps(data))  # within the file's own bounds: only the model refuses it
        session = Session()
        with pytest.raises(InputError) as e:
            restore(registry, session, json.dumps(data))
        assert words in str(e.value), str(e.value)
        _one_sentence(str(e.value))
        assert session.grid is None and session.results is None
    edge = copy.deepcopy(base)
    edge["results"][1]["generated_ids"][0] = vocab - 1
    edge["settings"]["k"] = n_layers - 1
    session = Session()
    view = restore(registry, session, json.dumps(edge))
    assert view.status.startswith("Imported 2 results")
    cell = edge["results"][1]["layer"], edge["results"][1]["token"]
    assert session.results.get(*cell).generated_ids[0] == vocab - 1
