"""A thread-safe LRU cache bounded in bytes, globally and per owner (a browser session).

The app shares one interpretation cache between all users, so a class interpreting the same
prompt pays once. Each entry is charged to the session that computed it (``CACHE_OWNER``, set
around that session's jobs); a session over its quota evicts its own least recently used entries
first, so one user interpreting huge grids cannot flush everyone else's cache.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Generic, TypeVar

V = TypeVar("V")

CACHE_OWNER: ContextVar[str | None] = ContextVar("explorer_cache_owner", default=None)


@contextlib.contextmanager
def cache_owner(owner: str | None) -> Iterator[None]:
    """Charge cache entries made in this context (and threads copying it) to ``owner``."""
    token = CACHE_OWNER.set(owner)
    try:
        yield
    finally:
        CACHE_OWNER.reset(token)


class ByteLRU(Generic[V]):
    """Least-recently-used eviction once the summed ``size_of(value)`` exceeds ``max_bytes``, and
    within one owner once that owner's entries exceed ``max_bytes_per_owner``."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int], max_bytes_per_owner: int | None = None):
        self.max_bytes = int(max_bytes)
        self.max_bytes_per_owner = None if max_bytes_per_owner is None else int(max_bytes_per_owner)
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[V, int, str | None]] = OrderedDict()
        self._bytes = 0
        self._owner_bytes: dict[str | None, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V, owner: str | None = None) -> None:
        """Store ``value``, charged to ``owner`` (default: the context's ``CACHE_OWNER``)."""
        owner = CACHE_OWNER.get() if owner is None else owner
        size = int(self._size_of(value))
        quota = self.max_bytes if (owner is None or self.max_bytes_per_owner is None) else min(
            self.max_bytes, self.max_bytes_per_owner)
        with self._lock:
            self._remove(key)
            if size > quota:
                return
            self._items[key] = (value, size, owner)
            self._bytes += size
            self._owner_bytes[owner] = self._owner_bytes.get(owner, 0) + size
            if owner is not None and self._owner_bytes[owner] > quota:
                for k in [k for k, (_, _, o) in self._items.items() if o == owner]:
                    if self._owner_bytes[owner] <= quota:
                        break
                    self._remove(k)
            while self._bytes > self.max_bytes and self._items:
                self._remove(next(iter(self._items)))

    def _remove(self, key: Hashable) -> None:
        old = self._items.pop(key, None)
        if old is None:
            return
        _, size, owner = old
        self._bytes -= size
        left = self._owner_bytes.get(owner, 0) - size
        if left > 0:
            self._owner_bytes[owner] = left
        else:
            self._owner_bytes.pop(owner, None)

    def drop_owner(self, owner: str) -> int:
        """Forget every entry charged to ``owner`` (its tab closed); returns how many."""
        with self._lock:
            keys = [k for k, (_, _, o) in self._items.items() if o == owner]
            for k in keys:
                self._remove(k)
            return len(keys)

    def owner_bytes(self, owner: str | None) -> int:
        with self._lock:
            return self._owner_bytes.get(owner, 0)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._owner_bytes.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items
