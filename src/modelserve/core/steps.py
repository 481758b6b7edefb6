"""One request path, two ways of waiting: the steps a request's path yields, and the drivers that wait.

Every per-request decision (resolve the version, admit, take an instance or queue, run) is written once,
as a generator that yields a :class:`Step` wherever it has to wait and receives the step's result::

    dataplane.infer_steps ─yield from─> router.resolve ─> scheduler.execute
                      │ yields RunBlocking | WaitFor | OnLoop | PostToLoop
          ┌───────────┴───────────────┐
       drive()                     drive_blocking()
       on the event loop (REST,    on a thread that is not the loop's (gRPC calls):
       in-process Engine):         RunBlocking runs right here (no thread hand-off),
       RunBlocking in its          WaitFor blocks this thread, OnLoop is submitted to
       executor, WaitFor and       the loop and waited for, PostToLoop is
       OnLoop awaited              call_soon_threadsafe

So the async and the blocking paths cannot drift apart: they share every line that decides, and differ
only in the dozen lines below that wait. A generator that yields nothing (a loaded model on the gRPC fast
path) costs a few generator frames and no step at all.

Waiting ends three ways, handled here once for both drivers: the step's result (sent into the
generator), its exception (thrown in), or the caller giving up (deadline passed, client gone): then the
step is *abandoned* (a queued waiter withdraws, a delivered instance is handed on) and a
:class:`~modelserve.core.errors.QueueError` with DEADLINE_EXCEEDED or CANCELLED is thrown in, so the
generator's ``finally`` blocks (admission, statistics) run exactly as for any other failure.
A :class:`RunBlocking` call is never abandoned before it starts: it owns what it was given (an instance)
and gives it back itself when it ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from modelserve.core.cancellation import CancelToken
from modelserve.core.clock import Clock
from modelserve.core.errors import ErrorCode, QueueError

__all__ = ["OnLoop", "PostToLoop", "RunBlocking", "Step", "Steps", "WaitFor", "drive", "drive_blocking"]

T = TypeVar("T")


# Plain (not frozen) slotted dataclasses: a frozen one's __init__ costs ~150 ns more, and the gRPC fast
# path creates one step per request. Nothing mutates a step after it is yielded.
@dataclass(slots=True)
class RunBlocking:
    """Run ``call`` (blocking) and resume with its result: in ``executor`` from the loop (None: the loop's
    default executor), in place on a thread. ``call`` must release what it holds itself, on its thread."""

    call: Callable[[], Any]
    executor: concurrent.futures.Executor | None = None
    # The loop's driver runs the call in place instead, blocking the loop for it: only for calls known to
    # take microseconds, where the two hand-offs between threads would cost more than the call itself.
    inline: bool = False


@dataclass(slots=True)
class WaitFor:
    """Wait for ``future``, which another thread or the loop completes. ``abandon`` is called once the
    waiter has given up for good: withdraw it if it still waits, hand on what it was given if it was."""

    future: concurrent.futures.Future[Any]
    abandon: Callable[[], None]


@dataclass(slots=True)
class OnLoop:
    """Run the coroutine ``make()`` on the event loop and resume with its result (a load, an alias read)."""

    make: Callable[[], Coroutine[Any, Any, Any]]


@dataclass(slots=True)
class PostToLoop:
    """Call ``call`` on the event loop's thread without waiting for it (queueing into a loop-owned queue)."""

    call: Callable[[], None]


Step = RunBlocking | WaitFor | OnLoop | PostToLoop
Steps = Generator[Step, Any, T]


def deadline_exceeded() -> QueueError:
    return QueueError(
        "the request's deadline passed before it was answered (the client's gRPC deadline or the in-process "
        "timeout_s); retry with a longer deadline or send less load",
        code=ErrorCode.DEADLINE_EXCEEDED,
    )


def cancelled() -> QueueError:
    return QueueError("the request was cancelled: its client went away", code=ErrorCode.CANCELLED)


class _Progress(Generic[T]):
    """Where a request's generator stands: what to resume it with (the last step's value or error), and
    its result once it has returned. The one loop mechanic both drivers share."""

    __slots__ = ("error", "result", "steps", "value")

    def __init__(self, steps: Steps[T]) -> None:
        self.steps = steps
        self.value: Any = None
        self.error: BaseException | None = None
        self.result: T

    def next_step(self) -> Step | None:
        """Resume the generator; its next step, or None once it has returned (``result`` is then set)."""
        try:
            step = self.steps.send(self.value) if self.error is None else self.steps.throw(self.error)
        except StopIteration as stop:
            self.result = stop.value
            return None
        self.value = self.error = None
        return step


def _remaining_s(deadline_ns: int | None, clock: Clock) -> float | None:
    if deadline_ns is None:
        return None
    return max(0.0, (deadline_ns - clock.now_ns()) / 1e9)


# -- on the event loop --------------------------------------------------------------------------------


def _on_loop_future(future: concurrent.futures.Future[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """An asyncio future that follows ``future``; completes without a thread wake-up when ``future`` is
    completed on the loop's own thread (the batcher settles its requests there)."""
    mirror: asyncio.Future[T] = loop.create_future()
    loop_thread = threading.get_ident()

    def copy(done: concurrent.futures.Future[T]) -> None:
        if mirror.done():
            return
        if done.cancelled():
            mirror.cancel()
        elif (failure := done.exception()) is not None:
            mirror.set_exception(failure)
        else:
            mirror.set_result(done.result())

    def on_done(done: concurrent.futures.Future[T]) -> None:
        if threading.get_ident() == loop_thread:
            copy(done)
        else:
            loop.call_soon_threadsafe(copy, done)

    future.add_done_callback(on_done)
    return mirror


async def _wait(step: Step, loop: asyncio.AbstractEventLoop, timeout_s: float | None) -> Any:
    if isinstance(step, PostToLoop):
        step.call()
        return None
    if isinstance(step, RunBlocking):
        if step.inline:
            return step.call()
        # Shielded: a caller that gives up stops waiting; the call finishes on its thread regardless.
        running = asyncio.shield(loop.run_in_executor(step.executor, step.call))
        return await (running if timeout_s is None else asyncio.wait_for(running, timeout_s))
    if isinstance(step, OnLoop):
        coroutine = step.make()
        return await (coroutine if timeout_s is None else asyncio.wait_for(coroutine, timeout_s))
    mirror = _on_loop_future(step.future, loop)
    try:
        return await (mirror if timeout_s is None else asyncio.wait_for(mirror, timeout_s))
    except (asyncio.CancelledError, TimeoutError):
        step.abandon()
        raise


async def drive(steps: Steps[T], *, clock: Clock, deadline_ns: int | None = None) -> T:
    """Carry ``steps`` out on the running event loop; returns the generator's result.

    Raises what the generator raises; a passed ``deadline_ns`` (on ``clock``) raises DEADLINE_EXCEEDED.
    Cancelling the calling task abandons the current step and throws ``CancelledError`` into ``steps``.
    """
    loop = asyncio.get_running_loop()
    progress = _Progress(steps)
    try:
        while (step := progress.next_step()) is not None:
            try:
                progress.value = await _wait(step, loop, _remaining_s(deadline_ns, clock))
            except TimeoutError:
                progress.error = deadline_exceeded()
            except BaseException as exc:  # thrown into the generator, which re-raises it
                progress.error = exc
        return progress.result
    finally:
        steps.close()


# -- on a thread --------------------------------------------------------------------------------------


def _wait_blocking(
    step: Step, loop: asyncio.AbstractEventLoop, cancel: CancelToken | None, timeout_s: float | None
) -> Any:
    if isinstance(step, RunBlocking):
        return step.call()
    if isinstance(step, PostToLoop):
        loop.call_soon_threadsafe(step.call)
        return None
    assert not isinstance(step, OnLoop), "drive_blocking hands OnLoop steps to the loop first"
    if cancel is not None and cancel.is_cancelled:
        step.future.cancel()
        step.abandon()
        raise cancelled()
    try:
        return step.future.result(timeout=timeout_s)
    except concurrent.futures.CancelledError:
        step.abandon()
        raise cancelled() from None
    except concurrent.futures.TimeoutError:
        step.future.cancel()
        step.abandon()
        raise deadline_exceeded() from None


def drive_blocking(
    steps: Steps[T],
    *,
    loop: asyncio.AbstractEventLoop,
    clock: Clock,
    cancel: CancelToken | None = None,
    deadline_ns: int | None = None,
) -> T:
    """Carry ``steps`` out on this thread, which must not be ``loop``'s; returns the generator's result.

    ``cancel`` fires when the caller goes away: a step still waiting is withdrawn and CANCELLED is thrown
    into ``steps``. A passed ``deadline_ns`` does the same with DEADLINE_EXCEEDED.
    """
    current: list[Step | None] = [None]
    if cancel is not None:
        # Only cancels: a result that was already delivered is consumed by this thread as usual.
        cancel.add_callback(lambda: _cancel_wait(current[0]))
    progress = _Progress(steps)
    try:
        while (step := progress.next_step()) is not None:
            if isinstance(step, OnLoop):
                step = WaitFor(asyncio.run_coroutine_threadsafe(step.make(), loop), _nothing_to_hand_on)
            current[0] = step
            try:
                progress.value = _wait_blocking(step, loop, cancel, _remaining_s(deadline_ns, clock))
            except BaseException as exc:  # thrown into the generator, which re-raises it
                progress.error = exc
            current[0] = None
        return progress.result
    finally:
        steps.close()


def _nothing_to_hand_on() -> None:
    return None


def _cancel_wait(step: Step | None) -> None:
    if isinstance(step, WaitFor):
        step.future.cancel()
