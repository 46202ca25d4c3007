"""One user's session never acts on another's: release, stop, import and concurrent variants."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from explorer.core.errors import InputError
from explorer.core.hooks import edit_input
from explorer.interpret.engine import Interpreter, collect
from explorer.methods.control import Edit, steering_vector
from explorer.methods.session_io import export_session
from explorer.ui.explore import interpret_cells, run_prompt
from explorer.ui.session import AppConfig, ModelRegistry, Session
from explorer.ui.sharing import restore, snapshot

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry(AppConfig())


def scaled_edit(lm, layer: int = 8, factor: float = 3.0) -> Edit:
    """A real edit that changes outputs: block ``layer-1``'s MLP down-projection scaled by ``factor``."""
    params = {k: v.detach().clone() for k, v in lm.arch.mlps[layer - 1].named_parameters()}
    name = next(k for k in params if k.endswith("down_proj.weight") or k.endswith("c_proj.weight"))
    params[name] = params[name] * factor
    return Edit(layer=layer, params=params, meta={"model_id": lm.model_id, "kind": "test"})


def test_release_with_another_sessions_hash_is_refused(registry):
    a, b = Session(), Session()
    run_prompt(registry, a, "default", PROMPT, False)
    run_prompt(registry, b, "default", "Water boils at 100 degrees", False)
    assert registry.bind("hash-a", a) and registry.bind("hash-b", b)
    assert not registry.bind("hash-b", a)  # a connection's session is not replaced by another's
    assert not registry.bind("hash-c", a)  # nor is a session rebound to another connection
    assert registry.release("hash-b", a) is None and registry.release("hash-a", b) is None
    assert registry.release("hash-b", None) is None
    assert a.grid is not None and b.grid is not None
    assert registry.release("hash-b", b) is b and b.grid is None
    assert a.grid is not None


def test_a_twin_built_in_the_first_events_race_gives_way_to_the_real_session(registry):
    """Gradio may build two sessions for one tab when its first events arrive together; the one its
    later events carry (the real one) must end up bound, so closing the tab frees it."""
    held = registry.held_sessions()
    twin, real = Session(), Session()
    assert registry.bind("hash-t", twin)  # the page-load event saw the twin
    run_prompt(registry, real, "default", PROMPT, False)
    assert registry.bind("hash-t", real)  # Run carries the real session: the untouched twin gives way
    assert not registry.bind("hash-t", twin)  # and cannot take the connection back from a used session
    assert registry.release("hash-t", real) is real and real.grid is None
    assert registry.held_sessions() == held
    # The twin still bound when the tab closes (the real session never bound itself): the real one is freed.
    twin2, real2 = Session(), Session()
    assert registry.bind("hash-u", twin2)
    run_prompt(registry, real2, "default", PROMPT, False)
    assert registry.release("hash-u", real2) is real2 and real2.grid is None
    assert registry.held_sessions() == held


def test_a_failed_import_changes_nothing(registry):
    ex = registry.get("default")
    s = Session()
    s.edit = scaled_edit(ex.lm)
    run_prompt(registry, s, "default", PROMPT, False)
    settings = ex.settings("refers_to", max_new_tokens=3)
    list(interpret_cells(registry, s, [(12, 3)], settings, batch_size=1))
    good = json.loads(export_session(snapshot(s)))
    before = (s.model, s.grid, s.results.records(), s.edit, s.settings)

    other_prompt = {**good, "prompt": "A completely different prompt", "edit": None}
    other_prompt["results"] = [{**good["results"][0], "layer": 99}]  # fails after the prompt has run
    bad_edit = {**good, "model": "Default"}
    bad_edit["edit"] = {**good["edit"], "edit_id": "edit-0000000000000000"}
    for broken in (other_prompt, bad_edit):
        with pytest.raises(InputError):
            restore(registry, s, json.dumps(broken))
        assert (s.model, s.grid, s.results.records(), s.edit, s.settings) == before


def _row_job(registry, session, settings, cells, out):
    out["views"] = list(interpret_cells(registry, session, cells, settings, batch_size=1))


def test_a_new_click_keeps_a_pending_stop_and_an_abandoned_click_stops_only_itself(registry):
    ex = registry.get("default")
    s = Session()
    run_prompt(registry, s, "default", PROMPT, False)
    settings = ex.settings("refers_to", max_new_tokens=2)
    row = [(5, t) for t in range(s.grid.n_tokens)]

    # 1. Stop pressed during a row job, then a click: the row job still stops.
    job = interpret_cells(registry, s, row, settings, batch_size=1)
    next(job)
    assert s.stop_jobs() == 1
    click = list(interpret_cells(registry, s, [(20, 2)], settings, batch_size=1))
    assert click[-1].status.startswith("Done")
    rest = list(job)
    assert rest[-1].status.startswith("Stopped")

    # 2. A click abandoned mid-way (its tab let go) does not stop the running row job.
    s2 = Session()
    run_prompt(registry, s2, "default", PROMPT, False)
    job = interpret_cells(registry, s2, [(6, t) for t in range(s2.grid.n_tokens)], settings, batch_size=1)
    next(job)
    click = interpret_cells(registry, s2, [(21, 2)], settings, batch_size=1, focus=(21, 2))
    next(click)
    click.close()
    rest = list(job)
    assert rest[-1].status == f"Done: {s2.grid.n_tokens} of {s2.grid.n_tokens} cells interpreted."
    assert s2.active_jobs == 0


def test_edited_steered_and_stock_readings_of_one_cell_at_once(lm):
    """Three users read the same cell of the same grid at the same time through the shared batcher:
    one with a control edit, one steering, one stock. Each equals its single-user reference, and the
    stock cache entry is the stock reading."""
    registry = ModelRegistry(AppConfig())
    ex = registry.get("default")
    grid = ex.run(PROMPT)
    settings = ex.settings("refers_to", max_new_tokens=6)
    cell = (12, 3)
    edit = scaled_edit(ex.lm)
    delta = 4.0 * steering_vector(ex.lm, "an elephant", "", 6)

    def steering():
        return edit_input(ex.lm.arch.blocks[6], lambda h: h + delta, variant="steer-elephant")

    from explorer.methods.control import applied

    ref = {"stock": collect(Interpreter(ex.lm).iter_cells(grid, [cell], settings))[cell]}
    with applied(ex.lm, edit):
        ref["edited"] = collect(Interpreter(ex.lm).iter_cells(grid, [cell], settings))[cell]
    with steering():
        ref["steered"] = collect(Interpreter(ex.lm).iter_cells(grid, [cell], settings))[cell]
    ids = {k: tuple(v.generated_ids) for k, v in ref.items()}
    assert len(set(ids.values())) == 3  # three different readings

    stock, edited = Session(), Session()
    edited.edit = edit
    for s in (stock, edited):
        s.new_grid(grid)
    got: dict[str, object] = {}
    barrier = threading.Barrier(3)

    def session_user(name, s):
        barrier.wait()
        list(interpret_cells(registry, s, [cell], settings, batch_size=1, focus=cell))
        got[name] = s.results.get(*cell)

    def steering_user():
        barrier.wait()
        with steering():
            got["steered"] = collect(ex.interpreter.iter_cells(grid, [cell], settings))[cell]

    threads = [threading.Thread(target=session_user, args=("stock", stock)),
               threading.Thread(target=session_user, args=("edited", edited)),
               threading.Thread(target=steering_user)]
    [t.start() for t in threads]
    [t.join(300) for t in threads]
    for name in ("stock", "edited", "steered"):
        assert got[name].generated_ids == ref[name].generated_ids, name
        np.testing.assert_allclose(got[name].relevancy_score, ref[name].relevancy_score, atol=1e-4)
    assert got["stock"].variant is None and got["edited"].variant == edit.edit_id
    assert got["steered"].variant == "steer-elephant"
    cached = ex.interpreter.results.get(ex.interpreter._cell_key(grid, *cell, settings))
    assert cached is not None and cached.generated_ids == ref["stock"].generated_ids and cached.variant is None


def test_a_tab_gets_one_session_from_its_first_events():
    """The per-tab state has no page-load event of its own (a callable initial value would get one, and its
    session could replace the one the tab's other first events used); each tab's copy is a new session."""
    import copy

    from explorer.ui.app import build_app

    demo = build_app()
    states = [b for b in demo.blocks.values() if type(b).__name__ == "State"]
    assert len(states) == 1
    state = states[0]
    assert not callable(state.value)
    writers = [d for d in demo.config["dependencies"] if state._id in d["outputs"]]
    # Only a handler that read the state writes it (back, as it was: registering it for its time to live).
    assert len(writers) == 1 and writers[0]["inputs"] == [state._id]
    fn = demo.fns[writers[0]["id"]].fn
    sentinel = Session()
    assert fn(sentinel) is sentinel
    a, b = copy.deepcopy(state.value), copy.deepcopy(state.value)
    assert isinstance(a, Session) and isinstance(b, Session) and a.session_id != b.session_id
    demo.close()
