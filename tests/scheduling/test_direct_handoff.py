"""The direct scheduler hands a freed instance to the next queued request without a turn of the event loop.

Under a storm of refusals one turn of the loop is long (it reads and refuses every ready connection), and
when each hand-off from one request to the next waited for a turn, REST goodput collapsed to a few
requests a second (the reliability issue's 8 req/s at 32x capacity). So: the thread that frees an
instance starts the next queued request on the instance's executor itself. The proof here blocks the
loop outright while the running request ends: the queued one still runs, and its answer is there when
the loop runs again. Also: a queued request withdrawn before its turn never runs, and one queued when
the version closes fails at once with the unload message.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from modelserve.core.context import EMPTY_CONTEXT
from modelserve.core.datatypes import Datatype
from modelserve.core.errors import ErrorCode, ModelServeError
from modelserve.core.inference import InferRequest
from modelserve.core.steps import drive
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.scheduling.scheduler import DirectScheduler
from tests.fakes import ManualClock
from tests.scheduling.test_batcher_timing import GATE_S, SIGNATURE, GatedModel, turns_until

pytestmark = pytest.mark.timeout(30)


def scheduler(model: GatedModel) -> DirectScheduler:
    return DirectScheduler(
        signature=SIGNATURE,
        version="1",
        runtimes=[model],
        statistics=ModelVersionStatistics("timed", "1"),
        max_queue_size=8,
        clock=ManualClock(),
    )


def submit(direct: DirectScheduler, tag: float) -> asyncio.Task[dict[str, np.ndarray]]:
    request = InferRequest("timed", "1", {"x": np.full((1, 2), tag, np.float32)}, {"x": Datatype.FP32})
    return asyncio.create_task(drive(direct.execute(request, ["y"], EMPTY_CONTEXT), clock=ManualClock()))


async def _a_freed_instance_starts_the_queued_request_while_the_loop_is_blocked() -> None:
    model = GatedModel()
    model.hold = True
    direct = scheduler(model)
    first = submit(direct, 1.0)
    assert await asyncio.to_thread(model.entered.wait, GATE_S), "the first request never reached the model"
    second = submit(direct, 2.0)
    await turns_until(lambda: direct.queue_depth == 1, "the second request to queue")

    model.hold = False
    second_ran = threading.Event()
    original_infer = model.infer

    def infer(inputs, output_names):  # type: ignore[no-untyped-def]
        outputs = original_infer(inputs, output_names)
        if float(inputs["x"][0, 0]) == 2.0:
            second_ran.set()
        return outputs

    model.infer = infer  # type: ignore[method-assign]
    seen_while_blocked: list[bool] = []

    def block_the_loop() -> None:
        # On the loop's thread: open the gate (the first request ends on its executor thread) and keep the
        # loop from turning until the second request has run, or the bounded wait gives up.
        model.gate.set()
        seen_while_blocked.append(second_ran.wait(GATE_S))

    asyncio.get_running_loop().call_soon(block_the_loop)
    assert (await first)["y"][0, 0] == 2.0
    assert seen_while_blocked == [True], "the queued request waited for a turn of the loop"
    assert (await second)["y"][0, 0] == 4.0
    assert model.calls == [[1.0], [2.0]]


async def _a_queued_request_withdrawn_before_its_turn_never_runs() -> None:
    model = GatedModel()
    model.hold = True
    direct = scheduler(model)
    first = submit(direct, 1.0)
    assert await asyncio.to_thread(model.entered.wait, GATE_S)
    gone = submit(direct, 2.0)
    await turns_until(lambda: direct.queue_depth == 1, "the second request to queue")
    gone.cancel()
    await turns_until(lambda: direct.queue_depth == 0, "the cancelled request to leave the queue")
    model.hold = False
    model.gate.set()
    assert (await first)["y"][0, 0] == 2.0
    with pytest.raises(asyncio.CancelledError):
        await gone
    after = submit(direct, 3.0)  # the instance was not lost
    assert (await after)["y"][0, 0] == 6.0
    assert model.calls == [[1.0], [3.0]]


async def _requests_queued_when_the_version_closes_fail_at_once_with_the_reason() -> None:
    model = GatedModel()
    model.hold = True
    direct = scheduler(model)
    first = submit(direct, 1.0)
    assert await asyncio.to_thread(model.entered.wait, GATE_S)
    queued = [submit(direct, float(tag)) for tag in range(2, 6)]
    await turns_until(lambda: direct.queue_depth == 4, "four requests to queue")
    direct.close()
    for task in queued:
        with pytest.raises(ModelServeError) as caught:
            await task
        assert caught.value.code is ErrorCode.UNAVAILABLE
        assert "was unloaded before this request ran" in caught.value.message
    model.gate.set()
    await asyncio.gather(first, return_exceptions=True)
    assert model.calls == [[1.0]], "no queued request ran after the close"


@pytest.mark.parametrize(
    "scenario",
    [
        _a_freed_instance_starts_the_queued_request_while_the_loop_is_blocked,
        _a_queued_request_withdrawn_before_its_turn_never_runs,
        _requests_queued_when_the_version_closes_fail_at_once_with_the_reason,
    ],
    ids=lambda scenario: scenario.__name__.strip("_"),
)
def test_direct_hand_off(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())
