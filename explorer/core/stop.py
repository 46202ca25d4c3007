"""Cooperative stopping of long jobs: a job's thread installs a stop test, loops call ``checkpoint``.

The web app runs each job in a worker thread; when its client leaves (or the job passes the
server's time limit) the worker must stop within a few seconds even if it sits deep inside a
training loop or an evaluation. Rather than threading a ``should_stop`` argument through every
method, the worker sets a context-local test and the methods' loops call :func:`checkpoint`,
which does nothing outside such a job (the Python API and the CLI are unaffected).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from explorer.core.errors import ExplorerError

_STOP: ContextVar[Callable[[], str | None] | None] = ContextVar("selfie_stop", default=None)


class JobStopped(ExplorerError):
    """The job was stopped: its client left, the user pressed Stop, or it ran past its time limit."""


def install(test: Callable[[], str | None]):
    """Make ``test`` the current job's stop test (it returns a reason to stop, or None); returns a token
    for :func:`uninstall`."""
    return _STOP.set(test)


def uninstall(token) -> None:
    _STOP.reset(token)


def current_test() -> Callable[[], str | None] | None:
    """The calling job's stop test (None outside a stoppable job), for work handed to another thread
    that must still answer to this job alone."""
    return _STOP.get()


def checkpoint() -> None:
    """Raise :class:`JobStopped` if the current job should stop; a no-op outside a stoppable job."""
    test = _STOP.get()
    if test is not None:
        reason = test()
        if reason:
            raise JobStopped(reason)
