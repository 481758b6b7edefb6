"""The two drivers of the one request path (core/steps.py), without a server.

Each test writes one small generator, as the dataplane, router and schedulers do, and checks that both
drivers carry its steps out where they must (the blocking driver runs calls on its own thread and hands
loop work to the loop), and that giving up (cancellation, a passed deadline) abandons the step and runs
the generator's cleanup. Deadlines use a fake clock set in the past, so they expire at once: no test here
waits on wall-clock time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from modelserve.core.cancellation import CancelToken
from modelserve.core.errors import ErrorCode, QueueError
from modelserve.core.steps import OnLoop, PostToLoop, RunBlocking, Steps, WaitFor, drive, drive_blocking
from tests.fakes import ManualClock


@contextmanager
def loop_in_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running on a thread of its own, as the server's loop runs beside gRPC's threads."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class Trace:
    """What a generator saw: the threads its steps ran on, and whether its cleanup ran."""

    def __init__(self) -> None:
        self.threads: dict[str, int] = {}
        self.cleaned_up = False
        self.abandoned = 0
        self.failure: BaseException | None = None

    def abandon(self) -> None:
        self.abandoned += 1


def every_step(trace: Trace, future: concurrent.futures.Future[str]) -> Steps[str]:
    try:
        ran = yield RunBlocking(lambda: trace.threads.setdefault("run", threading.get_ident()) and "ran")
        yield PostToLoop(lambda: trace.threads.__setitem__("post", threading.get_ident()))

        async def on_loop() -> str:
            trace.threads["on_loop"] = threading.get_ident()
            future.set_result("waited")  # completed on the loop: the WaitFor below finds it done
            return "looped"

        looped = yield OnLoop(on_loop)
        waited = yield WaitFor(future, trace.abandon)
        return f"{ran}/{looped}/{waited}"
    except BaseException as exc:
        trace.failure = exc
        raise
    finally:
        trace.cleaned_up = True


def test_drive_on_the_loop_runs_calls_off_it_and_loop_work_on_it() -> None:
    trace = Trace()

    async def scenario() -> tuple[str, int]:
        result = await drive(every_step(trace, concurrent.futures.Future()), clock=ManualClock())
        return result, threading.get_ident()

    result, loop_thread = asyncio.run(scenario())
    assert result == "ran/looped/waited"
    assert trace.threads["run"] != loop_thread  # a blocking call never runs on the event loop
    assert trace.threads["post"] == trace.threads["on_loop"] == loop_thread
    assert trace.cleaned_up and trace.abandoned == 0


def test_drive_blocking_runs_calls_in_place_and_hands_loop_work_to_the_loop() -> None:
    trace = Trace()
    with loop_in_thread() as loop:
        loop_thread = asyncio.run_coroutine_threadsafe(_thread_id(), loop).result(timeout=10)
        result = drive_blocking(every_step(trace, concurrent.futures.Future()), loop=loop, clock=ManualClock())
    assert result == "ran/looped/waited"
    assert trace.threads["run"] == threading.get_ident()  # the gRPC fast path: no thread hand-off
    assert trace.threads["post"] == trace.threads["on_loop"] == loop_thread
    assert trace.cleaned_up


async def _thread_id() -> int:
    return threading.get_ident()


def failing_call() -> Steps[None]:
    def boom() -> None:
        raise ValueError("the model refused")

    yield RunBlocking(boom)


def test_a_steps_exception_is_thrown_into_the_generator_by_both_drivers() -> None:
    with pytest.raises(ValueError, match="refused"):
        asyncio.run(drive(failing_call(), clock=ManualClock()))
    with loop_in_thread() as loop, pytest.raises(ValueError, match="refused"):
        drive_blocking(failing_call(), loop=loop, clock=ManualClock())


def wait_forever(trace: Trace, future: concurrent.futures.Future[Any]) -> Steps[Any]:
    try:
        return (yield WaitFor(future, trace.abandon))
    except BaseException as exc:
        trace.failure = exc
        raise
    finally:
        trace.cleaned_up = True


def test_a_passed_deadline_abandons_the_wait_on_the_loop() -> None:
    trace = Trace()
    clock = ManualClock(start_ns=10_000)
    with pytest.raises(QueueError) as raised:
        asyncio.run(drive(wait_forever(trace, concurrent.futures.Future()), clock=clock, deadline_ns=5_000))
    assert raised.value.code is ErrorCode.DEADLINE_EXCEEDED and "deadline" in raised.value.message
    assert trace.abandoned == 1 and trace.cleaned_up
    assert isinstance(trace.failure, QueueError)  # the generator saw the deadline error, not a bare cancel


def test_a_passed_deadline_abandons_the_wait_on_a_thread() -> None:
    trace = Trace()
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    with loop_in_thread() as loop, pytest.raises(QueueError) as raised:
        drive_blocking(wait_forever(trace, future), loop=loop, clock=ManualClock(10_000), deadline_ns=5_000)
    assert raised.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert future.cancelled() and trace.abandoned == 1 and trace.cleaned_up


def test_cancelling_the_task_abandons_the_wait_and_runs_cleanup() -> None:
    trace = Trace()

    async def scenario() -> None:
        task = asyncio.ensure_future(drive(wait_forever(trace, concurrent.futures.Future()), clock=ManualClock()))
        for _ in range(5):  # let the driver reach its wait: a few loop turns, no wall-clock time
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert trace.abandoned == 1 and trace.cleaned_up
    assert isinstance(trace.failure, asyncio.CancelledError)


def announce_then_wait(trace: Trace, future: concurrent.futures.Future[Any], waiting: threading.Event) -> Steps[Any]:
    waiting.set()  # the token may fire before or during the wait below: both must end in CANCELLED
    return (yield from wait_forever(trace, future))


@pytest.mark.parametrize("when", ["before the wait", "during the wait"])
def test_a_cancel_token_withdraws_a_waiting_thread_with_cancelled(when: str) -> None:
    trace = Trace()
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    token = CancelToken()
    waiting = threading.Event()
    if when == "before the wait":
        token.cancel()
    canceller = threading.Thread(target=lambda: waiting.wait(10) and token.cancel(), daemon=True)
    canceller.start()
    with loop_in_thread() as loop, pytest.raises(QueueError) as raised:
        drive_blocking(announce_then_wait(trace, future, waiting), loop=loop, clock=ManualClock(), cancel=token)
    canceller.join(timeout=10)
    assert raised.value.code is ErrorCode.CANCELLED
    assert future.cancelled() and trace.abandoned == 1 and trace.cleaned_up


def test_a_result_delivered_before_the_cancel_is_consumed_not_lost() -> None:
    trace = Trace()
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    future.set_result("instance")
    token = CancelToken()
    with loop_in_thread() as loop:
        assert drive_blocking(wait_forever(trace, future), loop=loop, clock=ManualClock(), cancel=token) == "instance"
    token.cancel()  # after the answer: nothing to withdraw, nothing handed on twice
    assert trace.abandoned == 0 and trace.failure is None
