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
from collections.abc import Callable, Iterator
from typing import Any

_ITEM, _DONE, _ERROR = 0, 1, 2


def iterate_in_thread(make_iter: Callable[[], Iterator[Any]], *,
                      context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                      on_abandon: Callable[[], None] | None = None) -> Iterator[Any]:
    """Yield the items of ``make_iter()`` computed in a worker thread inside ``context()``.

    If the consumer stops early (the user pressed Stop or closed the tab), ``on_abandon`` runs so
    the worker can finish its current step and quit.
    """
    q: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            with context():
                for item in make_iter():
                    q.put((_ITEM, item))
        except BaseException as e:
            q.put((_ERROR, e))
            return
        q.put((_DONE, None))

    threading.Thread(target=work, name="selfie-job", daemon=True).start()
    finished = False
    try:
        while True:
            kind, value = q.get()
            if kind == _ITEM:
                yield value
            elif kind == _DONE:
                finished = True
                return
            else:
                finished = True
                raise value
    finally:
        if not finished and on_abandon is not None:
            on_abandon()


def stream_callbacks(run: Callable[[Callable[..., None]], Any], *,
                     context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                     ) -> Iterator[tuple[str, Any]]:
    """Turn ``run(on_step)`` into a stream of ``("step", args)`` items and a final ``("done", result)``."""
    def gen() -> Iterator[tuple[str, Any]]:
        q: queue.Queue = queue.Queue()
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["value"] = run(lambda *a: q.put(("step", a)))
            except BaseException as e:
                result["error"] = e
            q.put(("end", None))

        t = threading.Thread(target=contextlib_run(target), daemon=True)
        t.start()
        while True:
            kind, value = q.get()
            if kind == "end":
                break
            yield kind, value
        if "error" in result:
            raise result["error"]
        yield "done", result["value"]

    return iterate_in_thread(gen, context=context)


def contextlib_run(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` bound to a copy of the current context (so a thread started here sees the same edit)."""
    import contextvars

    ctx = contextvars.copy_context()
    return lambda: ctx.run(fn)
