"""Runtime instances of one model version, handed out one caller at a time, with a bounded wait queue.

Callers are request paths driven on the event loop (REST, in process) or on plain threads (gRPC calls
run on grpcio's threads and execute the model right there, so a gRPC request costs no thread hand-off of
its own). The pool is therefore thread-safe: one lock, and waiters are ``concurrent.futures.Future``
objects that either driver can wait on (``core/steps.py``).

A caller takes a free instance at once, or waits in FIFO order while fewer than ``max_waiting`` others
wait and the oldest waiter has waited no longer than ``max_wait_ns`` (``scheduling.max_queue_time_ms``:
a new caller would wait at least as long); past either it is refused at once (a full queue never blocks).
A waiter that is withdrawn (client gone) leaves the queue without consuming an instance; one that was
handed an instance belongs to whoever its future's callbacks tell (the scheduler).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from modelserve.core.clock import Clock, MonotonicClock
from modelserve.core.errors import QueueError
from modelserve.scheduling.request_queue import queue_time_error

__all__ = ["InstancePool"]

T = TypeVar("T")


class InstancePool(Generic[T]):
    def __init__(
        self,
        instances: list[T],
        max_waiting: int,
        *,
        owner: str,
        clock: Clock | None = None,
        max_wait_ns: int = 0,
    ) -> None:
        self._free: deque[T] = deque(instances)
        self._size = len(instances)
        self._waiters: deque[concurrent.futures.Future[T]] = deque()
        # When each waiter joined, in the same order (the head's age is the queue's current wait).
        self._joined_ns: deque[int] = deque()
        self._max_waiting = max_waiting
        self._max_wait_ns = max_wait_ns
        self._clock = clock or MonotonicClock()
        self._owner = owner
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> int:
        return self._size - len(self._free)

    def take(self) -> T | concurrent.futures.Future[T]:
        """A free instance now, or a future that gets one in FIFO order (wait for it, or :meth:`withdraw`
        it). Raises :class:`QueueError` at once when ``max_waiting`` callers already wait."""
        with self._lock:
            if self._free and not self._waiters:
                return self._free.popleft()
            now_ns = self._clock.now_ns()
            refused = self._refusal(now_ns)
            if refused is not None:
                raise refused
            waiter: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._waiters.append(waiter)
            self._joined_ns.append(now_ns)
            return waiter

    def refusal(self) -> QueueError | None:
        """The error :meth:`take` would raise now, without taking anything (a snapshot: the next ``take``
        decides again). For refusing a request before its body is read."""
        with self._lock:
            if self._free and not self._waiters:
                return None
            return self._refusal(self._clock.now_ns())

    def _refusal(self, now_ns: int) -> QueueError | None:
        if len(self._waiters) >= self._max_waiting:
            return self._full()
        if self._max_wait_ns and self._joined_ns:
            waited_ns = now_ns - self._joined_ns[0]
            if waited_ns > self._max_wait_ns:
                return queue_time_error(self._owner, waited_ns, self._max_wait_ns)
        return None

    def _full(self) -> QueueError:
        return QueueError(
            f"{self._owner}: queue full ({len(self._waiters)} requests already wait for "
            f"{self._size} instance(s); scheduling.max_queue_size={self._max_waiting}); retry later, "
            "add instances (instance_group count) or raise the limit",
            retry_after_s=1,
        )

    def withdraw(self, waiter: concurrent.futures.Future[T]) -> bool:
        """Take ``waiter`` out of the queue and cancel it, if it still waits. False if it was handed an
        instance already (whoever was told of the grant owns the instance then: the waiter's done
        callbacks, which run on the releasing thread)."""
        with self._lock:
            for position, queued in enumerate(self._waiters):
                if queued is waiter:
                    del self._waiters[position]
                    del self._joined_ns[position]
                    break
            else:
                return False
        waiter.cancel()  # outside the lock: its callbacks may call back into the pool
        return True

    def fail_waiters(self, make_error: Callable[[], Exception]) -> None:
        """Fail every queued waiter with an error from ``make_error`` (one each: the version is closing);
        instances stay where they are."""
        with self._lock:
            waiters = list(self._waiters)
            self._waiters.clear()
            self._joined_ns.clear()
        for waiter in waiters:  # outside the lock: their callbacks may take it
            if waiter.set_running_or_notify_cancel():
                waiter.set_exception(make_error())

    def release(self, instance: T) -> None:
        """Hand ``instance`` to the first waiter still waiting, or put it back. The waiter's future is
        resolved outside the lock: its done callbacks run right here, and may release an instance or take
        one themselves (a scheduler starting the granted request, or handing it on)."""
        while True:
            with self._lock:
                if not self._waiters:
                    self._free.append(instance)
                    return
                waiter = self._waiters.popleft()
                self._joined_ns.popleft()
            if waiter.set_running_or_notify_cancel():
                waiter.set_result(instance)
                return
