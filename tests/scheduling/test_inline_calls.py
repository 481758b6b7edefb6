"""The direct scheduler runs a microseconds model in place on the loop (``scheduling.inline_below_us``).

Two hand-offs between threads per request cost more than a 12 µs model (iris: unpinned on 2 cores, c=32,
3,066 -> 4,549 req/s and 316 -> 219 µs of server CPU per request in place). Only in-process runtimes
qualify (a python-runtime call waits on a pipe), and only once measured: the first calls hand off. The
decision is read from the steps the scheduler yields, so no timing is asserted: a bound of 10 s makes every
measured call "tiny", a bound of 1 ns none.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from modelserve.core.context import EMPTY_CONTEXT
from modelserve.core.datatypes import Datatype
from modelserve.core.inference import InferRequest
from modelserve.core.steps import RunBlocking, Steps
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.scheduling.scheduler import _INLINE_AFTER_CALLS, DirectScheduler
from tests.fakes import ManualClock
from tests.scheduling.test_batcher_timing import SIGNATURE, GatedModel


class InProcessModel(GatedModel):
    runs_in_process = True


def scheduler(model: GatedModel, inline_below_ns: int) -> DirectScheduler:
    return DirectScheduler(
        signature=SIGNATURE,
        version="1",
        runtimes=[model],
        statistics=ModelVersionStatistics("timed", "1"),
        max_queue_size=8,
        clock=ManualClock(),
        inline_below_ns=inline_below_ns,
    )


def one_request(direct: DirectScheduler, tag: float) -> Iterator[bool]:
    """Carry one request's steps out on this thread, yielding each RunBlocking's ``inline`` flag."""
    request = InferRequest("timed", "1", {"x": np.full((1, 2), tag, np.float32)}, {"x": Datatype.FP32})
    steps: Steps[dict[str, np.ndarray]] = direct.execute(request, ["y"], EMPTY_CONTEXT)
    value = None
    try:
        while True:
            step = steps.send(value)
            assert isinstance(step, RunBlocking), "a free instance: the request runs at once"
            yield step.inline
            value = step.call()
    except StopIteration as done:
        assert done.value["y"][0, 0] == 2 * tag


def inline_flags(direct: DirectScheduler, count: int) -> list[bool]:
    return [flag for tag in range(count) for flag in one_request(direct, float(tag))]


def test_a_measured_fast_in_process_model_runs_in_place() -> None:
    flags = inline_flags(scheduler(InProcessModel(), inline_below_ns=10**10), _INLINE_AFTER_CALLS + 3)
    assert flags == [False] * _INLINE_AFTER_CALLS + [True] * 3, "measured first, then in place"


def test_a_slow_model_or_one_in_another_process_always_hands_off() -> None:
    assert not any(inline_flags(scheduler(InProcessModel(), inline_below_ns=1), _INLINE_AFTER_CALLS + 3))
    assert not any(inline_flags(scheduler(GatedModel(), inline_below_ns=10**10), _INLINE_AFTER_CALLS + 3))
    assert not any(inline_flags(scheduler(InProcessModel(), inline_below_ns=0), _INLINE_AFTER_CALLS + 3))


def test_in_place_calls_still_come_from_the_loops_driver_and_answer() -> None:
    import asyncio

    from modelserve.core.steps import drive

    direct = scheduler(InProcessModel(), inline_below_ns=10**10)
    inline_flags(direct, _INLINE_AFTER_CALLS)  # measured: the next calls run in place
    loop_thread: list[int] = []

    async def main() -> float:
        loop_thread.append(threading.get_ident())
        request = InferRequest("timed", "1", {"x": np.full((1, 2), 7.0, np.float32)}, {"x": Datatype.FP32})
        outputs = await drive(direct.execute(request, ["y"], EMPTY_CONTEXT), clock=ManualClock())
        return float(outputs["y"][0, 0])

    assert asyncio.run(main()) == 14.0
    assert direct.in_flight == 0, "the instance and the admission were given back"
