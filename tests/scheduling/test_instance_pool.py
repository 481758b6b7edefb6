"""InstancePool without a server: FIFO hand-over, a bounded wait queue, cancellation that loses nothing."""

from __future__ import annotations

import asyncio

import pytest

from modelserve.core.errors import QueueError
from modelserve.scheduling.instance_pool import InstancePool


def test_waiters_are_served_in_order_and_the_bound_refuses_at_once() -> None:
    async def scenario() -> None:
        pool = InstancePool(["a"], max_waiting=2, owner="model 'm' version 1")
        first = await pool.acquire()
        w1 = asyncio.ensure_future(pool.acquire())
        w2 = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        assert pool.waiting == 2
        with pytest.raises(QueueError, match=r"queue full .*max_queue_size=2"):
            await pool.acquire()
        pool.release(first)
        assert await w1 == "a"
        pool.release("a")
        assert await w2 == "a"
        pool.release("a")
        assert pool.busy == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_instance() -> None:
    async def scenario() -> None:
        pool = InstancePool(["a"], max_waiting=4, owner="m")
        held = await pool.acquire()
        cancelled = asyncio.ensure_future(pool.acquire())
        survivor = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        assert pool.waiting == 1
        pool.release(held)
        assert await survivor == "a"
        pool.release("a")
        assert pool.busy == 0 and pool.waiting == 0

    asyncio.run(scenario())


def test_cancellation_racing_the_hand_over_passes_the_instance_on() -> None:
    async def scenario() -> None:
        pool = InstancePool(["a"], max_waiting=4, owner="m")
        held = await pool.acquire()
        racer = asyncio.ensure_future(pool.acquire())
        next_in_line = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        pool.release(held)  # resolves racer's future ...
        racer.cancel()  # ... and the task is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await racer
        assert await next_in_line == "a"

    asyncio.run(scenario())
