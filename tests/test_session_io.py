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
