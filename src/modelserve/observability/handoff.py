"""A bounded hand-off from the request path to a background worker, cheap enough to use on every request.

``offer`` is a length check and a ``deque.append`` (atomic under the GIL): no lock, no condition variable,
no wake-up of the worker per item. The worker wakes on its own every ``poll_s`` and takes what is there
in one go, so a 2,000 request/s stream costs it 10-20 wake-ups a second instead of 2,000 thread switches
on the serving core. When the worker falls behind, ``offer`` refuses and the caller counts the drop.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    def __init__(self, capacity: int, poll_s: float) -> None:
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._poll_s = poll_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def offer(self, item: T) -> bool:
        """Queue the item unless ``capacity`` items wait already (then False: the caller counts a drop).
        Under races the bound may be passed by a few items; it bounds memory, not exactness."""
        if len(self._items) >= self._capacity:
            return False
        self._items.append(item)
        return True

    def start(self, name: str, handle: Callable[[list[T]], None], idle: Callable[[], None] | None = None) -> None:
        """Run ``handle(batch)`` on a daemon thread for whatever arrived since the last wake-up, and
        ``idle()`` on wake-ups that found nothing."""
        self._thread = threading.Thread(target=self._run, args=(handle, idle), name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Handle what is queued, then end the thread. False when it did not end within ``timeout_s`` (a
        handler stuck on a hung destination); the daemon thread is then left behind."""
        if self._thread is None:
            return True
        self._stopping.set()
        self._thread.join(timeout_s)
        stuck = self._thread.is_alive()
        self._thread = None
        return not stuck

    def _run(self, handle: Callable[[list[T]], None], idle: Callable[[], None] | None) -> None:
        while True:
            stopping = self._stopping.wait(self._poll_s)
            batch = []
            while self._items:
                batch.append(self._items.popleft())
            if batch:
                handle(batch)
            elif idle is not None:
                idle()
            if stopping:
                return
