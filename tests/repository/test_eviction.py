"""The memory budget and idle unloading in process: a real ModelManager over ONNX models of known size,
with the fake clock standing in for time (no sleeps). The same rules through the real server are in
test_memory_budget.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from modelserve.core.errors import ErrorCode, ModelLoadError
from modelserve.observability.metrics import ServerMetrics
from modelserve.repository.manager import ModelManager
from modelserve.repository.scheduler_config import SchedulingDefaults
from tests.fakes import ManualClock
from tests.repository.model_files import write_onnx_with_weights

MIB = 2**20


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Models a, b, c of ~2 MiB each (file-size accounting: above the ONNX runtime's 1 MiB floor)."""
    root = tmp_path / "repo"
    for name in ("a", "b", "c"):
        write_onnx_with_weights(root / name, 2 * MIB)
    return root


def manager_over(
    root: Path,
    clock: ManualClock,
    metrics: ServerMetrics,
    *,
    budget_bytes: int = 0,
    pinned: frozenset[str] = frozenset(),
) -> ModelManager:
    return ModelManager(
        root=root,
        scheduling=SchedulingDefaults(max_queue_size=16),
        load_concurrency=2,
        clock=clock,
        memory_budget_bytes=budget_bytes,
        pinned=pinned,
        metrics=metrics,
    )


def run(manager: ModelManager, scenario: Callable[[], Awaitable[None]]) -> None:
    async def scenario_then_close() -> None:
        try:
            await scenario()
        finally:
            await manager.close(drain_timeout_s=1.0)

    asyncio.run(scenario_then_close())


def states(manager: ModelManager) -> dict[str, str]:
    return {entry.name: entry.state.value for entry in manager.index()}


def evictions(metrics: ServerMetrics, model: str, cause: str) -> float:
    value = metrics.registry.get_sample_value("modelserve_model_evictions_total", {"model": model, "cause": cause})
    return value or 0.0


def test_the_budget_unloads_the_least_recently_used_first(repo: Path) -> None:
    clock, metrics = ManualClock(), ServerMetrics()
    manager = manager_over(repo, clock, metrics, budget_bytes=5 * MIB)  # two of the three fit

    async def scenario() -> None:
        await manager.load("a")
        clock.advance(1)
        await manager.load("b")
        clock.advance(1)
        manager.get("a", "")  # a request: a is now more recently used than b
        clock.advance(1)
        await manager.load("c")
        assert states(manager) == {"a": "READY", "b": "UNLOADED", "c": "READY"}
        clock.advance(1)
        # b comes back on demand; now a (used at t=2) is older than c (loaded at t=3) and goes.
        await manager.ensure_loaded("b")
        assert states(manager) == {"a": "UNLOADED", "b": "READY", "c": "READY"}
        assert [evictions(metrics, m, "budget") for m in ("a", "b", "c")] == [1, 1, 0]
        assert sum(v.statistics.memory_bytes for v in manager.loaded_versions()) <= 5 * MIB

    run(manager, scenario)


def test_a_pinned_model_stays_and_a_load_that_cannot_fit_is_refused_naming_the_budget(repo: Path) -> None:
    clock, metrics = ManualClock(), ServerMetrics()
    manager = manager_over(repo, clock, metrics, budget_bytes=5 * MIB, pinned=frozenset({"a"}))

    async def scenario() -> None:
        await manager.load("a")
        clock.advance(1)
        await manager.load("b")
        clock.advance(1)
        await manager.load("c")  # a is the least recently used, but pinned: b goes
        assert states(manager) == {"a": "READY", "b": "UNLOADED", "c": "READY"}

    run(manager, scenario)

    # A budget that holds only the pinned model: nothing can make room for another.
    metrics = ServerMetrics()
    manager = manager_over(repo, clock, metrics, budget_bytes=3 * MIB, pinned=frozenset({"a"}))

    async def refused() -> None:
        await manager.load("a")
        with pytest.raises(ModelLoadError) as failure:
            await manager.load("b")
        assert failure.value.stage == "budget"
        assert failure.value.code is ErrorCode.RESOURCE_EXHAUSTED
        message = failure.value.message
        assert "memory budget of 3 MiB (repository.memory_budget_mb)" in message
        assert "a 2 MiB (pinned)" in message and "raise the budget or unpin a model" in message
        [entry] = [e for e in manager.index() if e.name == "b"]
        assert entry.state.value == "FAILED" and "memory budget" in entry.reason
        labels = {"model": "b", "stage": "budget"}
        assert metrics.registry.get_sample_value("modelserve_model_load_failures_total", labels) == 1
        assert manager.get("a", "").version == "1"  # what serves is untouched

    run(manager, refused)


def test_idle_models_unload_after_the_idle_time_of_the_clock(repo: Path) -> None:
    clock, metrics = ManualClock(), ServerMetrics()
    manager = manager_over(repo, clock, metrics, pinned=frozenset({"c"}))

    async def scenario() -> None:
        await manager.load_all(["a", "b", "c"])
        clock.advance(6)
        manager.get("b", "")  # b is used at t=6; a and c were last used when they loaded (t=0)
        clock.advance(4)
        assert await manager.unload_idle(10) == ["a"]  # t=10: a idle for 10 s; c is pinned
        clock.advance(5.999)
        assert await manager.unload_idle(10) == []  # b idle for 9.999 s
        clock.advance(0.001)
        assert await manager.unload_idle(10) == ["b"]
        assert states(manager) == {"a": "UNLOADED", "b": "UNLOADED", "c": "READY"}
        assert [evictions(metrics, m, "idle") for m in ("a", "b", "c")] == [1, 1, 0]
        # An unloaded model is not "idle" again, and a reload counts as a use.
        clock.advance(100)
        await manager.load("a")
        assert await manager.unload_idle(10) == []

    run(manager, scenario)
