"""Shadow traffic (service/shadow.py): mirrored off the request path, never changing the answer, with an
agreement rate that matches what the shadow was built to do. The request path's independence is shown by a
shadow that cannot finish (it waits for a gate file) while the primary keeps answering: no timing asserts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve import Engine
from modelserve.core.context import RequestContext
from modelserve.core.datatypes import Datatype
from modelserve.core.errors import RuntimeFailure
from modelserve.core.inference import InferRequest, InferResult
from modelserve.routing.policy import Comparison, RoutingPolicy, ShadowSettings
from modelserve.service.shadow import ShadowDispatcher, outputs_agree
from tests.fakes import ManualClock
from tests.model_builders import write_onnx_scale
from tests.service.resilience_models import calls, write_flaky
from tests.waiting import wait_until, wait_until_async


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def set_policy(engine: Engine, model: str, document: dict[str, Any]) -> None:
    engine.router.policies.set(model, RoutingPolicy.model_validate(document))


def metric(engine: Engine, line_start: str) -> float | None:
    for line in engine.metrics_text().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_answer_never_waits_for_the_shadow_and_is_byte_identical_to_no_shadow(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_flaky(repo, tmp_path, "mirror", versions=2, factor="1", gated_version="1")  # 1 waits for open-gate
    inputs = [np.array([[i, i + 0.5]], np.float32) for i in range(5)]

    async def scenario() -> None:
        async with Engine.from_repository(repo, load="*") as engine:
            plain = [await engine.infer("mirror", {"x": x}) for x in inputs]
            set_policy(engine, "mirror", {"shadow": {"target": "1", "percent": 100, "compare": {"output": "y"}}})
            shadowed = [await engine.infer("mirror", {"x": x}) for x in inputs]
            # Every answer came back while the shadow is still stuck on its first copy.
            await wait_until_async(lambda: calls(tmp_path, "mirror", "1") == 1, what="the first shadow to start")
            summary = engine.dataplane.shadow_summary("mirror")
            assert summary is not None and summary["sent"] == 5 and summary["completed"] == 0
            for before, after in zip(plain, shadowed, strict=True):
                assert (after.model_name, after.model_version, after.arm, after.fallback, after.parameters) == (
                    before.model_name,
                    before.model_version,
                    before.arm,
                    before.fallback,
                    before.parameters,
                )
                assert after.output_datatypes == before.output_datatypes
                assert after.outputs["y"].tobytes() == before.outputs["y"].tobytes()
                assert after.outputs["y"].shape == before.outputs["y"].shape
            (tmp_path / "open-gate").touch()
            await wait_until_async(
                lambda: (engine.dataplane.shadow_summary("mirror") or {}).get("completed") == 5,
                what="the 5 shadows to complete",
            )
            summary = engine.dataplane.shadow_summary("mirror")
            assert summary is not None
            assert (summary["agreement"], summary["dropped"], summary["failed"]) == (1.0, 0, 0)
            assert metric(engine, 'modelserve_shadow_requests_total{model="mirror",outcome="sent"}') == 5.0
            assert metric(engine, 'modelserve_shadow_agreement_ratio{model="mirror"}') == 1.0
            assert engine.routing("mirror")["shadow"] == summary  # what GET /v2/models/mirror/routing shows

    run(scenario)


def test_the_agreement_metric_matches_a_shadow_built_to_disagree_on_a_known_share(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_onnx_scale(repo / "scaled" / "1" / "model.onnx", 1.0)
    write_onnx_scale(repo / "scaled" / "2" / "model.onnx", -1.0)  # argmax(-x) == argmax(x) only for flat rows
    (repo / "scaled" / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\nversion_policy: { all { } }\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
    )

    async def scenario() -> None:
        async with Engine.from_repository(repo, load="*") as engine:
            shadow = {"target": "2", "percent": 100, "compare": {"output": "y", "argmax": True}}
            set_policy(engine, "scaled", {"shadow": shadow})
            for i in range(100):
                row = [1.0, 1.0, 1.0] if i % 4 == 0 else [0.0, 1.0, 2.0]  # 25 flat rows agree, 75 disagree
                answer = await engine.infer("scaled", {"x": np.array([row], np.float32)}, version="1")
                assert answer.outputs["y"].tolist() == [row]
            await wait_until_async(
                lambda: (engine.dataplane.shadow_summary("scaled") or {}).get("completed") == 100,
                what="the 100 shadows to complete",
            )
            summary = engine.dataplane.shadow_summary("scaled")
            assert summary is not None and summary["compared"] == 100 and summary["agreement"] == 0.25
            assert metric(engine, 'modelserve_shadow_agreement_ratio{model="scaled"}') == 0.25
            assert metric(engine, 'modelserve_shadow_agreed_total{model="scaled"}') == 25.0
            assert metric(engine, 'modelserve_shadow_latency_delta_seconds{model="scaled"}') is not None

    run(scenario)


def test_a_full_shadow_queue_drops_and_counts_and_a_failing_shadow_is_counted_not_raised() -> None:
    release = threading.Event()
    started = threading.Event()
    seen: list[str] = []

    def runner(request: InferRequest, context: RequestContext) -> InferResult:
        seen.append(request.model_version)
        if request.id == "fails":
            raise RuntimeFailure("the shadow raised")
        started.set()
        assert release.wait(10)
        return InferResult("m", "2", {"y": np.ones(2, np.float32)}, {"y": Datatype.FP32})

    dispatcher = ShadowDispatcher(ManualClock(), max_queue=1)
    settings = ShadowSettings(target="2", percent=100, compare=Comparison(output="y"))
    primary = InferResult("m", "1", {"y": np.ones(2, np.float32)}, {"y": Datatype.FP32})

    def offer(request_id: str) -> None:
        request = InferRequest("m", "", {"x": np.zeros(2, np.float32)}, {"x": Datatype.FP32}, id=request_id)
        dispatcher.offer("m", settings, request, RequestContext(), primary, 0)

    offer("ignored")  # not started: nothing is queued
    assert dispatcher.summary("m") is None
    dispatcher.start(runner)
    try:
        offer("fails")
        wait_until(lambda: (dispatcher.summary("m") or {}).get("failed") == 1, what="the failing shadow")
        offer("a")
        assert started.wait(10)  # the worker holds "a"
        offer("b")  # queued
        offer("c")  # the queue (1) is full: dropped
        summary = dispatcher.summary("m")
        assert summary is not None and (summary["sent"], summary["dropped"]) == (3, 1)
        release.set()
        wait_until(lambda: (dispatcher.summary("m") or {}).get("completed") == 2, what="a and b")
    finally:
        release.set()
        dispatcher.stop()
    assert seen == ["2", "2", "2"] and dispatcher.summary("m") == {
        "sent": 3,
        "dropped": 1,
        "failed": 1,
        "completed": 2,
        "compared": 2,
        "agreement": 1.0,
        "latency_delta_ms": 0.0,
    }


@pytest.mark.parametrize(
    ("primary", "shadow", "comparison", "agrees"),
    [
        ([[0.1, 0.9]], [[0.2, 0.8]], Comparison(output="y", argmax=True), True),
        ([[0.1, 0.9]], [[0.8, 0.2]], Comparison(output="y", argmax=True), False),
        ([[1.0, 2.0]], [[1.05, 1.96]], Comparison(output="y", tolerance=0.1), True),
        ([[1.0, 2.0]], [[1.2, 2.0]], Comparison(output="y", tolerance=0.1), False),
        ([[1.0, 2.0]], [[1.0, 2.0]], Comparison(output="y"), True),
        ([[1.0, 2.0]], [[1.0, 2.0, 3.0]], Comparison(output="y"), False),
    ],
)
def test_outputs_agree(
    primary: list[list[float]], shadow: list[list[float]], comparison: Comparison, agrees: bool
) -> None:
    assert outputs_agree(np.array(primary), np.array(shadow), comparison) is agrees
    assert outputs_agree(None, np.array(shadow), comparison) is False
