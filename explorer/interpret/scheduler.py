"""One worker that batches interpretation requests from every user into shared generate calls.

Clicks that arrive while a batch runs wait in the queue and go together into the next batch, and
rows from several users' jobs share a batch when they ask for the same settings and see the same
weights (``MODEL_VARIANT``). A request's ``priority`` lets a click jump ahead of a whole-grid job's
queued rows: the next batch starts with the oldest request of the highest priority, and a second
worker takes only such requests, so a click decodes beside a running grid batch instead of after
it (its first words come after one prefill, not after the grid batch). Each request
keeps the caller's ``contextvars`` context, and a batch runs inside its first request's context, so
a session's control edit applies to its own rows only.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from explorer.core.hooks import MODEL_VARIANT
from explorer.interpret.decode import GeneratedBatch


@dataclass
class _Request:
    vector: torch.Tensor
    settings: object
    key: tuple
    ctx: contextvars.Context
    on_step: Callable[[list[int]], None] | None
    flush: Callable[[int], None] | None = None  # called once per step after every row of its call updated
    priority: int = 0
    future: Future = field(default_factory=Future)


class _StreamRows:
    """The partial ids of every row of one ``generate`` call: each row writes its own slot, and the
    call's callback sees them all once per step (never a snapshot with other rows left empty)."""

    def __init__(self, n: int, on_step: Callable[[int, list[list[int]]], None]):
        self.rows: list[list[int]] = [[] for _ in range(n)]
        self.on_step = on_step
        self._lock = threading.Lock()

    def update(self, i: int, ids: list[int]) -> None:
        with self._lock:
            self.rows[i] = list(ids)

    def flush(self, step: int) -> None:
        with self._lock:
            rows = [list(r) for r in self.rows]
        self.on_step(step, rows)


class BatchScheduler:
    """Runs ``interpreter.generate`` on batches of queued single-state requests (FIFO by batch)."""

    def __init__(self, interpreter, max_batch: int = 16):
        self.interpreter = interpreter
        self.max_batch = max_batch
        self._queue: deque[_Request] = deque()
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self._express: threading.Thread | None = None  # takes priority > 0 requests only
        self.batches_run = 0
        self.batch_sizes: list[int] = []

    def submit(self, vector: torch.Tensor, settings, on_step: Callable[[list[int]], None] | None = None,
               flush: Callable[[int], None] | None = None, priority: int = 0) -> Future:
        """Queue one state; the future resolves to ``(generated ids, p_with, steps)`` for it.

        Requests are batched only with others of the same settings and model variant. Higher
        ``priority`` goes first (a click: 1; a whole-grid job's rows: 0).
        """
        return self._enqueue([self._request(vector, settings, on_step, flush, priority)])[0]

    def _request(self, vector: torch.Tensor, settings, on_step, flush, priority: int) -> _Request:
        return _Request(vector=vector, settings=settings, key=(settings.key(), MODEL_VARIANT.get()),
                        ctx=contextvars.copy_context(), on_step=on_step, flush=flush, priority=int(priority))

    def _enqueue(self, requests: list[_Request]) -> list[Future]:
        """Queue requests in one step, so the rows of one call are never split by a worker waking early."""
        with self._cv:
            self._queue.extend(requests)
            self._ensure_worker()
            self._cv.notify_all()
        return [r.future for r in requests]

    def generate(self, vectors: torch.Tensor, settings, on_step=None, priority: int = 0):
        """Submit B states and wait: the same result as ``interpreter.generate`` (rows may share batches)."""
        rows = _StreamRows(int(vectors.shape[0]), on_step) if on_step is not None else None
        requests = [self._request(vectors[i], settings,
                                  None if rows is None else (lambda ids, i=i: rows.update(i, ids)),
                                  None if rows is None else rows.flush, priority)
                    for i in range(vectors.shape[0])]
        futures = self._enqueue(requests)
        try:
            results = [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return GeneratedBatch(ids=[r[0] for r in results], p_with=[r[1] for r in results],
                              steps=max((r[2] for r in results), default=0))

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._loop, name="selfie-batcher", daemon=True)
            self._worker.start()
        if self._express is None or not self._express.is_alive():
            self._express = threading.Thread(target=self._loop, args=(1,), name="selfie-express", daemon=True)
            self._express.start()

    def _take_batch(self, min_priority: int = 0) -> list[_Request]:
        with self._cv:
            while not any(r.priority >= min_priority for r in self._queue):
                self._cv.wait()
            top = max(r.priority for r in self._queue)
            first = next(r for r in self._queue if r.priority == top)
            self._queue.remove(first)
            batch = [first]
            rest: deque[_Request] = deque()
            while self._queue and len(batch) < self.max_batch:
                req = self._queue.popleft()
                (batch if req.key == first.key and req.priority == top else rest).append(req)
            rest.extend(self._queue)
            self._queue = rest
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _loop(self, min_priority: int = 0) -> None:
        while True:
            batch = self._take_batch(min_priority)
            if not batch:
                continue
            vectors = torch.stack([r.vector for r in batch])

            def on_step(step: int, ids: list[list[int]], batch=batch) -> None:
                flushes: dict[int, Callable[[int], None]] = {}
                for r, row in zip(batch, ids):
                    if r.on_step is not None:
                        r.on_step(list(row))
                    if r.flush is not None:
                        flushes[id(r.flush.__self__) if hasattr(r.flush, "__self__") else id(r.flush)] = r.flush
                for flush in flushes.values():
                    flush(step)

            try:
                gen = batch[0].ctx.run(self.interpreter.generate_now, vectors, batch[0].settings, on_step)
            except BaseException as e:
                for r in batch:
                    r.future.set_exception(e)
                continue
            self.batches_run += 1
            self.batch_sizes.append(len(batch))
            for i, r in enumerate(batch):
                r.future.set_result((gen.ids[i], gen.p_with[i], gen.steps))
