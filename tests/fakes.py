"""Fakes at the real edges only: the clock."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """A ``Clock`` that moves only when a test calls ``advance``."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns

    def now_ns(self) -> int:
        return self._now_ns

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back (advance({seconds}))")
        self._now_ns += round(seconds * 1_000_000_000)
