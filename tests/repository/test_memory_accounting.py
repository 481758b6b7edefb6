"""What the memory budget counts: what each runtime instance reports it holds (a worker's RSS, the
model files' size, an estimator's pickled size, or the runtime's floor), never the growth of the
server's RSS while a version loads, which counted 0 for a model reloaded after an eviction."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from modelserve.observability.metrics import ServerMetrics
from modelserve.protocol.documents import index_document
from modelserve.repository.manager import ModelManager
from modelserve.repository.scheduler_config import SchedulingDefaults
from modelserve.runtimes import onnx, sklearn
from modelserve.runtimes.python import process
from tests.fakes import ManualClock
from tests.repository.model_files import write_onnx_with_weights
from tests.server_process import EXAMPLES

MIB = 2**20


def copy_example(repo: Path, name: str, as_name: str | None = None) -> None:
    target = repo / (as_name or name)
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("*.profile.json"))
    if as_name is not None:
        config = target / "config.pbtxt"
        config.write_text(config.read_text().replace(f'name: "{name}"', f'name: "{as_name}"'))


def write_wide_scaler(model_dir: Path, features: int) -> None:
    """A StandardScaler over ``features`` columns: three float64 arrays of that length (mean, var, scale)."""
    import skops.io
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(np.random.default_rng(0).random((4, features)))
    (model_dir / "1").mkdir(parents=True)
    skops.io.dump(scaler, model_dir / "1" / "model.skops")
    (model_dir / "config.pbtxt").write_text(
        textwrap.dedent(f"""
        backend: "sklearn"
        max_batch_size: 4
        input [ {{ name: "x" data_type: TYPE_FP64 dims: [ {features} ] }} ]
        output [ {{ name: "transform" data_type: TYPE_FP64 dims: [ {features} ] }} ]
        """)
    )


def manager_over(root: Path, *, budget_bytes: int = 0) -> ModelManager:
    return ModelManager(
        root=root,
        scheduling=SchedulingDefaults(max_queue_size=16),
        load_concurrency=2,
        clock=ManualClock(),
        memory_budget_bytes=budget_bytes,
        metrics=ServerMetrics(),
    )


def run(manager: ModelManager, scenario: Callable[[], Awaitable[None]]) -> None:
    async def scenario_then_close() -> None:
        try:
            await scenario()
        finally:
            await manager.close(drain_timeout_s=1.0)

    asyncio.run(scenario_then_close())


def test_the_index_names_how_each_size_was_measured(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("iris", "iris_sklearn", "text_stats"):
        copy_example(repo, name)
    write_onnx_with_weights(repo / "onnx_2mib", 2 * MIB)
    write_wide_scaler(repo / "wide_scaler", features=50_000)
    manager = manager_over(repo)

    async def scenario() -> None:
        await manager.load_all(manager.model_names())
        entries = {e.name: e for e in manager.index()}
        assert {name: e.state.value for name, e in entries.items()} == dict.fromkeys(entries, "READY")
        sizes = {name: (e.memory_bytes, e.memory_source) for name, e in entries.items()}
        # Tiny models count as their runtime's floor, never 0.
        assert sizes["iris"] == (onnx.MEMORY_FLOOR_BYTES, "floor")
        assert sizes["iris_sklearn"] == (sklearn.MEMORY_FLOOR_BYTES, "floor")
        # An ONNX session holds its initializers: the version folder's file size.
        onnx_files = sum(p.stat().st_size for p in (repo / "onnx_2mib" / "1").iterdir())
        assert sizes["onnx_2mib"] == (onnx_files, "file-size")
        # An estimator is its pickled size: the three arrays and a little more.
        scaler_bytes, scaler_source = sizes["wide_scaler"]
        assert scaler_source == "pickled-size"
        assert 3 * 50_000 * 8 <= scaler_bytes < 3 * 50_000 * 8 + 64 * 1024
        # A python model is its worker process: an interpreter with numpy is well over the floor.
        worker_bytes, worker_source = sizes["text_stats"]
        assert worker_source == "worker-rss"
        assert process.MEMORY_FLOOR_BYTES < worker_bytes < 512 * MIB
        # The REST index's details carry the same, beside the existing keys.
        document = {item["name"]: item for item in index_document(manager.index(), with_details=True)}
        assert document["text_stats"]["memory_source"] == "worker-rss"
        assert document["iris"]["memory_bytes"] == onnx.MEMORY_FLOOR_BYTES
        assert document["iris"]["memory_source"] == "floor"
        assert {"name", "version", "state", "memory_bytes", "load_ms", "warmup_ms"} <= set(document["iris"])
        # Triton's fields only, without details.
        assert set(index_document(manager.index())[0]) == {"name", "version", "state"}

    run(manager, scenario)


def test_a_model_reloaded_after_an_eviction_counts_the_same_non_zero_size(tmp_path: Path) -> None:
    """With RSS growth, iris reloaded into the pages its eviction freed counted 0 MB."""
    repo = tmp_path / "repo"
    copy_example(repo, "iris")
    copy_example(repo, "iris", as_name="iris_copy")
    manager = manager_over(repo, budget_bytes=onnx.MEMORY_FLOOR_BYTES * 3 // 2)  # room for one of them

    def iris_size() -> tuple[int, str]:
        [entry] = [e for e in manager.index() if e.name == "iris"]
        return entry.memory_bytes, entry.memory_source

    async def scenario() -> None:
        await manager.load("iris")
        first = iris_size()
        for _ in range(3):
            await manager.load("iris_copy")  # evicts iris ...
            assert not manager.is_loaded("iris")
            await manager.ensure_loaded("iris")  # ... which comes back, evicting the copy
            assert not manager.is_loaded("iris_copy")
            assert iris_size() == first == (onnx.MEMORY_FLOOR_BYTES, "floor")

    run(manager, scenario)


@pytest.mark.parametrize("instances", [1, 3])
def test_a_version_holds_what_its_instances_hold(tmp_path: Path, instances: int) -> None:
    repo = tmp_path / "repo"
    write_onnx_with_weights(repo / "m", 2 * MIB)
    (repo / "m" / "config.pbtxt").write_text(f"instance_group [ {{ count: {instances} }} ]")
    manager = manager_over(repo)

    async def scenario() -> None:
        await manager.load("m")
        [entry] = manager.index()
        files = (repo / "m" / "1" / "model.onnx").stat().st_size
        assert (entry.memory_bytes, entry.memory_source) == (instances * files, "file-size")
        [version] = manager.loaded_versions("m")
        assert version.statistics.memory_bytes == entry.memory_bytes  # the stats and /metrics agree

    run(manager, scenario)
