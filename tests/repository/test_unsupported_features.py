"""A config.pbtxt that uses a Triton feature modelserve lacks: refused at load naming the feature when
ignoring it would change answers, accepted and logged once when it would not. In process, a real
ModelManager (as tests/repository/test_load_stages.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from modelserve.core.errors import ModelLoadError
from modelserve.observability.metrics import ServerMetrics
from modelserve.repository.manager import ModelManager
from modelserve.repository.scheduler_config import SchedulingDefaults
from tests.fakes import ManualClock
from tests.model_builders import write_onnx_add

ADD = """
    platform: "onnxruntime_onnx"
    max_batch_size: 4
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""

# Shaped like Triton's simple_sequence example: the model takes the sequence batcher's control tensors as
# inputs the config does not list (the sequence batcher fills them). Before the refusal this failed with
# "model.onnx needs inputs ['START', 'READY'] that config.pbtxt does not list".
SEQUENCE = """
    platform: "onnxruntime_onnx"
    max_batch_size: 4
    sequence_batching {
      max_sequence_idle_microseconds: 5000000
      control_input [
        { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
        { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] }
      ]
    }
    input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
    output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""

ENSEMBLE = """
    platform: "ensemble"
    max_batch_size: 4
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
    ensemble_scheduling { step [ { model_name: "good" model_version: -1
      input_map { key: "x" value: "x" } output_map { key: "y" value: "y" } } ] }
"""


def _write_sequence_model(path: Path) -> None:
    names = ("INPUT", "START", "READY")
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1]) for name in names]
    output = helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph([helper.make_node("Sum", list(names), ["OUTPUT"])], "sequence", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


def _manager(repo: Path) -> ModelManager:
    return ModelManager(
        root=repo,
        scheduling=SchedulingDefaults(max_queue_size=16),
        load_concurrency=1,
        clock=ManualClock(),
        metrics=ServerMetrics(),
    )


def _repository(tmp_path: Path, broken_config: str) -> Path:
    repo = tmp_path / "repo"
    write_onnx_add(repo / "good" / "1" / "model.onnx")
    (repo / "good" / "config.pbtxt").write_text(ADD)
    if "sequence_batching" in broken_config:
        _write_sequence_model(repo / "broken" / "1" / "model.onnx")
    else:
        write_onnx_add(repo / "broken" / "1" / "model.onnx")
    (repo / "broken" / "config.pbtxt").write_text(broken_config)
    return repo


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (SEQUENCE, "sequence_batching (Triton's sequence batcher for stateful models"),
        (ENSEMBLE, "ensemble_scheduling (ensembles"),
        (ADD + "model_transaction_policy { decoupled: true }", "model_transaction_policy { decoupled: true }"),
        (ADD + 'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "n" data_type: TYPE_FP32 } ]', "batch_input"),
        (ADD + 'model_repository_agents { agents [ { name: "checksum" } ] }', "model_repository_agents"),
    ],
)
def test_a_feature_that_changes_answers_is_refused_at_load_naming_it(tmp_path: Path, config: str, field: str) -> None:
    manager = _manager(_repository(tmp_path, config))

    async def scenario() -> None:
        try:
            with pytest.raises(ModelLoadError) as failure:
                await manager.load("broken")
            message = failure.value.message
            assert failure.value.stage == "config"
            assert f"model 'broken': config.pbtxt sets {field}" in message
            assert "which modelserve does not support yet" in message
            assert "needs inputs" not in message
            reasons = [entry.reason for entry in manager.index() if entry.name == "broken"]
            assert reasons and "does not support yet" in reasons[0]
            await manager.load("good")  # the next load is not affected
            assert manager.get("good", "").version == "1"
        finally:
            await manager.close(drain_timeout_s=1.0)

    asyncio.run(scenario())


def test_a_feature_that_changes_nothing_it_answers_is_accepted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harmless = (
        ADD
        + "optimization { graph { level: 1 } }\nresponse_cache { enable: true }\n"
        + "model_transaction_policy { decoupled: false }"
    )
    manager = _manager(_repository(tmp_path, harmless))

    async def scenario() -> None:
        try:
            await manager.load("broken")
            await manager.load("broken")  # a reload logs nothing new
            assert manager.get("broken", "").version == "1"
        finally:
            await manager.close(drain_timeout_s=1.0)

    with caplog.at_level(logging.WARNING, logger="modelserve"):
        asyncio.run(scenario())
    logged = [r.getMessage() for r in caplog.records if "not acted on" in r.getMessage()]
    assert logged == ["model broken: config fields not acted on by this server: optimization, response_cache"]


def test_a_missing_model_file_lists_what_the_version_folder_holds_bounded(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "many" / "1").mkdir(parents=True)
    for index in range(14):
        (repo / "many" / "1" / f"part-{index:02d}.bin").write_bytes(b"")
    manager = _manager(repo)

    async def scenario() -> None:
        try:
            with pytest.raises(ModelLoadError) as failure:
                await manager.load("many")
            listed = ", ".join(f"part-{index:02d}.bin" for index in range(10))
            assert f"(it holds: {listed}, ... (4 more))" in failure.value.message
        finally:
            await manager.close(drain_timeout_s=1.0)

    asyncio.run(scenario())
