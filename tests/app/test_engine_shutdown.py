"""Stopping an engine past its drain timeout, and unloading a model under running requests.

Requests the drain leaves behind (one running on the only instance, others queued behind it) must fail
with UNAVAILABLE saying the version was unloaded and where to retry, never with the error of a runtime
released under them, and nothing may log a traceback. Both schedulers: the direct one (an instance pool)
and the dynamic batcher (its own queue). The python model blocks, bounded, on a file that never comes, and
marks each request it starts, so the tests wait on those marks, never on time.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from modelserve import Engine, ErrorCode
from modelserve.core.errors import QueueError
from tests.model_builders import write_python_model
from tests.waiting import wait_until_async

# Marks "started-<tag>" for every request it runs, then waits for the file "release" (up to 20 s).
BLOCKING_MODEL = """
    import time
    from pathlib import Path

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            self.folder = Path(context.parameters["folder"])

        def infer(self, inputs):
            tags = inputs["tag"].reshape(-1)
            for tag in tags:
                (self.folder / ("started-" + tag.decode())).touch()
            deadline = time.monotonic() + 20
            while not (self.folder / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            return {"done": np.ones(inputs["tag"].shape, dtype=bool)}
"""

DIRECT_CONFIG = """
    backend: "python"
    max_batch_size: 0
    input [ {{ name: "tag" data_type: TYPE_STRING dims: [ 1 ] }} ]
    output [ {{ name: "done" data_type: TYPE_BOOL dims: [ 1 ] }} ]
    instance_group [ {{ count: {count} kind: KIND_CPU }} ]
    parameters {{ key: "folder" value: {{ string_value: "{folder}" }} }}
"""

BATCHING_CONFIG = """
    backend: "python"
    max_batch_size: 4
    input [ {{ name: "tag" data_type: TYPE_STRING dims: [ 1 ] }} ]
    output [ {{ name: "done" data_type: TYPE_BOOL dims: [ 1 ] }} ]
    instance_group [ {{ count: {count} kind: KIND_CPU }} ]
    dynamic_batching {{ }}
    parameters {{ key: "folder" value: {{ string_value: "{folder}" }} }}
"""

SHUTTING_DOWN = "the server is shutting down; retry on another replica"


def blocking_repository(tmp_path: Path, config: str, *, count: int = 1) -> Path:
    repo = tmp_path / "repo"
    write_python_model(repo / "blocking", BLOCKING_MODEL, config.format(count=count, folder=tmp_path))
    return repo


def tagged(tag: str, *, batching: bool) -> dict[str, np.ndarray]:
    return {"tag": np.array([[tag.encode()]] if batching else [tag.encode()], dtype=object)}


async def start_running_and_queued(engine: Engine, tmp_path: Path, *, batching: bool) -> list[asyncio.Task[object]]:
    """One request running on the only instance, then two queued behind it."""
    scheduler = engine.manager.loaded_versions("blocking")[0].scheduler
    running = asyncio.ensure_future(engine.infer("blocking", tagged("running", batching=batching)))
    await wait_until_async((tmp_path / "started-running").exists, what="the first request to run")
    queued = [asyncio.ensure_future(engine.infer("blocking", tagged(f"q{i}", batching=batching))) for i in range(2)]
    await wait_until_async(lambda: scheduler.queue_depth == 2, what="two requests to queue")
    return [running, *queued]


@pytest.mark.parametrize("config", [DIRECT_CONFIG, BATCHING_CONFIG], ids=["direct", "dynamic-batching"])
def test_stop_past_the_drain_timeout_cuts_requests_short_with_unavailable(
    tmp_path: Path, config: str, caplog: pytest.LogCaptureFixture
) -> None:
    batching = config is BATCHING_CONFIG

    async def scenario() -> None:
        repo = blocking_repository(tmp_path, config)
        engine = Engine.from_repository(repo, load="*", config={"server": {"drain_timeout_s": 0.2}})
        await engine.start()
        try:
            await engine.wait_loaded()
            requests = await start_running_and_queued(engine, tmp_path, batching=batching)
        finally:
            await engine.stop()
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, QueueError), f"expected a cut-short QueueError, got {outcome!r}"
            assert outcome.code is ErrorCode.UNAVAILABLE
            assert outcome.message.endswith(SHUTTING_DOWN), outcome.message
        running, *queued = outcomes
        assert str(running).startswith("model 'blocking' version 1 was unloaded while this request ran: ")
        assert all(
            str(q).startswith("model 'blocking' version 1 was unloaded before this request ran: ") for q in queued
        )
        assert not list(tmp_path.glob("started-q*")), "a queued request ran on the unloaded model"

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR] == []


def test_unload_past_the_drain_timeout_says_retry_and_the_model_serves_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        repo = blocking_repository(tmp_path, DIRECT_CONFIG)
        config = {"server": {"drain_timeout_s": 0.2}}
        async with Engine.from_repository(repo, load="*", config=config) as engine:
            requests = await start_running_and_queued(engine, tmp_path, batching=False)
            await engine.unload("blocking")
            outcomes = await asyncio.gather(*requests, return_exceptions=True)
            for outcome in outcomes:
                assert isinstance(outcome, QueueError) and outcome.code is ErrorCode.UNAVAILABLE, repr(outcome)
                assert "model 'blocking' version 1 was unloaded" in outcome.message
                assert outcome.message.endswith("the version was unloaded or replaced; retry the request")
            (tmp_path / "release").touch()
            await engine.load("blocking")
            served = await engine.infer("blocking", tagged("after", batching=False))
            assert served.outputs["done"].tolist() == [True]

    asyncio.run(scenario())
