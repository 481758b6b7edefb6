"""Runtime instances of one model version, handed out one caller at a time, with a bounded wait queue.

Callers are coroutines on the event loop (REST) or plain threads (gRPC calls run on grpcio's threads
and execute the model right there, so a gRPC request costs no thread hand-off of its own). The pool is
therefore thread-safe: one lock, and waiters are ``concurrent.futures.Future`` objects that either kind
of caller can wait on.

A caller takes a free instance at once, or waits in FIFO order while fewer than ``max_waiting`` others
wait; past that it is refused at once (a full queue never blocks). A waiter that is cancelled (client
gone) leaves the queue without consuming an instance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from typing import Generic, TypeVar

from modelserve.core.cancellation import CancelToken
from modelserve.core.errors import ErrorCode, QueueError

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
        self.peak_waiting = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> int:
        return self._size - len(self._free)

    def _take_or_enqueue(self) -> T | concurrent.futures.Future[T]:
        with self._lock:
            if self._free and not self._waiters:
                return self._free.popleft()
            if len(self._waiters) >= self._max_waiting:
                raise QueueError(
                    f"{self._owner}: queue full ({len(self._waiters)} requests already wait for "
                    f"{self._size} instance(s); scheduling.max_queue_size={self._max_waiting}); retry later, "
                    "add instances (instance_group count) or raise the limit",
                    retry_after_s=1,
                )
            waiter: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._waiters.append(waiter)
            self.peak_waiting = max(self.peak_waiting, len(self._waiters))
            return waiter

    def _abandon(self, waiter: concurrent.futures.Future[T]) -> None:
        """The waiter's caller is gone. If it was handed an instance meanwhile, pass that on."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                waiter.cancel()
                return
        if waiter.done() and not waiter.cancelled():
            self.release(waiter.result())

    def _withdraw(self, waiter: concurrent.futures.Future[T]) -> None:
        """Take a waiter out of the queue if it still waits (its caller went away); never releases."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                waiter.cancel()

    async def acquire(self) -> T:
        """Wait (on the event loop) for an instance. Raises :class:`QueueError` when the queue is full."""
        taken = self._take_or_enqueue()
        if not isinstance(taken, concurrent.futures.Future):
            return taken
        try:
            return await asyncio.shield(asyncio.wrap_future(taken))
        except asyncio.CancelledError:
            self._abandon(taken)
            raise

    def acquire_blocking(self, timeout_s: float | None = None, cancel: CancelToken | None = None) -> T:
        """Wait (in a thread) for an instance. Raises :class:`QueueError` when the queue is full, the wait
        times out, or ``cancel`` fires (the caller went away)."""
        if cancel is not None and cancel.is_cancelled:
            raise QueueError("the request was cancelled", code=ErrorCode.CANCELLED)
        taken = self._take_or_enqueue()
        if not isinstance(taken, concurrent.futures.Future):
            return taken
        if cancel is not None:
            cancel.add_callback(lambda: self._withdraw(taken))
        try:
            return taken.result(timeout=timeout_s)
        except concurrent.futures.CancelledError:
            raise QueueError("the request was cancelled while queued", code=ErrorCode.CANCELLED) from None
        except concurrent.futures.TimeoutError:
            self._abandon(taken)
            raise QueueError(f"{self._owner}: no instance became free within {timeout_s} s") from None
        except BaseException:
            self._abandon(taken)
            raise

    def release(self, instance: T) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.set_running_or_notify_cancel():
                    waiter.set_result(instance)
                    return
            self._free.append(instance)
