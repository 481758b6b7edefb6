"""The server-wide gate in front of every model: a global in-flight cap, and the drain switch.

``admit()`` never waits: over the cap, or once draining has begun, it refuses at once with UNAVAILABLE
and a message naming the limit, so an overloaded server answers fast instead of queueing without bound.
Used only from the event loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from modelserve.core.errors import QueueError

__all__ = ["AdmissionGate"]


class AdmissionGate:
    def __init__(self, max_inflight: int) -> None:
        self._max_inflight = max_inflight
        self._inflight = 0
        self._draining = False
        self._idle: asyncio.Event | None = None

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def is_draining(self) -> bool:
        return self._draining

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one in-flight slot for the duration of the ``with`` block. Raises :class:`QueueError`."""
        if self._draining:
            raise QueueError("the server is shutting down and accepts no new requests; retry on another replica")
        if self._inflight >= self._max_inflight:
            raise QueueError(
                f"the server is at its in-flight request limit (server.max_inflight_requests="
                f"{self._max_inflight}); retry later or raise the limit",
                retry_after_s=1,
            )
        self._inflight += 1
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests from now on and wait up to ``timeout_s`` for in-flight ones to finish.

        Returns True when everything finished in time.
        """
        self._draining = True
        if self._inflight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
