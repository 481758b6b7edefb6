"""Admission: the server-wide gate in front of every model, and each model version's own.

:class:`AdmissionGate`: a global in-flight cap, and the drain switch. ``admit()`` never waits: over the
cap, or once draining has begun, it refuses at once with UNAVAILABLE and a message naming the limit, so
an overloaded server answers fast instead of queueing without bound.

:class:`VersionAdmission`: the requests admitted to one version, and its end of life, in two steps::

    open --close() (drain begins)--> refusing new requests --release(reason) (unload)--> released

Once released, a request that was admitted earlier and fails did so because the version was unloaded
under it (its executor refuses new work, its runtime was freed mid-call, its worker was stopped), so
:meth:`VersionAdmission.cut_short` turns that failure into one UNAVAILABLE :class:`QueueError` that says
so and how to retry, never a runtime's internal error (a 500). Both schedulers apply it once, where a
request's path ends.

Thread-safe: REST requests pass both on the event loop, gRPC requests on grpcio's threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from modelserve.core.errors import QueueError

__all__ = ["SHUTTING_DOWN", "UNLOADED", "AdmissionGate", "VersionAdmission", "wait_until_idle"]

# Why a version was released, as the clause its cut-short requests' messages end with.
UNLOADED = "the version was unloaded or replaced; retry the request"
SHUTTING_DOWN = "the server is shutting down; retry on another replica"

# How often a drain looks at the in-flight count. Admitted requests finish on threads as well as on the
# loop, so a poll (bounded by the drain timeout) is simpler than waking the loop from every thread.
_DRAIN_POLL_S = 0.01


async def wait_until_idle(count: object, timeout_s: float) -> bool:
    """Wait until ``count()`` is 0, up to ``timeout_s``. True if it reached 0."""
    deadline = time.monotonic() + timeout_s
    while count() != 0:  # type: ignore[operator]
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_DRAIN_POLL_S)
    return True


class AdmissionGate:
    def __init__(self, max_inflight: int) -> None:
        self._max_inflight = max_inflight
        self._inflight = 0
        self._draining = False
        self._lock = threading.Lock()

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def is_draining(self) -> bool:
        return self._draining

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one in-flight slot for the duration of the ``with`` block. Raises :class:`QueueError`."""
        with self._lock:
            refused = self._refusal()
            if refused is not None:
                raise refused
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1

    def refusal(self) -> QueueError | None:
        """The error :meth:`admit` would raise now, without admitting (a snapshot, for refusing a request
        before its body is read; ``admit`` decides again)."""
        with self._lock:
            return self._refusal()

    def _refusal(self) -> QueueError | None:
        if self._draining:
            return QueueError("the server is shutting down and accepts no new requests; retry on another replica")
        if self._inflight >= self._max_inflight:
            return QueueError(
                f"the server is at its in-flight request limit (server.max_inflight_requests="
                f"{self._max_inflight}); retry later or raise the limit",
                retry_after_s=1,
            )
        return None

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests from now on and wait up to ``timeout_s`` for in-flight ones to finish.

        Returns True when everything finished in time.
        """
        self._draining = True
        return await wait_until_idle(lambda: self._inflight, timeout_s)


class VersionAdmission:
    """The requests admitted to one model version, the switch that stops admitting more (drain), and the
    mark that the version is being released under the ones still admitted (unload).

    Shared by both schedulers: ``enter``/``leave`` around every request (thread-safe), ``drain`` to
    refuse new ones and wait for the admitted ones, ``release`` when the scheduler closes, ``cut_short``
    where a request's path ends in failure.
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._active = 0
        self._is_closed = False
        self._release_reason: str | None = None
        self._lock = threading.Lock()

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    @property
    def is_released(self) -> bool:
        """True once :meth:`release` ran: admitted requests no longer run, and their failures are cut short."""
        return self._release_reason is not None

    @property
    def in_flight(self) -> int:
        return self._active

    def enter(self) -> None:
        """Admit one request. Raises :class:`QueueError` once the version is closed."""
        with self._lock:
            if self._is_closed:
                raise self.closed_error()
            self._active += 1

    def closed_error(self) -> QueueError:
        return QueueError(f"{self._owner} is unloading and takes no new requests; retry the request")

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

    def close(self) -> None:
        with self._lock:
            self._is_closed = True

    def release(self, reason: str = UNLOADED) -> bool:
        """Close, and mark the version as released for ``reason`` (:data:`UNLOADED`, :data:`SHUTTING_DOWN`:
        the clause cut-short messages end with). The first reason holds. True on the first call only."""
        with self._lock:
            self._is_closed = True
            if self._release_reason is not None:
                return False
            self._release_reason = reason
            return True

    def unloaded_error(self, *, started: bool) -> QueueError:
        """What a request admitted before :meth:`release` gets: UNAVAILABLE, naming the version, whether
        it had started to run, why it was unloaded and where to retry."""
        when = "while this request ran" if started else "before this request ran"
        return QueueError(f"{self._owner} was unloaded {when}: {self._release_reason or UNLOADED}")

    def cut_short(self, failure: Exception, *, started: bool = True) -> Exception:
        """The error a request that failed with ``failure`` should raise: ``failure`` itself, unless the
        version has been released and ``failure`` is not already a :class:`QueueError` (the caller's own
        deadline or cancellation, a full queue, an unload notice), in which case the unload caused it and
        it becomes :meth:`unloaded_error`. A genuine model failure that races with the release is reported
        as cut short too: the version is going away either way, and a retry elsewhere is the right answer."""
        if self._release_reason is None or isinstance(failure, QueueError):
            return failure
        return self.unloaded_error(started=started)

    async def drain(self, timeout_s: float) -> bool:
        """Close, then wait up to ``timeout_s`` for admitted requests. True if they all finished."""
        self.close()
        return await wait_until_idle(lambda: self._active, timeout_s)
