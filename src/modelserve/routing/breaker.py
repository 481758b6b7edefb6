"""Circuit breakers: one per model version, taking a failing version out before its failures pile up.

A pure, clock-injected state machine (no thread, no timer: every transition happens inside a call, at the
time the clock says)::

              N failures in a row, or > failure_ratio of >= min_requests in the last window_s
     CLOSED ──────────────────────────────────────────────────────────────────────────────> OPEN
       ^                                                                                 │   ^
       │ half_open_probes probes succeeded                             open_s passed     │   │ a probe failed
       │                                                                (doubling on      v   │ (stay doubles)
       └──────────────────────────────────────────────────────────────── each trip) HALF_OPEN

What counts (:func:`counts_as_failure`): only failures of the server side, the model raised or its
worker died (:class:`RuntimeFailure`) or the request timed out (DEADLINE_EXCEEDED). Never a client's
mistake (a 4xx: decode, validation, routing errors) and never an overload refusal of the queue or the
in-flight limit: those protect a version that works; opening its breaker on a burst would turn a
short overload into ``open_s`` of refusals, and the fallback chain would carry the burst elsewhere.
A cancelled request (the client went away) says nothing about the version either.

While OPEN, :meth:`CircuitBreaker.admit` refuses at once, for the cost of a lock and a comparison. In
HALF_OPEN it lets ``half_open_probes`` requests through (the others are refused as when open); a probe
that ends without a verdict (cancelled, refused by the queue) gives its slot back.

Thread-safe: gRPC calls run on their own threads, REST on the loop. The failure-ratio window is kept
in ``_WINDOW_BUCKETS`` buckets of ``window_s / _WINDOW_BUCKETS`` each, so its memory is fixed however
many requests arrive (the ratio is exact to one bucket's width).
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from modelserve.core.clock import Clock
from modelserve.core.errors import CircuitOpenError, ErrorCode, ModelServeError, RuntimeFailure
from modelserve.routing.policy import BreakerSettings

__all__ = [
    "BreakerBoard",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "TransitionListener",
    "counts_as_failure",
]

_WINDOW_BUCKETS = 10


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def counts_as_failure(error: BaseException) -> bool:
    """Whether a request that ended with ``error`` counts against its version's breaker (the module
    docstring says why): the model failed, its worker died, or the request's deadline passed."""
    if isinstance(error, CircuitOpenError):
        return False
    if isinstance(error, RuntimeFailure):
        return True
    return isinstance(error, ModelServeError) and error.code is ErrorCode.DEADLINE_EXCEEDED


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """One breaker as metrics and the routing API show it."""

    model: str
    version: str
    state: BreakerState
    trips: int  # times it opened, ever
    retry_in_s: float  # until half-open (0 unless open)
    reason: str  # why it last opened ("" if it never did)


# (model, version, from, to): called inside the breaker's lock, so it must be quick and never raise
# (a metrics counter).
TransitionListener = Callable[[str, str, BreakerState, BreakerState], None]


class CircuitBreaker:
    """One model version's breaker. Thread-safe; every method is O(1)."""

    def __init__(
        self,
        model: str,
        version: str,
        settings: BreakerSettings,
        clock: Clock,
        on_transition: TransitionListener | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._in_a_row = 0
        self._bucket_ns = max(1, int(settings.window_s * 1e9 / _WINDOW_BUCKETS))
        self._buckets: deque[list[int]] = deque()  # [bucket index, requests, failures], oldest first
        self._open_until_ns = 0
        self._open_for_s = 0.0
        self._trips_in_a_row = 0  # since it was last closed: sets how long the next stay lasts
        self._trips = 0
        self._probes_out = 0
        self._probes_passed = 0
        self._reason = ""

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._advance(self._clock.now_ns())
            return self._state

    def admit(self) -> CircuitOpenError | None:
        """None when a request may run now (in HALF_OPEN it takes a probe slot, which the request's
        :meth:`record` gives back), else the error to refuse it with, naming the breaker and when to retry."""
        with self._lock:
            now_ns = self._clock.now_ns()
            self._advance(now_ns)
            if self._state is BreakerState.CLOSED:
                return None
            if self._state is BreakerState.HALF_OPEN and self._probes_out < self._probes_left():
                self._probes_out += 1
                return None
            return self._refusal(now_ns)

    def record(self, error: BaseException | None) -> None:
        """The outcome of a request :meth:`admit` let through: None = it succeeded, else the error it ended
        with (only :func:`counts_as_failure` errors count; any other gives a probe slot back untouched)."""
        failed = error is not None and counts_as_failure(error)
        with self._lock:
            now_ns = self._clock.now_ns()
            if self._state is BreakerState.HALF_OPEN:
                self._probes_out = max(0, self._probes_out - 1)
                if error is not None and not failed:
                    return
                if failed:
                    self._trip(now_ns, f"a half-open probe failed ({_short(error)})")
                    return
                self._probes_passed += 1
                if self._probes_passed >= self.settings.half_open_probes:
                    self._close()
                return
            if self._state is BreakerState.OPEN or (error is not None and not failed):
                return  # a request admitted before it opened, or one that says nothing about the version
            self._count(now_ns, failed)
            if not failed:
                self._in_a_row = 0
                return
            self._in_a_row += 1
            settings = self.settings
            if self._in_a_row >= settings.consecutive_failures:
                self._trip(now_ns, f"{self._in_a_row} failures in a row")
                return
            requests, failures = self._window(now_ns)
            if requests >= settings.min_requests and failures / requests > settings.failure_ratio:
                self._trip(
                    now_ns,
                    f"{failures} of its last {requests} requests failed in {settings.window_s:g} s "
                    f"(breaker.failure_ratio {settings.failure_ratio:g})",
                )

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            now_ns = self._clock.now_ns()
            self._advance(now_ns)
            retry_in_s = max(0.0, (self._open_until_ns - now_ns) / 1e9) if self._state is BreakerState.OPEN else 0.0
            return BreakerSnapshot(self.model, self.version, self._state, self._trips, retry_in_s, self._reason)

    # -- inside the lock ---------------------------------------------------------------------------

    def _probes_left(self) -> int:
        return self.settings.half_open_probes - self._probes_passed

    def _advance(self, now_ns: int) -> None:
        if self._state is BreakerState.OPEN and now_ns >= self._open_until_ns:
            self._move(BreakerState.HALF_OPEN)
            self._probes_out = self._probes_passed = 0

    def _refusal(self, now_ns: int) -> CircuitOpenError:
        retry_s = max(1, -(-(self._open_until_ns - now_ns) // 1_000_000_000))  # whole seconds, rounded up
        what = "is open" if self._state is BreakerState.OPEN else "is half-open and its probes are taken"
        return CircuitOpenError(
            f"circuit breaker for model '{self.model}' version {self.version} {what} after {self._reason}; "
            f"retry in {retry_s} s (or fix the model: the server log and the version's failures in "
            f"/v2/models/{self.model}/stats say why it fails)",
            retry_after_s=retry_s,
        )

    def _trip(self, now_ns: int, reason: str) -> None:
        settings = self.settings
        self._trips_in_a_row += 1
        self._trips += 1
        self._open_for_s = min(settings.open_s * 2 ** (self._trips_in_a_row - 1), settings.max_open_s)
        self._open_until_ns = now_ns + int(self._open_for_s * 1e9)
        self._reason = reason
        self._in_a_row = 0
        self._buckets.clear()
        self._move(BreakerState.OPEN)

    def _close(self) -> None:
        self._trips_in_a_row = 0
        self._in_a_row = 0
        self._buckets.clear()
        self._move(BreakerState.CLOSED)

    def _move(self, to: BreakerState) -> None:
        before, self._state = self._state, to
        if self._on_transition is not None and before is not to:
            self._on_transition(self.model, self.version, before, to)

    def _count(self, now_ns: int, failed: bool) -> None:
        index = now_ns // self._bucket_ns
        buckets = self._buckets
        if not buckets or buckets[-1][0] != index:
            buckets.append([index, 0, 0])
        buckets[-1][1] += 1
        buckets[-1][2] += int(failed)
        while buckets and buckets[0][0] <= index - _WINDOW_BUCKETS:
            buckets.popleft()

    def _window(self, now_ns: int) -> tuple[int, int]:
        oldest = now_ns // self._bucket_ns - _WINDOW_BUCKETS
        live = [bucket for bucket in self._buckets if bucket[0] > oldest]
        return sum(b[1] for b in live), sum(b[2] for b in live)


def _short(error: BaseException | None) -> str:
    text = str(error) if error is not None else ""
    return text if len(text) <= 120 else text[:117] + "..."


class BreakerBoard:
    """Every version's breaker, made on first use from its model's policy. Thread-safe. A policy whose
    ``breaker`` settings change gets fresh breakers (closed); versions of a model without breaker
    settings have none."""

    def __init__(self, clock: Clock, on_transition: TransitionListener | None = None) -> None:
        self._clock = clock
        self._on_transition = on_transition
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()

    def breaker(self, model: str, version: str, settings: BreakerSettings) -> CircuitBreaker:
        key = (model, version)
        found = self._breakers.get(key)
        # Identity first: a policy is replaced whole, so the same settings object comes back per request.
        if found is not None and (found.settings is settings or found.settings == settings):
            return found
        with self._lock:
            found = self._breakers.get(key)
            if found is None or found.settings != settings:
                found = CircuitBreaker(model, version, settings, self._clock, self._on_transition)
                self._breakers = {**self._breakers, key: found}
            return found

    def forget(self, model: str) -> None:
        """Drop ``model``'s breakers (its policy was cleared)."""
        with self._lock:
            self._breakers = {key: b for key, b in self._breakers.items() if key[0] != model}

    def snapshots(self, model: str | None = None) -> list[BreakerSnapshot]:
        """Every breaker (of ``model``), sorted by model and version."""
        chosen = [b for key, b in sorted(self._breakers.items()) if model is None or key[0] == model]
        return [b.snapshot() for b in chosen]
