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

    def generate_now(self, vectors, settings, on_step=None, keep=None):
        self.batches.append((MODEL_VARIANT.get(), int(vectors.shape[0])))
        self.started.set()
        self.gate.wait(60)
        return self.interpreter.generate_now(vectors, settings, on_step, keep)


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
    assert list(it.scheduler.batch_sizes) == [3]  # one batch of three rows
    assert all(len(ids) > 0 for ids in gen.ids)
    assert len(snapshots) == gen.steps
    for step, rows in enumerate(snapshots, start=1):
        assert len(rows) == 3
        for row, final in zip(rows, gen.ids):
            assert row and row == final[:step]  # every row's own partial text, never another's or none


# ---------------------------------------------------------------------------------------------------
# A batch has no owner: per-request stop and failure, bounded waits.


def _stop_after(n: int):
    """A stop test that stays silent for its first ``n`` questions, then says stop."""
    asked = [0]

    def test():
        asked[0] += 1
        return "Stopped by its user." if asked[0] > n else None

    return test


def test_a_stopped_row_leaves_a_shared_batch_and_the_other_rows_finish_unchanged(lm, grid):
    settings = make_settings(lm, "refers_to", max_new_tokens=6)
    vectors = torch.stack([grid.hidden[12, 3], grid.hidden[15, 7], grid.hidden[10, 5]])
    ref = Interpreter(lm).generate_now(vectors, settings)
    assert all(len(ids) >= 3 for ids in ref.ids)  # long enough for a stop after two steps to cut one short

    gated = Gated(Interpreter(lm))
    sched = BatchScheduler(gated, max_batch=16)
    gated.gate.set()
    from explorer.core.stop import install, uninstall

    requests = []
    for i in range(3):
        token = install(_stop_after(2) if i == 1 else (lambda: None))  # row 1's user stops after two steps
        try:
            requests.append(sched._request(vectors[i], settings, None, None, 0))
        finally:
            uninstall(token)
    sched._enqueue(requests)  # one step: the three rows share one batch
    assert requests[0].future.result(120)[0] == ref.ids[0]
    assert requests[2].future.result(120)[0] == ref.ids[2]
    from explorer.core.stop import JobStopped

    with pytest.raises(JobStopped, match="Stopped by its user"):
        requests[1].future.result(120)
    assert gated.batches == [(None, 3)]  # they did share one batch, and it was not stopped as a whole


def test_a_low_priority_request_ahead_of_a_click_never_loses_either(lm, grid):
    """Requests hold tensors: taking a click from behind a grid job's row must not compare them."""
    settings = make_settings(lm, "refers_to", max_new_tokens=3)
    sched = BatchScheduler(Interpreter(lm), max_batch=16)
    low = sched._request(grid.hidden[12, 3].clone(), settings, None, None, 0)
    high = sched._request(grid.hidden[12, 3].clone(), settings, None, None, 1)
    sched._enqueue([low, high])
    ref = Interpreter(lm).generate_now(grid.hidden[12, 3][None], settings).ids[0]
    assert high.future.result(60)[0] == ref
    assert low.future.result(60)[0] == ref
    assert sched.restarts == 0  # no worker died on the way


def test_a_row_whose_callback_fails_fails_alone(lm, grid):
    settings = make_settings(lm, "refers_to", max_new_tokens=4)
    vectors = torch.stack([grid.hidden[12, 3], grid.hidden[15, 7]])
    ref = Interpreter(lm).generate_now(vectors, settings).ids
    sched = BatchScheduler(Interpreter(lm), max_batch=16)

    def broken(_ids):
        raise ValueError("the consumer of row 0 broke")

    bad = sched._request(vectors[0], settings, broken, None, 0)
    good = sched._request(vectors[1], settings, None, None, 0)
    sched._enqueue([bad, good])
    assert good.future.result(60)[0] == ref[1]
    with pytest.raises(ValueError, match="row 0 broke"):
        bad.future.result(60)


def test_a_batch_that_fails_is_retried_row_by_row_so_only_the_bad_row_fails(lm, grid):
    settings = make_settings(lm, "refers_to", max_new_tokens=4)
    good_vec = grid.hidden[15, 7]
    ref = Interpreter(lm).generate_now(good_vec[None], settings).ids[0]
    sched = BatchScheduler(Interpreter(lm), max_batch=16)
    bad = sched._request(torch.zeros(lm.hidden_size + 3), settings, None, None, 0)  # cannot be injected
    good = sched._request(good_vec, settings, None, None, 0)
    sched._enqueue([bad, good])
    assert good.future.result(60)[0] == ref
    with pytest.raises(RuntimeError):
        bad.future.result(60)


def test_a_wait_past_the_request_limit_ends_with_one_sentence(lm, grid):
    from explorer.interpret.scheduler import EngineError

    settings = make_settings(lm, "refers_to", max_new_tokens=2)
    gated = Gated(Interpreter(lm))  # holds the worker until the gate opens
    sched = BatchScheduler(gated, max_batch=1, request_timeout_s=1.5)
    first = sched.submit(grid.hidden[3, 3], settings)
    assert gated.started.wait(60)
    with pytest.raises(EngineError, match=r"waited more than 1\.5 s"):
        sched.generate(grid.hidden[5, 3][None], settings)
    gated.gate.set()
    assert len(first.result(60)[0]) > 0
    assert not sched._queue  # the request that gave up left the queue


def test_a_job_whose_stop_fires_while_it_waits_in_the_queue_leaves_it(lm, grid):
    from explorer.core.stop import JobStopped, install, uninstall

    settings = make_settings(lm, "refers_to", max_new_tokens=2)
    gated = Gated(Interpreter(lm))
    sched = BatchScheduler(gated, max_batch=1)
    first = sched.submit(grid.hidden[3, 3], settings)
    assert gated.started.wait(60)
    stopped = threading.Event()
    token = install(lambda: "Stopped by its user." if stopped.is_set() else None)
    try:
        threading.Timer(0.3, stopped.set).start()
        with pytest.raises(JobStopped):
            sched.generate(grid.hidden[5, 3][None], settings)
    finally:
        uninstall(token)
    assert not sched._queue
    gated.gate.set()
    first.result(60)
