"""The shared batcher: rows of different model variants never share a batch, and multi-row
streaming gives every row its own partial text."""

from __future__ import annotations

import threading

import pytest
import torch

from explorer.core.grid import capture
from explorer.core.hooks import MODEL_VARIANT, edit_input
from explorer.interpret.engine import Interpreter, make_settings
from explorer.interpret.scheduler import BatchScheduler
from explorer.methods.control import steering_vector

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def grid(lm):
    return capture(lm, PROMPT)


class Gated:
    """The real interpreter, with the first batch held until ``gate`` opens and each batch's variant noted."""

    def __init__(self, interpreter: Interpreter):
        self.interpreter = interpreter
        self.gate = threading.Event()
        self.started = threading.Event()
        self.batches: list[tuple[str | None, int]] = []

    def generate_now(self, vectors, settings, on_step=None):
        self.batches.append((MODEL_VARIANT.get(), int(vectors.shape[0])))
        self.started.set()
        self.gate.wait(60)
        return self.interpreter.generate_now(vectors, settings, on_step)


def test_rows_of_different_variants_are_never_batched_together(lm, grid):
    settings = make_settings(lm, "refers_to", max_new_tokens=4)
    delta = 4.0 * steering_vector(lm, "an elephant", "", 6)
    vectors = torch.stack([grid.hidden[12, t] for t in (3, 5, 7, 8)])
    plain = Interpreter(lm)
    stock_ref = plain.generate_now(vectors, settings).ids
    with edit_input(lm.arch.blocks[6], lambda h: h + delta, variant="steer-test"):
        steered_ref = plain.generate_now(vectors, settings).ids
    assert stock_ref != steered_ref  # the steering changes the readings

    gated = Gated(Interpreter(lm))
    sched = BatchScheduler(gated, max_batch=16)
    first = sched.submit(grid.hidden[1, 1], settings)  # occupies the worker while the rest queue up
    assert gated.started.wait(60)
    futures = {}
    for i in range(4):  # interleaved: stock, steered, stock, steered, ...
        futures[("stock", i)] = sched.submit(vectors[i], settings)
        with edit_input(lm.arch.blocks[6], lambda h: h + delta, variant="steer-test"):
            futures[("steer", i)] = sched.submit(vectors[i], settings)
    gated.gate.set()
    first.result(120)
    got = {key: f.result(120)[0] for key, f in futures.items()}
    assert gated.batches == [(None, 1), (None, 4), ("steer-test", 4)]
    for i in range(4):
        assert got[("stock", i)] == stock_ref[i]
        assert got[("steer", i)] == steered_ref[i]


def test_streaming_a_three_row_batch_sends_every_row(lm, grid):
    settings = make_settings(lm, "refers_to", max_new_tokens=6)
    vectors = torch.stack([grid.hidden[10, 3], grid.hidden[15, 7], grid.hidden[20, 5]])
    it = Interpreter(lm, batching=True)
    snapshots: list[list[list[int]]] = []
    gen = it.generate(vectors, settings, lambda _step, rows: snapshots.append([list(r) for r in rows]))
    assert it.scheduler.batch_sizes == [3]  # one batch of three rows
    assert all(len(ids) > 0 for ids in gen.ids)
    assert len(snapshots) == gen.steps
    for step, rows in enumerate(snapshots, start=1):
        assert len(rows) == 3
        for row, final in zip(rows, gen.ids):
            assert row and row == final[:step]  # every row's own partial text, never another's or none
