"""Workers that batch interpretation requests from every user into shared generate calls.

Clicks that arrive while a batch runs wait in the queue and go together into the next batch, and
rows from several users' jobs share a batch when they ask for the same settings and see the same
weights (the model variant). A request's ``priority`` lets a click jump ahead of a whole-grid
job's queued rows: the next batch starts with the oldest request of the highest priority, and a
second worker takes only such requests, so a click decodes beside a running grid batch instead of
after it.

A batch has no owner. Each request carries what is its own: its state, settings, model variant
(as a :class:`~explorer.core.hooks.VariantScope`), stop test and streaming callbacks. A batch runs
in a fresh, neutral context with only its variant applied, so no user's stop test, cache share or
log is consulted for another user's rows. Once per decoding step every row is asked whether it is
still wanted: a stopped or abandoned request leaves the batch like a row at EOS, the others go on.
A failure that a row's own callback causes fails that row; a failure of the batch itself is retried
row by row, so only the row that causes it fails. Every wait is bounded: waiters poll, restart a
dead worker, fail a request whose worker died, and give up past ``request_timeout_s``.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import torch

from explorer.core.errors import ExplorerError
from explorer.core.hooks import VariantScope
from explorer.core.stop import JobStopped, current_test
from explorer.interpret.decode import GeneratedBatch

POLL_S = 0.5  # how often a waiter looks at its own stop test and at the worker's health


class EngineError(ExplorerError):
    """The shared engine could not serve a request (its worker died, or it waited past the limit)."""


@dataclass(eq=False)  # identity semantics: requests are compared by ``is`` (they hold tensors)
class _Request:
    vector: torch.Tensor
    settings: object
    key: tuple
    scope: VariantScope
    stop: Callable[[], str | None] | None  # the submitting job's stop test (None: never stopped)
    on_step: Callable[[list[int]], None] | None
    flush: Callable[[int], None] | None = None  # called once per step after every row of its call updated
    priority: int = 0
    future: Future = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None  # raised by this row's own callback
    worker: threading.Thread | None = None  # the worker that took it

    def why_not_wanted(self) -> str | None:
        """A reason to drop this row now, or None while it is still wanted."""
        if self.error is not None:
            return "failed"
        if self.abandoned.is_set():
            return "The request was abandoned."
        if self.stop is not None:
            try:
                return self.stop()
            except Exception as e:  # a broken stop test stops its own row only
                self.error = e
                return "failed"
        return None

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


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


class DecodeMeter:
    """How fast this engine decodes right now: rows x steps per second over its latest batch of each size
    (sizes rounded down to a power of two), from the batch's start (prefill included) to its latest step.
    Idle time between batches is not counted, so the figure is ready one step into the first batch and
    stays meaningful after a pause; a job's time left can be estimated from it before the job has read
    a single cell."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[int, float] = {}

    @staticmethod
    def _bucket(rows: int) -> int:
        return 1 << (max(1, int(rows)).bit_length() - 1)

    def step(self, started: float, rows: int, steps: int) -> None:
        elapsed = time.monotonic() - started
        if elapsed > 0 and rows > 0 and steps > 0:
            with self._lock:
                self._rates[self._bucket(rows)] = rows * steps / elapsed

    def row_steps_per_s(self, rows: int) -> float | None:
        """The latest measure for batches of about ``rows`` rows (None until one has run)."""
        with self._lock:
            return self._rates.get(self._bucket(rows))


class BatchScheduler:
    """Runs ``interpreter.generate_now`` on batches of queued single-state requests (FIFO by batch)."""

    def __init__(self, interpreter, max_batch: int = 16, request_timeout_s: float = 900.0):
        self.interpreter = interpreter
        self.max_batch = max_batch
        self.request_timeout_s = request_timeout_s
        self._queue: deque[_Request] = deque()
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self._express: threading.Thread | None = None  # takes priority > 0 requests only
        self.batches_run = 0
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.restarts = 0  # workers started again after one died (should stay 0)
        self.meter = DecodeMeter()

    # ------------------------------------------------------------------ submitting and waiting
    def submit(self, vector: torch.Tensor, settings, on_step: Callable[[list[int]], None] | None = None,
               flush: Callable[[int], None] | None = None, priority: int = 0) -> Future:
        """Queue one state; the future resolves to ``(generated ids, p_with, steps)`` for it.

        Requests are batched only with others of the same settings and model variant. Higher
        ``priority`` goes first (a click: 1; a whole-grid job's rows: 0).
        """
        return self._enqueue([self._request(vector, settings, on_step, flush, priority)])[0].future

    def _request(self, vector: torch.Tensor, settings, on_step, flush, priority: int) -> _Request:
        scope = VariantScope.capture()
        return _Request(vector=vector, settings=settings, key=(settings.key(), scope.variant), scope=scope,
                        stop=current_test(), on_step=on_step, flush=flush, priority=int(priority))

    def _enqueue(self, requests: list[_Request]) -> list[_Request]:
        """Queue requests in one step, so the rows of one call are never split by a worker waking early."""
        with self._cv:
            self._queue.extend(requests)
            self._ensure_workers()
            self._cv.notify_all()
        return requests

    def generate(self, vectors: torch.Tensor, settings, on_step=None, priority: int = 0) -> GeneratedBatch:
        """Submit B states and wait: the same result as ``interpreter.generate`` (rows may share batches).

        Raises :class:`JobStopped` once the calling job's stop test fires (its rows leave their
        batches at the next step) and :class:`EngineError` if the engine cannot serve it in time.
        """
        rows = _StreamRows(int(vectors.shape[0]), on_step) if on_step is not None else None
        requests = [self._request(vectors[i], settings,
                                  None if rows is None else (lambda ids, i=i: rows.update(i, ids)),
                                  None if rows is None else rows.flush, priority)
                    for i in range(vectors.shape[0])]
        self._enqueue(requests)
        try:
            results = [self._wait(r) for r in requests]
        except BaseException:
            self.abandon(requests)
            raise
        return GeneratedBatch(ids=[r[0] for r in results], p_with=[r[1] for r in results],
                              steps=max((r[2] for r in results), default=0))

    def abandon(self, requests: list[_Request]) -> None:
        """Nobody waits for these any more: queued ones are removed, running ones leave their batch."""
        with self._cv:
            for r in requests:
                r.abandoned.set()
            self._queue = deque(r for r in self._queue if not r.abandoned.is_set())
        for r in requests:
            r.future.cancel()  # succeeds only for a request no worker has taken yet

    def _wait(self, r: _Request):
        """The request's result, waiting in short polls (never forever)."""
        deadline = time.monotonic() + self.request_timeout_s
        while True:
            try:
                return r.future.result(timeout=POLL_S)
            except FutureTimeout:
                pass
            reason = r.why_not_wanted()
            if reason is not None and reason != "failed":
                raise JobStopped(reason)
            if r.worker is not None and not r.worker.is_alive() and not r.future.done():
                r.fail(EngineError("The interpretation worker stopped unexpectedly; please try again."))
            with self._cv:
                self._ensure_workers()
            if time.monotonic() > deadline and not r.future.done():
                raise EngineError(f"The reading waited more than {self.request_timeout_s:g} s for the shared "
                                  "engine and was given up; the server is busy, please try again.")

    # ------------------------------------------------------------------ workers
    def _ensure_workers(self) -> None:
        """Start (or restart) both workers; called with ``self._cv`` held."""
        if self._worker is None or not self._worker.is_alive():
            self.restarts += self._worker is not None
            self._worker = threading.Thread(target=self._loop, name="selfie-batcher", daemon=True)
            self._worker.start()
        if self._express is None or not self._express.is_alive():
            self.restarts += self._express is not None
            self._express = threading.Thread(target=self._loop, args=(1,), name="selfie-express", daemon=True)
            self._express.start()

    def _take_batch(self, min_priority: int = 0) -> list[_Request]:
        with self._cv:
            while not any(r.priority >= min_priority for r in self._queue):
                self._cv.wait()
            top = max(r.priority for r in self._queue)
            first = next(r for r in self._queue if r.priority == top)
            batch: list[_Request] = []
            rest: deque[_Request] = deque()
            for req in self._queue:
                same = req is first or (req.key == first.key and req.priority == top)
                (batch if same and len(batch) < self.max_batch else rest).append(req)
            self._queue = rest
            me = threading.current_thread()
            for req in batch:
                req.worker = me
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _loop(self, min_priority: int = 0) -> None:
        while True:
            batch = self._take_batch(min_priority)
            try:
                if batch:
                    self._run(batch)
            except BaseException as e:  # nothing may leave a request pending
                for r in batch:
                    r.fail(e)

    def _run(self, batch: list[_Request]) -> None:
        """Decode one batch and resolve every request in it; a failing batch is retried row by row."""
        try:
            gen = self._decode(batch)
        except Exception as e:
            if len(batch) == 1:
                batch[0].fail(e)
                return
            for r in batch:  # find the row that fails: the others must not pay for it
                self._run([r])
            return
        self.batches_run += 1
        self.batch_sizes.append(len(batch))
        for i, r in enumerate(batch):
            if r.error is not None:
                r.fail(r.error)
            elif i in gen.dropped:
                r.fail(JobStopped(r.why_not_wanted() or "The job was stopped."))
            else:
                r.future.set_result((gen.ids[i], gen.p_with[i], gen.steps))

    def _decode(self, batch: list[_Request]) -> GeneratedBatch:
        vectors = torch.stack([r.vector for r in batch])
        started = time.monotonic()

        def on_step(step: int, ids: list[list[int]]) -> None:
            self.meter.step(started, len(batch), step)
            flushes: dict[int, Callable[[int], None]] = {}
            for r, row in zip(batch, ids):
                if r.on_step is None or r.error is not None or r.abandoned.is_set():
                    continue
                try:
                    r.on_step(list(row))
                except Exception as e:
                    r.error = e
                    continue
                if r.flush is not None:
                    flushes[id(getattr(r.flush, "__self__", r.flush))] = r.flush
            for key, flush in flushes.items():
                try:
                    flush(step)
                except Exception as e:
                    for r in batch:
                        if r.flush is not None and id(getattr(r.flush, "__self__", r.flush)) == key:
                            r.error = e

        def keep(rows: list[int]) -> list[bool]:
            return [batch[i].why_not_wanted() is None for i in rows]

        def run() -> GeneratedBatch:
            with batch[0].scope.applied():
                return self.interpreter.generate_now(vectors, batch[0].settings, on_step, keep=keep)

        # A fresh context: no request's stop test, cache share or log leaks into shared work.
        return contextvars.Context().run(run)
