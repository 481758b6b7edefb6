"""The one bounded wait the tests use: poll a predicate until it holds or a deadline passes.

Waiting is for a positive event (a counter reached, a file written, a state shown), never for time to
pass; the deadline only bounds how long a broken server can keep a test waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_until", "wait_until_async"]

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """The awaited event did not happen in time (both a failed assertion and a timeout)."""


def wait_until(
    predicate: Callable[[], T], *, timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "the condition"
) -> T:
    """Call ``predicate`` every ``interval_s`` until it returns something truthy, and return that.

    Raises :class:`WaitTimeout` naming ``what`` when it still does not hold after ``timeout_s`` (it is
    always asked once more at the deadline). Exceptions from ``predicate`` propagate at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(min(interval_s, remaining))


async def wait_until_async(
    predicate: Callable[[], T], *, timeout_s: float = 10.0, interval_s: float = 0.005, what: str = "the condition"
) -> T:
    """:func:`wait_until` from a coroutine: the event loop (an in-process engine) keeps running between looks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(min(interval_s, remaining))
