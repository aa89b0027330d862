"""A bounded, thread-safe queue that drops the stalest items instead of blocking producers.

Under a flood of camera frames the node keeps only the newest ``maxsize``; latency stays bounded
and memory flat. Producers learn how many items their ``put`` displaced.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar('T')


class DroppingQueue(Generic[T]):
    """FIFO of at most ``maxsize`` items; a full queue drops its oldest item on ``put``."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f'maxsize must be >= 1, got {maxsize}')
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._ready = threading.Condition()
        self.dropped = 0

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)

    def put(self, item: T) -> int:
        """Append an item; returns how many stale items were dropped to make room (0 or 1)."""
        with self._ready:
            dropped = 0
            while len(self._items) >= self._maxsize:
                self._items.popleft()
                dropped += 1
            self._items.append(item)
            self.dropped += dropped
            self._ready.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, waiting up to ``timeout`` seconds; None if none arrived."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: bool(self._items), timeout):
                return None
            return self._items.popleft()
