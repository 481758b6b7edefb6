"""The dynamic batcher's timing rules in process, with time in the test's hands.

The batcher task waits with ``asyncio.timeout`` for the moment its clock says the next decision is due.
Here the event loop's own time *is* the manual clock (``ManualClockLoop``), so advancing the clock is what
lets that timeout fire, and nothing happens before: a lone request waits exactly ``max_queue_delay``, a
queued deadline is answered at its instant while the only instance is busy, queue times are exact. No
sleeps: loop-only steps are awaited turn by turn (``turns_until``), the model's thread through events.
The model is a small in-test runtime whose calls can be held at a gate (the scheduler is under test).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from modelserve.core.context import EMPTY_CONTEXT
from modelserve.core.datatypes import Datatype
from modelserve.core.errors import ErrorCode, QueueError
from modelserve.core.inference import InferRequest
from modelserve.core.signature import ModelSignature, TensorSpec
from modelserve.core.steps import drive
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.runtimes.base import MemoryFootprint, RuntimeMetadata
from modelserve.scheduling.batch_policy import BatchPolicy
from modelserve.scheduling.batcher import DynamicBatchScheduler
from modelserve.scheduling.request_queue import LevelPolicy, PriorityQueues
from tests.fakes import ManualClock
from tests.waiting import WaitTimeout

# A wrong wait here hangs on a frozen clock rather than failing an assertion: fail fast, with a traceback.
pytestmark = pytest.mark.timeout(30)

MS = 1_000_000  # ns
GATE_S = 10.0  # the longest a held model call waits for the test to open its gate


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time is the manual clock: its timers fire when the test advances the clock."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self._manual = clock

    def time(self) -> float:
        return self._manual.now_ns() / 1e9


class GatedModel:
    """A runtime instance: y = 2x, recording the first column (the tag) of each call's rows. While
    ``hold`` is set, each call announces itself on ``entered`` and waits for ``gate``."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []
        self.hold = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def load(self) -> RuntimeMetadata:
        return RuntimeMetadata()

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.calls.append([float(v) for v in x[:, 0]])
        if self.hold:
            self.entered.set()
            if not self.gate.wait(GATE_S):
                raise RuntimeError("the test never opened the gate")
        return {"y": x * 2}

    def unload(self) -> None:
        pass

    @property
    def is_healthy(self) -> bool:
        return True

    def memory_bytes(self) -> MemoryFootprint:
        return MemoryFootprint(1, "floor")


SIGNATURE = ModelSignature(
    name="timed",
    platform="python",
    max_batch_size=8,
    inputs=(TensorSpec("x", Datatype.FP32, (2,)),),
    outputs=(TensorSpec("y", Datatype.FP32, (2,)),),
)


class Batcher:
    """One batching model version on the manual clock: the scheduler, its model and its statistics."""

    def __init__(self, clock: ManualClock, policy: BatchPolicy, level: LevelPolicy | None = None) -> None:
        self.clock = clock
        self.model = GatedModel()
        self.statistics = ModelVersionStatistics("timed", "1")
        queues = PriorityQueues(
            levels=1, default_level=1, policies={1: level or LevelPolicy(max_queue_size=16)}, owner="timed"
        )
        self.scheduler = DynamicBatchScheduler(
            signature=SIGNATURE,
            version="1",
            runtimes=[self.model],
            statistics=self.statistics,
            policy=policy,
            queues=queues,
            preserve_ordering=False,
            clock=clock,
        )

    def submit(self, tag: float, rows: int = 1, timeout_us: int = 0) -> asyncio.Task[dict[str, np.ndarray]]:
        x = np.full((rows, 2), tag, np.float32)
        request = InferRequest("timed", "1", {"x": x}, {"x": Datatype.FP32}, timeout_us=timeout_us)
        return asyncio.create_task(drive(self.scheduler.execute(request, ["y"], EMPTY_CONTEXT), clock=self.clock))

    async def model_busy(self) -> None:
        """Until the held model call has started on its thread (a real wait, bounded)."""
        assert await asyncio.to_thread(self.model.entered.wait, GATE_S), "the model was never called"


async def turns_until(predicate: Callable[[], object], what: str, turns: int = 200) -> None:
    """Let the loop run until ``predicate`` holds, for at most ``turns`` turns (time does not move)."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise WaitTimeout(f"{what}: not within {turns} loop turns")


async def idle_turns(turns: int = 50) -> None:
    """Give the loop ``turns`` turns to do whatever is due now (time does not move)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def run(clock: ManualClock, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=lambda: ManualClockLoop(clock)) as runner:
        runner.run(scenario())


def triton(delay_ms: float = 5, preferred: tuple[int, ...] = (), max_batch_size: int = 8) -> BatchPolicy:
    return BatchPolicy(
        max_batch_size=max_batch_size,
        preferred_batch_sizes=preferred,
        max_queue_delay_ns=round(delay_ms * MS),
        adaptive=False,
    )


def adaptive(max_batch_size: int = 8) -> BatchPolicy:
    return BatchPolicy(max_batch_size=max_batch_size, adaptive=True)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=1_000 * 1_000 * MS)


def test_triton_policy_holds_a_lone_request_exactly_max_queue_delay(clock: ManualClock) -> None:
    batcher = Batcher(clock, triton(delay_ms=5))

    async def scenario() -> None:
        await batcher.scheduler.start()
        lone = batcher.submit(1)
        await turns_until(lambda: batcher.scheduler.queue_depth == 1, "the request queued")
        clock.advance(0.005 - 1e-9)
        await idle_turns()
        assert batcher.scheduler.queue_depth == 1 and not lone.done(), "ran before max_queue_delay"
        clock.advance(1e-9)
        np.testing.assert_array_equal((await lone)["y"], [[2, 2]])
        batcher.scheduler.close()

    run(clock, scenario)
    assert batcher.model.calls == [[1.0]]
    assert batcher.statistics.queue.count == 1 and batcher.statistics.queue.ns == 5 * MS


def test_the_delay_counts_from_the_oldest_request_and_takes_what_came_meanwhile(clock: ManualClock) -> None:
    batcher = Batcher(clock, triton(delay_ms=5))

    async def scenario() -> None:
        await batcher.scheduler.start()
        first = batcher.submit(1)
        await turns_until(lambda: batcher.scheduler.queue_depth == 1, "the first request queued")
        clock.advance(0.003)
        second = batcher.submit(2, rows=2)
        await turns_until(lambda: batcher.scheduler.queue_depth == 2, "the second request queued")
        clock.advance(0.002 - 1e-9)
        await idle_turns()
        assert batcher.scheduler.queue_depth == 2, "the batch ran before the oldest request's delay"
        clock.advance(1e-9)
        assert (await first)["y"].shape == (1, 2) and (await second)["y"].shape == (2, 2)
        batcher.scheduler.close()

    run(clock, scenario)
    assert batcher.model.calls == [[1.0, 2.0, 2.0]]  # one batch of three rows
    assert batcher.statistics.queue.ns == 5 * MS + 2 * MS
    assert batcher.statistics.execution_count == 1 and set(batcher.statistics.batches) == {3}


def test_a_preferred_batch_size_runs_without_waiting(clock: ManualClock) -> None:
    batcher = Batcher(clock, triton(delay_ms=1000, preferred=(2,)))

    async def scenario() -> None:
        await batcher.scheduler.start()
        first = batcher.submit(1)
        await turns_until(lambda: batcher.scheduler.queue_depth == 1, "the first request queued")
        second = batcher.submit(2)
        await first
        await second
        batcher.scheduler.close()

    run(clock, scenario)  # the clock never moved
    assert batcher.model.calls == [[1.0, 2.0]]
    assert batcher.statistics.queue.ns == 0


def test_adaptive_policy_runs_a_lone_request_at_once_and_batches_what_queued_while_busy(clock: ManualClock) -> None:
    batcher = Batcher(clock, adaptive())
    batcher.model.hold = True

    async def scenario() -> None:
        await batcher.scheduler.start()
        busy = batcher.submit(1)  # an idle instance takes it at once (the clock has not moved)
        await batcher.model_busy()
        assert batcher.scheduler.queue_depth == 0
        queued = [batcher.submit(2), batcher.submit(3)]
        await turns_until(lambda: batcher.scheduler.queue_depth == 2, "two requests queued behind the busy one")
        clock.advance(0.007)
        await idle_turns()
        assert batcher.scheduler.queue_depth == 2, "nothing may run while the only instance is busy"
        batcher.model.gate.set()
        await busy
        for task in queued:
            await task
        batcher.scheduler.close()

    run(clock, scenario)
    assert batcher.model.calls == [[1.0], [2.0, 3.0]]
    assert batcher.statistics.queue.count == 3
    assert batcher.statistics.queue.ns == 0 + 2 * 7 * MS  # the lone one waited 0, the others 7 ms each


def test_a_queued_deadline_is_answered_at_its_instant_while_the_instance_is_busy(clock: ManualClock) -> None:
    """Triton #7512: the queue timeout fired only after the running inference ended."""
    batcher = Batcher(clock, adaptive(), LevelPolicy(max_queue_size=16, allow_timeout_override=True))
    batcher.model.hold = True

    async def scenario() -> None:
        await batcher.scheduler.start()
        busy = batcher.submit(1)
        await batcher.model_busy()
        late = batcher.submit(2, timeout_us=1_000)
        await turns_until(lambda: batcher.scheduler.queue_depth == 1, "the request with a deadline queued")
        clock.advance(0.001 - 1e-9)
        await idle_turns()
        assert not late.done(), "answered before its deadline"
        clock.advance(1e-9)
        await turns_until(late.done, "the deadline answered")
        assert not busy.done(), "the deadline waited for the running request"
        with pytest.raises(QueueError) as expired:
            late.result()
        assert expired.value.code is ErrorCode.DEADLINE_EXCEEDED
        assert "timed out after 1000 µs in the queue" in str(expired.value)
        batcher.model.gate.set()
        await busy
        batcher.scheduler.close()

    run(clock, scenario)
    assert batcher.model.calls == [[1.0]], "the expired request reached the model"
    assert batcher.statistics.fail.count == 1 and batcher.statistics.success.count == 1
    assert batcher.statistics.failures_by_reason == {"REJECTED": 1}
    assert batcher.statistics.failures_by_cause == {"timeout": 1}


def test_delay_action_moves_an_expired_request_behind_the_others(clock: ManualClock) -> None:
    level = LevelPolicy(max_queue_size=16, delay_on_timeout=True, allow_timeout_override=True)
    batcher = Batcher(clock, adaptive(max_batch_size=1), level)
    batcher.model.hold = True

    async def scenario() -> None:
        await batcher.scheduler.start()
        busy = batcher.submit(1)
        await batcher.model_busy()
        late = batcher.submit(5, timeout_us=1_000)  # queued first, but its timeout passes while it waits
        await turns_until(lambda: batcher.scheduler.queue_depth == 1, "the late request queued")
        clock.advance(0.001)
        await idle_turns()
        assert not late.done(), "under DELAY an expired request waits on, with no deadline"
        fresh = batcher.submit(6)
        await turns_until(lambda: batcher.scheduler.queue_depth == 2, "the fresh request queued")
        batcher.model.gate.set()
        for task in (busy, late, fresh):
            await task
        batcher.scheduler.close()

    run(clock, scenario)
    assert batcher.model.calls == [[1.0], [6.0], [5.0]]
