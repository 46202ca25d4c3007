"""Whole-grid reading order, the column window of long prompts, and click priority in the scheduler."""

from __future__ import annotations

import torch

from explorer.core.grid import capture
from explorer.core.hooks import VariantScope
from explorer.interpret.scheduler import BatchScheduler, _Request
from explorer.ui.readings import job_order
from explorer.viz.figure import column_window


def test_whole_grid_order_starts_at_the_middle_layers_and_content_tokens(lm):
    grid = capture(lm, "Paris", chat=True)  # special tokens around one content token
    cells = [(layer, t) for layer in range(grid.n_rows) for t in range(grid.n_tokens)]
    order = job_order(grid, cells)
    assert sorted(order) == sorted(cells)
    content = [t for t in range(grid.n_tokens) if not grid.special[t]]
    n_content = len(content) * grid.n_rows
    assert {t for _l, t in order[:n_content]} == set(content)  # content tokens first
    assert all(grid.special[t] for _l, t in order[n_content:]) or n_content == len(order)
    first_layers = [layer for layer, _t in order[:len(content)]]
    assert set(first_layers) == {15}  # 30 blocks: the middle row first
    distances = [abs(layer - 15) for layer, _t in order[:n_content]]
    assert distances == sorted(distances)  # then outwards; layers 0 and 30 last


def test_the_window_always_ends_full_and_respects_its_floor(lm):
    grid = capture(lm, "one two three four five six seven eight nine ten")
    n = grid.n_tokens
    assert column_window(grid, 0, 4) == [0, 1, 2, 3]
    assert column_window(grid, n - 1, 4) == list(range(n - 4, n))  # never the last token alone
    assert column_window(grid, 0, 256) == list(range(n))
    assert column_window(grid, 0, 256, floor=3) == list(range(3, n))


def _req(priority: int, key: str, tag: int) -> _Request:
    # States of several elements, as real ones are: taking a request from the queue never compares them.
    return _Request(vector=torch.zeros(8), settings=None, key=(key,), scope=VariantScope.capture(), stop=None,
                    on_step=None, priority=priority, future=_tagged(tag))


def _tagged(tag: int):
    from concurrent.futures import Future

    f: Future = Future()
    f.tag = tag  # type: ignore[attr-defined]
    return f


def test_a_click_jumps_a_grid_jobs_queue_and_keeps_its_variant():
    sched = BatchScheduler(interpreter=None, max_batch=4)
    sched._queue.extend([_req(0, "a", i) for i in range(6)] + [_req(1, "b", 100), _req(1, "a", 101)])
    first = [r.future.tag for r in sched._take_batch()]
    assert first == [100]  # the click goes first, alone: its key differs from the other click's
    assert [r.future.tag for r in sched._take_batch()] == [101]  # the other click next, not with grid rows
    assert [r.future.tag for r in sched._take_batch()] == [0, 1, 2, 3]  # then the grid job, in order
    assert [r.future.tag for r in sched._take_batch()] == [4, 5]


def test_the_express_worker_takes_only_clicks():
    sched = BatchScheduler(interpreter=None, max_batch=4)
    sched._queue.extend([_req(0, "a", 0), _req(1, "a", 100), _req(0, "a", 1)])
    assert [r.future.tag for r in sched._take_batch(min_priority=1)] == [100]
    assert [r.future.tag for r in sched._take_batch()] == [0, 1]
