"""The one source of time for intervals and deadlines: monotonic, injectable so tests can drive it."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "wall_time_ms"]


class Clock(Protocol):
    def now_ns(self) -> int:
        """Monotonic nanoseconds; only differences mean anything."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic_ns``."""

    def now_ns(self) -> int:
        return time.monotonic_ns()


def wall_time_ms() -> int:
    """Milliseconds since the epoch, for timestamps shown to people (statistics' ``last_inference``)."""
    return time.time_ns() // 1_000_000
