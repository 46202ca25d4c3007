"""Many users of four model variants share the engine while some stop or leave: nobody else notices.

Each user is a real app session (its own edit or steering) reading overlapping cells through
``interpret_cells``, as the web app does. In every round some users press Stop after their first
reading and some close their job (a tab that left); the rest must get every cell exactly as a
single user with the same model state gets it alone, and every thread must end before a deadline.
The plan is drawn from a fixed seed and the test also checks that stops really happened inside
shared batches, so it cannot pass because the users never met.
"""

from __future__ import annotations

import random
import re
import threading

import numpy as np
import pytest

from explorer.interpret.engine import Interpreter, collect
from explorer.methods.concepts import Concept, Probe, Steering
from explorer.methods.control import Edit
from explorer.methods.model_state import ModelState
from explorer.ui.explore import interpret_cells
from explorer.ui.session import AppConfig, ModelRegistry, Session

PROMPT = "The Eiffel Tower is in the city of"
CELLS = [(12, 3), (15, 7), (10, 5), (18, 2), (8, 6), (20, 4)]
DEADLINE_S = 240


def scaled_edit(lm, layer: int = 8, factor: float = 3.0) -> Edit:
    params = {k: v.detach().clone() for k, v in lm.arch.mlps[layer - 1].named_parameters()}
    name = next(k for k in params if k.endswith("down_proj.weight"))
    params[name] = params[name] * factor
    return Edit(layer=layer, params=params, meta={"model_id": lm.model_id, "kind": "test"})


def synthetic_concept(lm, grid, row: int = 6) -> Concept:
    """A probe along a real direction of row ``row`` (the subject's state minus the mean), biased so the
    prompt's states sit far below p0 = 0.9: GCAV then moves every state, which changes the readings."""
    states = grid.hidden[row, 1:].double()
    direction = (states[2] - states.mean(0)).numpy()
    w = direction / np.linalg.norm(direction) * 0.05
    b = float(-(states.numpy() @ w).max() - 3.0)
    typical = float(states.norm(dim=-1).mean())
    probe = Probe(layer=row, w=w, b=b, accuracy=1.0, auc=1.0, train_accuracy=1.0, typical_norm=typical, separation=1.0)
    return Concept("synthetic", lm.model_id, "last", {row: probe})


@pytest.fixture(scope="module")
def world(lm):
    registry = ModelRegistry(AppConfig())
    ex = registry.get("default")
    grid = ex.run(PROMPT)
    concept = synthetic_concept(ex.lm, grid)
    states = {
        "stock": ModelState(),
        "edit": ModelState(edit=scaled_edit(ex.lm)),
        "gcav": ModelState(steering=Steering((concept,), ("add",), (0.9,), (6,))),
        "fixed": ModelState(steering=Steering((concept,), ("add",), (0.5,), (6,), kind="fixed", alpha=1.5)),
    }
    settings = [ex.settings("refers_to", max_new_tokens=4), ex.settings("refers_to", max_new_tokens=5)]
    ref: dict[tuple[str, int], dict] = {}
    for name, state in states.items():  # single-user references: no batcher, no cache
        for j, s in enumerate(settings):
            with state.applied(ex.lm):
                ref[(name, j)] = collect(Interpreter(ex.lm).iter_cells(grid, CELLS, s, batch_size=len(CELLS)))
    return registry, ex, grid, states, settings, ref


def test_the_four_model_states_read_differently(world):
    _registry, _ex, _grid, _states, _settings, ref = world
    readings = {name: tuple(tuple(ref[(name, 0)][c].generated_ids) for c in CELLS) for name in ("stock", "edit",
                                                                                                   "gcav", "fixed")}
    assert len(set(readings.values())) == 4


def _user(registry, session, cells, settings, action, out):
    """One user as the app runs it: a click on ``cells[0]`` (streamed), then a job over the other cells.

    ``action``: stay; stop (Stop pressed after the job's first reading); leave (the tab goes away while
    the click is still decoding: the generator is closed, as Gradio does)."""
    try:
        click = interpret_cells(registry, session, cells[:1], settings, batch_size=1, focus=cells[0],
                                min_interval_s=0.0)
        for view in click:
            if action == "leave" and view.figure is None:  # a partial view: the click is mid-decoding
                click.close()
                out["done"] = True
                return
        job = interpret_cells(registry, session, cells[1:], settings, batch_size=1, min_interval_s=0.0)
        stopped = False
        for view in job:
            out["last_status"] = view.status
            if action == "stop" and not stopped and session.results is not None and len(session.results.cells) > 1:
                stopped = session.stop_jobs() > 0
    except BaseException as e:  # recorded, judged by the test
        out["error"] = e
    out["done"] = True


@pytest.mark.parametrize("use_cache", [False, True])
def test_many_users_many_variants_random_stops_each_staying_user_gets_the_single_user_reading(world, use_cache):
    registry, ex, grid, states, settings, ref = world
    rng = random.Random(1234 + int(use_cache))
    interp = ex.interpreter
    sched = interp.scheduler
    batches: list[tuple[int, int]] = []  # (rows, rows dropped) of every shared batch
    gate = threading.Event()  # holds both workers until every user has queued its click
    real = interp.generate_now

    def observed(vectors, s, on_step=None, keep=None):
        gate.wait(60)
        gen = real(vectors, s, on_step, keep)
        batches.append((int(vectors.shape[0]), len(gen.dropped)))
        return gen

    interp.generate_now = observed
    try:
        for _round in range(3):
            if not use_cache:
                interp.results.clear()
            gate.clear()
            holders = [sched.submit(grid.hidden[1, 1], settings[0], priority=p) for p in (0, 1)]  # occupy both workers
            users = []
            for i in range(12):
                name = list(states)[i % 4]
                s = Session()
                s.edit, s.concept_steer = states[name].edit, states[name].steering
                s.new_grid(grid)
                j = 0 if i < 8 else 1
                cells = rng.sample(CELLS, 4)
                action = ["stay", "stop", "leave"][i % 3] if _round else rng.choice(["stay", "stop", "leave"])
                users.append((name, j, s, cells, action, {}))
            threads = [threading.Thread(target=_user, args=(registry, s, cells, settings[j], action, out), daemon=True)
                       for _name, j, s, cells, action, out in users]
            [t.start() for t in threads]
            last, quiet = -1, 0.0
            while len(sched._queue) < len(users) and quiet < 1.0:  # every click queued (or read from the cache)
                threading.Event().wait(0.05)
                size = len(sched._queue)
                quiet = quiet + 0.05 if size == last else 0.0
                last = size
            gate.set()
            [h.result(60) for h in holders]
            [t.join(DEADLINE_S) for t in threads]
            assert not any(t.is_alive() for t in threads), "a user waited past the deadline"
            for name, j, s, cells, action, out in users:
                assert out.get("done") and "error" not in out, (name, action, out.get("error"))
                with s.lock:
                    got_cells = list(s.results.cells)
                for cell in got_cells:  # whatever anyone got is right
                    want = ref[(name, j)][(cell.layer, cell.token)]
                    assert cell.generated_ids == want.generated_ids, (name, action, cell.layer, cell.token)
                    if cell.complete:
                        np.testing.assert_allclose(cell.relevancy_score, want.relevancy_score, atol=1e-4)
                    assert cell.variant == states[name].variant(ex.lm)
                if action == "stay":
                    got = {(c.layer, c.token) for c in got_cells if c.complete}
                    assert got == set(cells), (name, "lost cells", set(cells) - got)
                    # (cells another user of the same variant had just read come from the cache: credited)
                    assert re.fullmatch(r"Done: 3 of 3 cells interpreted( \([0-3] read before\))?\.",
                                        out["last_status"]), out["last_status"]
                if action == "stop":
                    assert out["last_status"].startswith(("Stopped", "Done"))
    finally:
        interp.generate_now = real
    # The users met: rows of several users shared batches, and some users left in the middle of a
    # batch whose other rows went on to the end.
    assert max(n for n, _ in batches) >= 2, batches
    assert any(0 < dropped < n for n, dropped in batches), batches
    assert sched.restarts == 0
    assert not sched._queue
