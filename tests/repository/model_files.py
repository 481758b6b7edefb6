"""Model files of a chosen size, for the memory-budget tests (the shared builders are in tests/model_builders.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save


def write_onnx_with_weights(model_dir: Path, weight_bytes: int) -> None:
    """``<model_dir>/1/model.onnx``: y = x + bias, bias a float vector of ``weight_bytes``, so the file
    (and the session's initializers) hold that much."""
    width = weight_bytes // 4
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])
    bias = numpy_helper.from_array(np.ones(width, np.float32), "bias")
    graph = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["y"])], "biased", [x], [y], [bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True)
    save(model, str(model_dir / "1" / "model.onnx"))
