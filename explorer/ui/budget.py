"""A global bound on the memory every session's grids and results hold (see :class:`SessionBudget`)."""

from __future__ import annotations

import threading
import time
from typing import Any

Session = Any  # an explorer.ui.session.Session (not imported: that module builds on this one)


class SessionBudget:
    """A global bound on the memory held by all sessions' grids and results.

    When a new grid would push the total over ``max_bytes``, the grids of the sessions idle the
    longest are dropped (their users are asked to run their prompt again); the newest is kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._sessions: dict[str, tuple[Session, float]] = {}
        self._lock = threading.Lock()
        self.evicted = 0

    def touch(self, session: Session) -> None:
        if session.closed:
            return
        with self._lock:
            self._sessions[session.session_id] = (session, time.monotonic())
            total = sum(s.nbytes() for s, _ in self._sessions.values())
            for _sid, (s, _t) in sorted(self._sessions.items(), key=lambda kv: kv[1][1]):
                if total <= self.max_bytes:
                    break
                if s is session or s.grid is None:
                    continue
                total -= s.nbytes()
                s.grid = None
                s.results = None
                self.evicted += 1

    def forget(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)

    def snapshot(self) -> list[tuple[Session, float]]:
        with self._lock:
            return list(self._sessions.values())

    def total_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes() for s, _ in self._sessions.values())
