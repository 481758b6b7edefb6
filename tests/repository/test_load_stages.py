"""A failed load says at which stage it stopped: on the error (``ModelLoadError.stage``, set where it was
raised) and in ``modelserve_model_load_failures_total{model, stage}``. In process, a real ModelManager."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from modelserve.core.errors import ModelLoadError
from modelserve.observability.metrics import ServerMetrics
from modelserve.repository.manager import ModelManager
from modelserve.repository.scheduler_config import SchedulingDefaults
from tests.fakes import ManualClock
from tests.model_builders import write_onnx_add

CONFIG = """
    platform: "onnxruntime_onnx"
    max_batch_size: 4
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def bad_config(model: Path) -> None:
    (model / "config.pbtxt").write_text("max_batch_size: 'four'")


def bad_checksum(model: Path) -> None:
    (model / "1" / "SHA256SUMS").write_text(f"{hashlib.sha256(b'other').hexdigest()}  model.onnx\n")


def bad_model_file(model: Path) -> None:
    (model / "1" / "model.onnx").write_bytes(b"not an onnx file")


def config_disagrees_with_the_file(model: Path) -> None:
    (model / "config.pbtxt").write_text(
        CONFIG.replace("TYPE_FP32 dims: [ 3 ] } ]\n    output", "TYPE_FP64 dims: [ 3 ] } ]\n    output")
    )


def misnamed_model_file(model: Path) -> None:
    (model / "1" / "model.onnx").rename(model / "1" / "model.pt")
    (model / "1" / "README").write_text("the weights\n")
    (model / "1" / "assets").mkdir()


def bad_warmup(model: Path) -> None:
    (model / "config.pbtxt").write_text(
        CONFIG + 'model_warmup [ { name: "w" inputs { key: "nope" value: { data_type: TYPE_FP32 dims: [ 3 ] } } } ]'
    )


@pytest.mark.parametrize(
    ("breakage", "stage", "says"),
    [
        (bad_config, "config", "config.pbtxt does not parse"),
        (bad_checksum, "checksum", "checksum mismatch for 'model.onnx'"),
        (bad_model_file, "load", "onnxruntime cannot load 'model.onnx'"),
        (misnamed_model_file, "load", "1/model.onnx not found; the folder holds: README, assets/, model.pt"),
        (config_disagrees_with_the_file, "verify", "input 'x' has data_type TYPE_FP64 but model.onnx declares FP32"),
        (bad_warmup, "warmup", "model_warmup 'w' names unknown input 'nope'"),
    ],
)
def test_a_failed_load_carries_its_stage_to_the_error_the_index_and_the_metric(
    tmp_path: Path, breakage: Callable[[Path], None], stage: str, says: str
) -> None:
    repo = tmp_path / "repo"
    for name in ("broken", "good"):
        write_onnx_add(repo / name / "1" / "model.onnx")
        (repo / name / "config.pbtxt").write_text(CONFIG)
    breakage(repo / "broken")
    metrics = ServerMetrics()
    manager = ModelManager(
        root=repo,
        scheduling=SchedulingDefaults(max_queue_size=16),
        load_concurrency=1,
        clock=ManualClock(),
        metrics=metrics,
    )

    async def scenario() -> None:
        try:
            with pytest.raises(ModelLoadError) as failure:
                await manager.load("broken")
            assert failure.value.stage == stage
            assert says in failure.value.message
            states = {(e.name, e.state.value) for e in manager.index()}
            assert ("broken", "FAILED") in states
            assert any(says in e.reason for e in manager.index() if e.name == "broken")
            labels = {"model": "broken", "stage": stage}
            assert metrics.registry.get_sample_value("modelserve_model_load_failures_total", labels) == 1
            # The next load of a good model is not affected.
            await manager.load("good")
            assert manager.get("good", "").version == "1"
        finally:
            await manager.close(drain_timeout_s=1.0)

    asyncio.run(scenario())
