"""Runtime instances of one model version, handed out one caller at a time, with a bounded wait queue.

Callers are request paths driven on the event loop (REST, in process) or on plain threads (gRPC calls
run on grpcio's threads and execute the model right there, so a gRPC request costs no thread hand-off of
its own). The pool is therefore thread-safe: one lock, and waiters are ``concurrent.futures.Future``
objects that either driver can wait on (``core/steps.py``).

A caller takes a free instance at once, or waits in FIFO order while fewer than ``max_waiting`` others
wait; past that it is refused at once (a full queue never blocks). A waiter that is cancelled (client
gone) leaves the queue without consuming an instance.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import deque
from typing import Generic, TypeVar

from modelserve.core.errors import QueueError

__all__ = ["InstancePool"]

T = TypeVar("T")


class InstancePool(Generic[T]):
    def __init__(self, instances: list[T], max_waiting: int, *, owner: str) -> None:
        self._free: deque[T] = deque(instances)
        self._size = len(instances)
        self._waiters: deque[concurrent.futures.Future[T]] = deque()
        self._max_waiting = max_waiting
        self._owner = owner
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> int:
        return self._size - len(self._free)

    def take(self) -> T | concurrent.futures.Future[T]:
        """A free instance now, or a future that gets one in FIFO order (wait for it, or :meth:`abandon`
        it). Raises :class:`QueueError` at once when ``max_waiting`` callers already wait."""
        with self._lock:
            if self._free and not self._waiters:
                return self._free.popleft()
            if len(self._waiters) >= self._max_waiting:
                raise self._full()
            waiter: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._waiters.append(waiter)
            return waiter

    def refusal(self) -> QueueError | None:
        """The error :meth:`take` would raise now, without taking anything (a snapshot: the next ``take``
        decides again). For refusing a request before its body is read."""
        with self._lock:
            if not self._free and len(self._waiters) >= self._max_waiting:
                return self._full()
        return None

    def _full(self) -> QueueError:
        return QueueError(
            f"{self._owner}: queue full ({len(self._waiters)} requests already wait for "
            f"{self._size} instance(s); scheduling.max_queue_size={self._max_waiting}); retry later, "
            "add instances (instance_group count) or raise the limit",
            retry_after_s=1,
        )

    def abandon(self, waiter: concurrent.futures.Future[T]) -> None:
        """The waiter's caller gave up for good: it leaves the queue, or, if it was handed an instance
        meanwhile, the instance goes to the next waiter."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                waiter.cancel()
                return
        if waiter.done() and not waiter.cancelled():
            self.release(waiter.result())

    def release(self, instance: T) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.set_running_or_notify_cancel():
                    waiter.set_result(instance)
                    return
            self._free.append(instance)
