"""A Triton-layout repository shaped like Triton's example models, built at test time.

NVIDIA's example clients (triton-inference-server/client, ``src/python/examples``) talk to models named
``simple``, ``simple_int8``, ``simple_string`` and ``simple_identity``; these are ours, with the same names,
tensors and arithmetic, so tests can run the same client flows:

- ``simple``: INT32 ``INPUT0``, ``INPUT1`` [16] -> ``OUTPUT0`` = sum, ``OUTPUT1`` = difference;
  ``max_batch_size: 8`` (ONNX).
- ``simple_int8``: the same in INT8 (ONNX).
- ``simple_string``: the same on BYTES tensors holding decimal integers, answered as decimal strings (python).
- ``simple_identity``: BYTES ``INPUT0`` [-1] -> ``OUTPUT0``, unchanged (python).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import onnx
from onnx import TensorProto, helper

__all__ = ["SIMPLE_MODELS", "triton_example_repository"]

SIMPLE_MODELS = ("simple", "simple_identity", "simple_int8", "simple_string")


def _sum_and_difference_config(name: str, data_type: str, backend: str) -> str:
    tensors = [f'{{ name: "{tensor}" data_type: {data_type} dims: [ 16 ] }}' for tensor in ("INPUT0", "INPUT1")]
    outputs = [f'{{ name: "{tensor}" data_type: {data_type} dims: [ 16 ] }}' for tensor in ("OUTPUT0", "OUTPUT1")]
    return (
        f'name: "{name}"\nbackend: "{backend}"\nmax_batch_size: 8\n'
        f"input [ {', '.join(tensors)} ]\noutput [ {', '.join(outputs)} ]\n"
    )


def _write_onnx_sum_and_difference(path: Path, elem: int) -> None:
    inputs = [helper.make_tensor_value_info(name, elem, ["batch", 16]) for name in ("INPUT0", "INPUT1")]
    outputs = [helper.make_tensor_value_info(name, elem, ["batch", 16]) for name in ("OUTPUT0", "OUTPUT1")]
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "sum_and_difference", inputs, outputs), opset_imports=[helper.make_opsetid("", 14)]
    )
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


_STRING_ARITHMETIC = """
import numpy as np
from modelserve import PythonModel

_as_int = np.vectorize(int, otypes=[np.int64])
_as_text = np.vectorize(lambda value: str(value).encode(), otypes=[object])


class Model(PythonModel):
    def infer(self, inputs):
        first, second = _as_int(inputs["INPUT0"]), _as_int(inputs["INPUT1"])
        return {"OUTPUT0": _as_text(first + second), "OUTPUT1": _as_text(first - second)}
"""

_IDENTITY = """
from modelserve import PythonModel


class Model(PythonModel):
    def infer(self, inputs):
        return {"OUTPUT0": inputs["INPUT0"]}
"""

_IDENTITY_CONFIG = """\
name: "simple_identity"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
"""


def triton_example_repository(root: Path) -> Path:
    """Write the four models under ``root`` (created) and return it."""
    for name, elem, data_type in (
        ("simple", TensorProto.INT32, "TYPE_INT32"),
        ("simple_int8", TensorProto.INT8, "TYPE_INT8"),
    ):
        _write_onnx_sum_and_difference(root / name / "1" / "model.onnx", elem)
        (root / name / "config.pbtxt").write_text(_sum_and_difference_config(name, data_type, "onnxruntime"))
    for name, source, config in (
        ("simple_string", _STRING_ARITHMETIC, _sum_and_difference_config("simple_string", "TYPE_STRING", "python")),
        ("simple_identity", _IDENTITY, _IDENTITY_CONFIG),
    ):
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "1" / "model.py").write_text(textwrap.dedent(source))
        (root / name / "config.pbtxt").write_text(config)
    return root
