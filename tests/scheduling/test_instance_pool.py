"""InstancePool without a server: FIFO hand-over, a bounded wait queue, withdrawal that loses nothing.

The pool decides synchronously (``take`` answers an instance or a future) so these tests need no event
loop and no thread: every hand-over is a plain call.
"""

from __future__ import annotations

import concurrent.futures

import pytest

from modelserve.core.errors import QueueError
from modelserve.scheduling.instance_pool import InstancePool
from tests.fakes import ManualClock


def test_waiters_are_served_in_order_and_the_bound_refuses_at_once() -> None:
    pool = InstancePool(["a"], max_waiting=2, owner="model 'm' version 1")
    first = pool.take()
    assert first == "a"
    w1, w2 = pool.take(), pool.take()
    assert isinstance(w1, concurrent.futures.Future) and isinstance(w2, concurrent.futures.Future)
    assert pool.waiting == 2
    with pytest.raises(QueueError, match=r"queue full .*max_queue_size=2"):
        pool.take()
    pool.release(first)
    assert w1.result(timeout=0) == "a" and not w2.done()
    pool.release("a")
    assert w2.result(timeout=0) == "a"
    pool.release("a")
    assert pool.busy == 0 and pool.waiting == 0


def test_a_withdrawn_waiter_leaves_the_queue_and_loses_no_instance() -> None:
    pool = InstancePool(["a"], max_waiting=4, owner="m")
    held = pool.take()
    gone, survivor = pool.take(), pool.take()
    assert isinstance(gone, concurrent.futures.Future) and isinstance(survivor, concurrent.futures.Future)
    assert pool.withdraw(gone)
    assert gone.cancelled() and pool.waiting == 1
    pool.release(held)
    assert survivor.result(timeout=0) == "a"
    assert not pool.withdraw(survivor), "handed an instance: no longer the pool's to withdraw"
    pool.release("a")
    assert pool.busy == 0 and pool.waiting == 0


def test_a_grant_callback_may_call_back_into_the_pool() -> None:
    # The direct scheduler starts (or hands on) a granted request from the waiter's done callback, on the
    # releasing thread: the pool must not hold its lock then (a deadlock lost every instance under load).
    pool = InstancePool(["a"], max_waiting=4, owner="m")
    held = pool.take()
    handed_on, next_in_line = pool.take(), pool.take()
    assert isinstance(handed_on, concurrent.futures.Future) and isinstance(next_in_line, concurrent.futures.Future)
    handed_on.add_done_callback(lambda granted: pool.release(granted.result()))  # its caller gave up
    pool.release(held)
    assert next_in_line.result(timeout=0) == "a"
    assert pool.busy == 1 and pool.waiting == 0


def test_a_waiter_cancelled_by_its_caller_is_skipped_at_hand_over() -> None:
    pool = InstancePool(["a"], max_waiting=4, owner="m")
    held = pool.take()
    cancelled, survivor = pool.take(), pool.take()
    assert isinstance(cancelled, concurrent.futures.Future) and isinstance(survivor, concurrent.futures.Future)
    assert cancelled.cancel()  # what a gRPC thread's cancel token does
    pool.release(held)
    assert survivor.result(timeout=0) == "a"


def test_the_queue_refuses_while_its_oldest_waiter_has_waited_past_the_time_bound() -> None:
    clock = ManualClock()
    pool = InstancePool(["a"], max_waiting=100, owner="model 'm' version 1", clock=clock, max_wait_ns=100_000_000)
    held = pool.take()
    oldest = pool.take()
    clock.advance(0.05)
    younger = pool.take()  # the head has waited 50 ms: within the bound
    assert isinstance(oldest, concurrent.futures.Future) and isinstance(younger, concurrent.futures.Future)
    clock.advance(0.06)  # the head has now waited 110 ms
    assert pool.refusal() is not None
    with pytest.raises(QueueError, match=r"oldest request has waited 110 ms.*max_queue_time_ms=100") as caught:
        pool.take()
    assert caught.value.retry_after_s == 1 and pool.waiting == 2
    pool.release(held)  # the head is served: the queue's wait is now the younger waiter's, 60 ms
    assert oldest.result(timeout=0) == "a"
    assert pool.refusal() is None
    assert isinstance(pool.take(), concurrent.futures.Future)
    # Withdrawing the head keeps the join times in step with the waiters.
    assert pool.withdraw(younger)
    clock.advance(0.2)
    with pytest.raises(QueueError, match="has waited 200 ms"):
        pool.take()


def test_without_a_time_bound_only_the_length_refuses() -> None:
    clock = ManualClock()
    pool = InstancePool(["a"], max_waiting=2, owner="m", clock=clock)
    pool.take()
    pool.take()
    clock.advance(3600)
    assert isinstance(pool.take(), concurrent.futures.Future)
