"""A thread-safe cancellation signal for requests that are served on a thread (gRPC calls).

grpcio tells a call's thread that the client went away through a callback; the request may at that
moment be waiting for an instance or queued in the batcher on the event loop. The token carries the
news to whichever of those holds the request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["CancelToken"]


class CancelToken:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._callbacks: list[Callable[[], object]] = []

    @property
    def is_cancelled(self) -> bool:
        return self._cancelled

    def add_callback(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` on cancellation (at once if already cancelled). Callbacks must not block."""
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return
        callback()

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
