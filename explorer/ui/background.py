"""Run work in a worker thread and stream what it produces to a Gradio generator.

Gradio resumes a generator handler in a fresh copy of the event loop's context at every step, so
a ``with applied(edit):`` held across ``yield`` would be lost (and its ContextVar reset would
fail). The work therefore runs start to finish in one worker thread, inside whatever context
manager it needs, and the handler only relays its items.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from explorer.core.errors import InputError
from explorer.core.stop import checkpoint, install, uninstall

_ITEM, _DONE, _ERROR = 0, 1, 2
TICK = ("tick", None)  # yielded while a job is quiet, so Gradio can notice a client that left


class JobSlots:
    """A server-wide limit on jobs of one kind (Control training, steering), held by the worker
    thread itself: a job whose client left keeps its slot until it has really stopped, so orphaned
    jobs cannot pile up beyond the limit. ``running`` counts the jobs working now."""

    def __init__(self, limit: int, what: str = "control jobs", wait_s: float = 30.0):
        self.limit = max(1, int(limit))
        self.what = what
        self.wait_s = wait_s
        self._sem = threading.BoundedSemaphore(self.limit)
        self._lock = threading.Lock()
        self.running = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if not self._sem.acquire(timeout=self.wait_s):
            raise InputError(f"The server is already running {self.limit} {self.what}; please try again in a minute.")
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
            self._sem.release()


def iterate_in_thread(make_iter: Callable[[], Iterator[Any]], *,
                      context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                      on_abandon: Callable[[], None] | None = None, time_limit_s: float | None = None,
                      slots: JobSlots | None = None, heartbeat_s: float | None = None,
                      heartbeat: Any = TICK, also_stop: Callable[[], bool] | None = None,
                      stale_s: float | None = None) -> Iterator[Any]:
    """Yield the items of ``make_iter()`` computed in a worker thread inside ``context()`` (long because
    every way a job can end is handled here, in one place).

    If the consumer stops early (the user pressed Stop or closed the tab), ``on_abandon`` runs and
    the job's own stop flag is set: every :func:`explorer.core.stop.checkpoint` in the work then
    raises, so training loops, evaluations and generation stop within a step. The same happens
    past ``time_limit_s``. With ``slots`` the worker holds one of them while it runs. With
    ``heartbeat_s``, ``heartbeat`` is yielded whenever the work is quiet that long (Gradio notices a
    departed client only when the handler yields). Gradio may drop a cancelled handler without
    closing it, so two more signals stop the work: ``also_stop()`` (e.g. the session was closed) and,
    with ``stale_s``, a consumer that has not asked for the next item for that long.
    """
    q: queue.Queue = queue.Queue()
    abandoned = threading.Event()
    started = time.monotonic()
    yielded_at: list[float | None] = [None]  # when the consumer last took an item and has not come back

    def reason() -> str | None:
        waiting = yielded_at[0]
        if (abandoned.is_set() or (also_stop is not None and also_stop())
                or (stale_s is not None and waiting is not None and time.monotonic() - waiting > stale_s)):
            abandoned.set()
            return "The job was stopped."
        if time_limit_s is not None and time.monotonic() - started > time_limit_s:
            return f"The job ran past this server's time limit of {time_limit_s:g} s and was stopped."
        return None

    def work() -> None:
        token = install(reason)
        try:
            with slots.hold() if slots is not None else contextlib.nullcontext(), context():
                for item in make_iter():
                    checkpoint()
                    q.put((_ITEM, item))
        except BaseException as e:
            q.put((_ERROR, e))
            return
        finally:
            uninstall(token)
        q.put((_DONE, None))

    threading.Thread(target=work, name="selfie-job", daemon=True).start()
    finished = False
    try:
        while True:
            try:
                kind, value = q.get(timeout=heartbeat_s)
            except queue.Empty:
                yielded_at[0] = time.monotonic()
                yield heartbeat
                yielded_at[0] = None
                continue
            if kind == _ITEM:
                yielded_at[0] = time.monotonic()
                yield value
                yielded_at[0] = None
            elif kind == _DONE:
                finished = True
                return
            else:
                finished = True
                raise value
    finally:
        if not finished:
            abandoned.set()
            if on_abandon is not None:
                on_abandon()


def stream_callbacks(run: Callable[[Callable[..., None]], Any], *,
                     context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                     **job: Any) -> Iterator[tuple[str, Any]]:
    """Turn ``run(on_step)`` into a stream of ``("step", args)`` items and a final ``("done", result)``
    (``job``: the stop, slot and heartbeat options of :func:`iterate_in_thread`; each step is a
    checkpoint, so a training loop stops at its next step once its client has left)."""
    def gen() -> Iterator[tuple[str, Any]]:
        q: queue.Queue = queue.Queue()
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["value"] = run(lambda *a: (checkpoint(), q.put(("step", a))))
            except BaseException as e:
                result["error"] = e
            q.put(("end", None))

        t = threading.Thread(target=contextlib_run(target), daemon=True)
        t.start()
        try:
            while True:
                kind, value = q.get()
                if kind == "end":
                    break
                yield kind, value
        finally:
            t.join()  # an abandoned job releases its slot only once its training has really stopped
        if "error" in result:
            raise result["error"]
        yield "done", result["value"]

    return iterate_in_thread(gen, context=context, **job)


def contextlib_run(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` bound to a copy of the current context (so a thread started here sees the same edit)."""
    import contextvars

    ctx = contextvars.copy_context()
    return lambda: ctx.run(fn)
