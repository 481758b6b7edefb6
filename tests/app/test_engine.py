"""The in-process API (``modelserve.Engine``): the server's engine without a socket.

These are the seeds' exercises, run through the same engine ``modelserve serve`` wraps: a burst of first
requests loads a model once; two slow models run at the same time; the global in-flight limit refuses the
excess at once and names the limit; a request's deadline holds; a failed load reaches every waiter and
can be retried. The python models here coordinate through files in ``tmp_path`` (a model that must
overlap with another waits, bounded, for the other's marker), so no test asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from modelserve import Engine, ErrorCode, InferResult, ModelServeError
from modelserve.config import SettingsError
from modelserve.core.errors import ModelLoadError, QueueError, ValidationError
from tests.model_builders import iris_repository, write_python_model
from tests.server_process import EXAMPLES
from tests.waiting import wait_until_async

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]

# Waits (bounded) until the file named by the "wait_for" input exists, after creating the "mark" file;
# "loads" gets a line per load() so tests count loads.
GATED_MODEL = """
    import time
    from pathlib import Path

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            folder = Path(context.parameters["folder"])
            if (folder / "broken").exists():
                raise RuntimeError("the weights are corrupt (test flag 'broken' is set)")
            with (folder / "loads").open("a") as f:
                f.write(context.name + "\\n")
            self.folder = folder

        def infer(self, inputs):
            tag = inputs["tag"][0].decode()
            (self.folder / ("started-" + tag)).touch()
            wait_for = inputs["wait_for"][0].decode()
            seen = not wait_for
            deadline = time.monotonic() + 20
            while not seen and time.monotonic() < deadline:
                seen = (self.folder / wait_for).exists()
                time.sleep(0.005)
            with (self.folder / "calls").open("a") as f:
                f.write(tag + "\\n")
            return {"saw": np.array([seen])}
"""

GATED_CONFIG = """
    backend: "python"
    max_batch_size: 0
    input [
      {{ name: "tag" data_type: TYPE_STRING dims: [ 1 ] }},
      {{ name: "wait_for" data_type: TYPE_STRING dims: [ 1 ] }}
    ]
    output [ {{ name: "saw" data_type: TYPE_BOOL dims: [ 1 ] }} ]
    parameters {{ key: "folder" value: {{ string_value: "{folder}" }} }}
"""


def gated_repository(tmp_path: Path, *names: str) -> Path:
    repo = tmp_path / "repo"
    for name in names:
        write_python_model(repo / name, GATED_MODEL, GATED_CONFIG.format(folder=tmp_path))
    return repo


def gated(tag: str, wait_for: str = "") -> dict[str, np.ndarray]:
    return {"tag": np.array([tag.encode()], dtype=object), "wait_for": np.array([wait_for.encode()], dtype=object)}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_the_quick_start_serves_iris_and_text_stats_concurrently() -> None:
    async def scenario() -> None:
        async with Engine.from_repository(EXAMPLES, load=["iris", "text_stats"]) as engine:
            x = np.array([IRIS_ROW], dtype=np.float32)
            results = await asyncio.gather(*(engine.infer("iris", {"input-0": x}) for _ in range(200)))
            assert all(isinstance(r, InferResult) and r.model_version == "1" for r in results)
            probabilities = results[0].outputs["probabilities"]
            assert probabilities.shape == (1, 3) and results[0].outputs["label"].tolist() == [[0]]
            assert all(np.array_equal(r.outputs["probabilities"], probabilities) for r in results)
            text = await engine.infer("text_stats", {"text": np.array([b"hi", "d\u00e9j\u00e0"], dtype=object)})
            assert text.outputs["upper"].tolist() == [b"HI", "D\u00c9J\u00c0".encode()]
            assert text.outputs["length"].tolist() == [2, 6]
            assert engine.ready()
            assert {(e.name, e.state.value) for e in engine.models()} >= {("iris", "READY"), ("text_stats", "READY")}
            stats = await engine.statistics("iris")
            assert stats[0].inference_count >= 200
            assert 'nv_inference_request_success{model="iris",version="1"}' in engine.metrics_text()

    run(scenario)


def test_errors_are_the_servers_domain_errors_and_the_next_request_works() -> None:
    async def scenario() -> None:
        async with Engine.from_repository(EXAMPLES, load=["iris"]) as engine:
            with pytest.raises(ModelServeError) as unknown:
                await engine.infer("irs", {"input-0": np.zeros((1, 4), np.float32)})
            assert unknown.value.code is ErrorCode.NOT_FOUND and "GET /v2/repository/index" in unknown.value.message
            with pytest.raises(ValidationError, match=r"shape \[1, 3\].*expects \[-1, 4\]"):
                await engine.infer("iris", {"input-0": np.zeros((1, 3), np.float32)})
            with pytest.raises(ValidationError, match="numpy dtype complex64"):
                await engine.infer("iris", {"input-0": np.zeros((1, 4), np.complex64)})
            with pytest.raises(ValidationError, match="reserved"):
                await engine.infer("iris", {"input-0": np.zeros((1, 4), np.float32)}, parameters={"triton_x": 1})
            ok = await engine.infer("iris", {"input-0": np.array([IRIS_ROW], np.float32)}, outputs=["label"])
            assert list(ok.outputs) == ["label"]

    run(scenario)


def test_config_is_validated_like_the_servers(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"server\.max_inflight_requests"):
        Engine.from_repository(EXAMPLES, config={"server": {"max_inflight_requests": 0}})
    config = tmp_path / "modelserve.yaml"
    config.write_text("server:\n  max_inflight_requests: 3\n")
    assert Engine.from_repository(EXAMPLES, config=config).settings.server.max_inflight_requests == 3

    async def missing_repository() -> None:
        with pytest.raises(SettingsError, match=r"repository\.path"):
            async with Engine.from_repository(tmp_path / "nowhere"):
                pass

    run(missing_repository)


def test_a_burst_of_first_requests_loads_the_model_once(tmp_path: Path) -> None:
    repo = gated_repository(tmp_path, "lazy")

    async def scenario() -> None:
        config = {"repository": {"load_on_demand": True}}
        async with Engine.from_repository(repo, load=[], config=config) as engine:
            assert not lines(tmp_path / "loads")
            results = await asyncio.gather(*(engine.infer("lazy", gated(f"r{i}")) for i in range(200)))
            assert all(bool(r.outputs["saw"][0]) for r in results)
            assert lines(tmp_path / "loads") == ["lazy"]
            assert len(lines(tmp_path / "calls")) == 200

    run(scenario)


def test_requests_for_different_models_run_at_the_same_time(tmp_path: Path) -> None:
    repo = gated_repository(tmp_path, "slow_a", "slow_b")

    async def scenario() -> None:
        async with Engine.from_repository(repo, load="*") as engine:
            # Each waits for the other to have started: run one after the other, the first would time out.
            a, b = await asyncio.gather(
                engine.infer("slow_a", gated("a", wait_for="started-b")),
                engine.infer("slow_b", gated("b", wait_for="started-a")),
            )
            assert bool(a.outputs["saw"][0]) and bool(b.outputs["saw"][0])

    run(scenario)


def test_the_global_inflight_limit_refuses_the_excess_at_once_naming_the_limit(tmp_path: Path) -> None:
    repo = gated_repository(tmp_path, "held")

    async def scenario() -> None:
        config = {"server": {"max_inflight_requests": 2}}
        async with Engine.from_repository(repo, load="*", config=config) as engine:
            held = [asyncio.ensure_future(engine.infer("held", gated(f"h{i}", wait_for="release"))) for i in range(2)]
            await wait_until_async(lambda: engine.gate.inflight == 2, what="both held requests to be admitted")
            with pytest.raises(QueueError) as refused:
                await engine.infer("held", gated("excess"))
            assert refused.value.code is ErrorCode.UNAVAILABLE
            assert "server.max_inflight_requests=2" in refused.value.message and refused.value.retry_after_s
            (tmp_path / "release").touch()
            assert all(bool(r.outputs["saw"][0]) for r in await asyncio.gather(*held))
            assert "excess" not in lines(tmp_path / "calls")
            await engine.infer("held", gated("after"))  # the next request is admitted again

    run(scenario)


def test_a_requests_deadline_holds_and_an_expired_request_never_runs(tmp_path: Path) -> None:
    repo = gated_repository(tmp_path, "single")

    async def scenario() -> None:
        async with Engine.from_repository(repo, load="*") as engine:
            busy = asyncio.ensure_future(engine.infer("single", gated("busy", wait_for="release")))
            await wait_until_async(lambda: (tmp_path / "started-busy").exists(), what="the only instance to be busy")
            with pytest.raises(QueueError) as late:
                await engine.infer("single", gated("late"), timeout_s=0.05)
            assert late.value.code is ErrorCode.DEADLINE_EXCEEDED and "timeout_s" in late.value.message
            (tmp_path / "release").touch()
            await busy
            await engine.infer("single", gated("after"))
            assert lines(tmp_path / "calls") == ["busy", "after"]  # "late" left the queue without running
            with pytest.raises(ValidationError, match="timeout_s"):
                await engine.infer("single", gated("bad"), timeout_s=-1)

    run(scenario)


def test_a_failed_load_reaches_every_waiter_and_can_be_retried(tmp_path: Path) -> None:
    repo = gated_repository(tmp_path, "flaky")
    (tmp_path / "broken").touch()

    async def scenario() -> None:
        config = {"repository": {"load_on_demand": True}}
        async with Engine.from_repository(repo, load=[], config=config) as engine:
            outcomes = await asyncio.gather(
                *(engine.infer("flaky", gated(f"r{i}")) for i in range(20)), return_exceptions=True
            )
            assert all(isinstance(o, ModelLoadError) and "weights are corrupt" in o.message for o in outcomes)
            [entry] = [e for e in engine.models() if e.name == "flaky"]
            assert entry.state.value == "FAILED" and "weights are corrupt" in entry.reason
            (tmp_path / "broken").unlink()
            result = await engine.infer("flaky", gated("retry"))
            assert bool(result.outputs["saw"][0]) and lines(tmp_path / "loads") == ["flaky"]

    run(scenario)


def test_load_and_unload_from_python_and_leaving_reaps_the_workers(tmp_path: Path) -> None:
    import psutil

    repo = iris_repository(tmp_path)
    write_python_model(repo / "worker", GATED_MODEL, GATED_CONFIG.format(folder=tmp_path))

    # Only the engine's own workers count: a server another test started may be a child of this process.
    before = {child.pid for child in psutil.Process().children(recursive=True)}

    def workers() -> set[int]:
        return {child.pid for child in psutil.Process().children(recursive=True)} - before

    async def scenario() -> None:
        async with Engine.from_repository(repo, load=["iris"]) as engine:
            with pytest.raises(ModelServeError) as not_loaded:
                await engine.infer("worker", gated("x"))
            assert not_loaded.value.code is ErrorCode.UNAVAILABLE
            await engine.load("worker")
            assert workers(), "the python model runs in a worker process"
            await engine.infer("worker", gated("x"))
            await engine.unload("iris")
            with pytest.raises(ModelServeError, match="not loaded"):
                await engine.infer("iris", {"input-0": np.array([IRIS_ROW], np.float32)})

    run(scenario)
    assert not workers(), "leaving the engine reaps its worker processes"
