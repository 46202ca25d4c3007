"""A small bounded, locked memo keyed by content, owned by whoever holds the data it derives from.

Derived results that every user may share (a grid's token-identity colouring, a colour layer) are
kept by the loaded model they were computed with, never in a module-level dictionary: the owner
bounds them, one lock guards them, and keys are made of content (a grid's fingerprint, a model
variant, a concept's content hash), never of ``id()`` of an object that may be freed and reused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class Memo:
    """A least-recently-used map of at most ``max_items`` entries, safe to share between threads."""

    def __init__(self, max_items: int = 64):
        self.max_items = int(max_items)
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The stored value, or ``compute()`` stored and returned (computed outside the lock: two threads
        may both compute a missing value; both get equal results and one is kept)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        self.put(key, value)
        return value

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
