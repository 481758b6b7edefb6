"""Circuit breakers and fallback chains through the in-process engine (the same request path REST and
gRPC take), with python models that raise while a flag file exists and a fake clock for the breaker's
timing: no sleeps, no wall-clock asserts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve import Engine
from modelserve.core.errors import CircuitOpenError, ErrorCode, RuntimeFailure, ValidationError
from modelserve.routing.breaker import BreakerState
from modelserve.routing.fallback import check_policy
from modelserve.routing.policy import RoutingPolicy
from tests.fakes import ManualClock
from tests.service.resilience_models import calls, write_flaky

X = np.array([[1.0, 2.0]], np.float32)
BREAKER = {"consecutive_failures": 3, "open_s": 30, "max_open_s": 300, "half_open_probes": 2}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    write_flaky(repo, tmp_path, "flaky", versions=2)
    write_flaky(repo, tmp_path, "backup", factor="10")
    return repo


def set_policy(engine: Engine, model: str, document: dict[str, Any]) -> None:
    engine.router.policies.set(model, RoutingPolicy.model_validate(document))


def state(engine: Engine, model: str, version: str) -> BreakerState:
    found = [s for s in engine.dataplane.resilience.breakers.snapshots(model) if s.version == version]
    return found[0].state if found else BreakerState.CLOSED


def metric(engine: Engine, line_start: str) -> float:
    for line in engine.metrics_text().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_breaker_opens_after_exactly_n_failures_fails_fast_and_probes_close_it(tmp_path: Path) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*", clock=clock) as engine:
            set_policy(engine, "flaky", {"breaker": BREAKER})
            assert (await engine.infer("flaky", {"x": X})).outputs["y"].tolist() == [[2.0, 4.0]]
            (tmp_path / "fail-flaky-2").touch()
            for _ in range(3):
                with pytest.raises(RuntimeFailure, match="test flag fail-flaky-2 is set"):
                    await engine.infer("flaky", {"x": X})
            assert state(engine, "flaky", "2") is BreakerState.OPEN
            for _ in range(5):
                with pytest.raises(CircuitOpenError) as refused:
                    await engine.infer("flaky", {"x": X})
            assert refused.value.code is ErrorCode.UNAVAILABLE and refused.value.retry_after_s == 30
            assert refused.value.message.startswith(
                "circuit breaker for model 'flaky' version 2 is open after 3 failures in a row; retry in 30 s"
            )
            assert calls(tmp_path, "flaky", "2") == 4  # 1 good + 3 failed: the refused requests never ran
            other = await engine.infer("flaky", {"x": X}, version="1")  # another version's breaker is its own
            assert other.outputs["y"].tolist() == [[1.0, 2.0]]

            (tmp_path / "fail-flaky-2").unlink()  # healthy again; half-open once open_s has passed
            clock.advance(29)
            with pytest.raises(CircuitOpenError, match="retry in 1 s"):
                await engine.infer("flaky", {"x": X})
            clock.advance(1)
            for _ in range(2):  # half_open_probes
                assert (await engine.infer("flaky", {"x": X})).model_version == "2"
            assert state(engine, "flaky", "2") is BreakerState.CLOSED
            assert metric(engine, 'modelserve_breaker_state{model="flaky",state="closed",version="2"}') == 1.0
            transitions = [
                ("closed", "open"),
                ("open", "half_open"),
                ("half_open", "closed"),
            ]
            for before, after in transitions:
                labels = f'from_state="{before}",model="flaky",to_state="{after}",version="2"'
                prefix = f"modelserve_breaker_transitions_total{{{labels}}}"
                assert metric(engine, prefix) == 1.0, prefix
            assert metric(engine, 'modelserve_breaker_trips_total{model="flaky",version="2"}') == 1.0

    run(scenario)


def test_client_errors_never_trip_the_breaker_nor_fall_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*", clock=ManualClock()) as engine:
            set_policy(engine, "flaky", {"breaker": BREAKER, "fallback": [{"static": {"y": [-1, -1]}}]})
            for _ in range(10):
                with pytest.raises(ValidationError, match=r"shape \[1, 3\]"):
                    await engine.infer("flaky", {"x": np.zeros((1, 3), np.float32)})
                with pytest.raises(ValidationError, match=r"unknown input|no input|'z'"):
                    await engine.infer("flaky", {"z": X})
            assert state(engine, "flaky", "2") is BreakerState.CLOSED
            assert (await engine.infer("flaky", {"x": X})).fallback == ""

    run(scenario)


def test_the_chain_falls_back_version_then_model_then_static_tagged_and_counted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*", clock=ManualClock()) as engine:
            chain = ["1", {"model": "backup"}, {"static": {"y": [-1, -1]}}]
            # A budget as large as the traffic: the chain's order is under test here, not the budget.
            set_policy(engine, "flaky", {"breaker": BREAKER, "fallback": chain, "fallback_budget": {"percent": 100}})
            check_policy("flaky", engine.router.policies.policy("flaky") or RoutingPolicy(), engine.manager)
            plain = await engine.infer("flaky", {"x": X})
            assert plain.fallback == "" and plain.model_version == "2"

            (tmp_path / "fail-flaky-2").touch()
            answers = [await engine.infer("flaky", {"x": X}) for _ in range(6)]
            assert {(a.fallback, a.model_version) for a in answers} == {("1", "1")}
            assert all(a.outputs["y"].tolist() == [[1.0, 2.0]] for a in answers)
            assert calls(tmp_path, "flaky", "2") == 1 + 3  # it opened after 3; the rest skipped it
            assert metric(engine, 'modelserve_fallbacks_total{cause="model",model="flaky",target="1"}') == 3.0
            assert metric(engine, 'modelserve_fallbacks_total{cause="breaker_open",model="flaky",target="1"}') == 3.0

            (tmp_path / "fail-flaky-1").touch()
            other = await engine.infer("flaky", {"x": X})
            assert (other.fallback, other.model_name, other.outputs["y"].tolist()) == (
                "backup",
                "backup",
                [[10.0, 20.0]],
            )

            (tmp_path / "fail-backup-1").touch()
            rows = np.array([[1, 2], [3, 4]], np.float32)
            static = await engine.infer("flaky", {"x": rows})
            assert static.fallback == "static" and static.outputs["y"].tolist() == [[-1.0, -1.0], [-1.0, -1.0]]
            assert static.outputs["y"].dtype == np.float32
            assert (
                metric(engine, 'modelserve_fallbacks_total{cause="breaker_open",model="flaky",target="static"}') == 1.0
            )

    run(scenario)


def test_the_budget_caps_fallback_attempts_at_a_share_of_requests(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*", clock=ManualClock()) as engine:
            budget = {"percent": 20, "window_s": 10, "min_per_window": 0}
            set_policy(engine, "flaky", {"fallback": ["1"], "fallback_budget": budget})  # no breaker: every one runs
            (tmp_path / "fail-flaky-2").touch()
            answered = failed = 0
            for _ in range(50):
                try:
                    result = await engine.infer("flaky", {"x": X})
                except RuntimeFailure:
                    failed += 1
                else:
                    assert result.fallback == "1"
                    answered += 1
            assert (answered, failed) == (10, 40)  # 20 % of 50 requests
            assert calls(tmp_path, "flaky", "1") == 10 and calls(tmp_path, "flaky", "2") == 50
            assert metric(engine, 'modelserve_fallbacks_refused_total{model="flaky"}') == 40.0

    run(scenario)


def test_with_the_breaker_open_and_no_fallback_left_the_primary_error_is_raised(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*", clock=ManualClock()) as engine:
            set_policy(engine, "flaky", {"breaker": BREAKER, "fallback": [{"model": "backup"}]})
            for name in ("fail-flaky-2", "fail-backup-1"):
                (tmp_path / name).touch()
            for _ in range(3):
                with pytest.raises(RuntimeFailure, match="fail-flaky-2"):
                    await engine.infer("flaky", {"x": X})
            with pytest.raises(CircuitOpenError, match="circuit breaker for model 'flaky' version 2 is open"):
                await engine.infer("flaky", {"x": X})
            (tmp_path / "fail-backup-1").unlink()
            assert (await engine.infer("flaky", {"x": X})).fallback == "backup"  # the next good request works

    run(scenario)


def test_check_policy_refuses_a_model_that_cannot_take_the_inputs(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    from tests.model_builders import write_onnx_add

    write_onnx_add(repo / "adder" / "1" / "model.onnx", width=3)

    async def scenario() -> None:
        async with Engine.from_repository(repo, load="*") as engine:
            bad = RoutingPolicy.model_validate({"fallback": [{"model": "adder"}]})
            with pytest.raises(ValidationError, match=r"model 'flaky' routing policy: fallback\[0\]: model 'adder'"):
                check_policy("flaky", bad, engine.manager)
            with pytest.raises(ValidationError, match="static output 'label' is not an output of model 'flaky'"):
                check_policy(
                    "flaky", RoutingPolicy.model_validate({"fallback": [{"static": {"label": [1]}}]}), engine.manager
                )
            check_policy("flaky", RoutingPolicy.model_validate({"fallback": [{"model": "backup"}]}), engine.manager)

    run(scenario)


def test_a_request_past_its_deadline_counts_against_the_breaker_and_gets_the_static_answer(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_flaky(repo, tmp_path, "slow", gated_version="1")  # waits (bounded) for open-gate: the deadline passes first

    async def scenario() -> None:
        async with Engine.from_repository(repo, load="*") as engine:
            chain = ["1", {"static": {"y": [0, 0]}}]  # no model entry starts once the deadline has passed
            set_policy(engine, "slow", {"breaker": {"consecutive_failures": 1}, "fallback": chain})
            late = await engine.infer("slow", {"x": X}, timeout_s=0.2)
            assert late.fallback == "static" and late.outputs["y"].tolist() == [[0.0, 0.0]]
            assert state(engine, "slow", "1") is BreakerState.OPEN
            assert metric(engine, 'modelserve_fallbacks_total{cause="timeout",model="slow",target="static"}') == 1.0
            (tmp_path / "open-gate").touch()  # the call still running in the worker ends

    run(scenario)


def test_a_settings_file_chain_that_does_not_fit_is_reported_once_the_models_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"routing": {"flaky": {"fallback": [{"static": {"label": [1]}}, {"static": {"y": [0, 0]}}]}}}

    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*", config=settings) as engine:
            (tmp_path / "fail-flaky-2").touch()
            answer = await engine.infer("flaky", {"x": X})
            assert answer.fallback == "static" and answer.outputs["y"].tolist() == [[0.0, 0.0]]  # the entry that fits

    with caplog.at_level("WARNING", logger="modelserve"):
        run(scenario)
    assert "model 'flaky' routing policy: fallback[0]: static output 'label' is not an output" in caplog.text
