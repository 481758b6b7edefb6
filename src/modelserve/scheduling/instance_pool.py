"""Runtime instances of one model version, handed out one caller at a time, with a bounded wait queue.

A caller takes a free instance at once, or waits in FIFO order while fewer than ``max_waiting`` others
wait; past that it is refused at once (a full queue never blocks). A waiter that is cancelled (client
gone) leaves the queue without consuming an instance.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from modelserve.core.errors import QueueError

__all__ = ["InstancePool"]

T = TypeVar("T")


class InstancePool(Generic[T]):
    def __init__(self, instances: list[T], max_waiting: int, *, owner: str) -> None:
        self._free: deque[T] = deque(instances)
        self._size = len(instances)
        self._waiters: deque[asyncio.Future[T]] = deque()
        self._max_waiting = max_waiting
        self._owner = owner
        self.peak_waiting = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> int:
        return self._size - len(self._free)

    async def acquire(self) -> T:
        if self._free and not self._waiters:
            return self._free.popleft()
        if len(self._waiters) >= self._max_waiting:
            raise QueueError(
                f"{self._owner}: queue full ({len(self._waiters)} requests already wait for "
                f"{self._size} instance(s); scheduling.max_queue_size={self._max_waiting}); retry later, "
                "add instances (instance_group count) or raise the limit",
                retry_after_s=1,
            )
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.peak_waiting = max(self.peak_waiting, len(self._waiters))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed an instance just as we were cancelled: pass it on, do not lose it.
                self.release(waiter.result())
            else:
                self._waiters.remove(waiter)
            raise

    def release(self, instance: T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(instance)
                return
        self._free.append(instance)
