"""Small models built inside tests: real ONNX graphs (onnx.helper) and python models, written into a
temporary Triton-style repository."""

from __future__ import annotations

import textwrap
from pathlib import Path

import onnx
from onnx import TensorProto, helper


def write_onnx_add(path: Path, *, batch: bool = True, width: int = 3, elem: int = TensorProto.FLOAT) -> None:
    """y = x + x, with input x [N, width] (or [width] when not batched)."""
    dims: list[int | str] = (["N"] if batch else []) + [width]
    x = helper.make_tensor_value_info("x", elem, dims)
    y = helper.make_tensor_value_info("y", elem, dims)
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "add", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_python_model(model_dir: Path, source: str, config: str, version: int = 1) -> None:
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    (model_dir / str(version) / "model.py").write_text(textwrap.dedent(source))
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(config))


def write_onnx_scale(path: Path, factor: float, *, width: int = 3) -> None:
    """y = x * factor, batched: input x [N, width] FP32. Different factors tell versions apart."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [1], [factor])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "scale"], ["y"])], "scale", [x], [y], [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def iris_repository(root: Path) -> Path:
    """A repository under ``root`` holding only the bundled iris example (no drift profile), returned."""
    import shutil

    from tests.server_process import EXAMPLES

    repo = root / "repo"
    (repo / "iris" / "1").mkdir(parents=True)
    shutil.copy(EXAMPLES / "iris" / "1" / "model.onnx", repo / "iris" / "1" / "model.onnx")
    shutil.copy(EXAMPLES / "iris" / "config.pbtxt", repo / "iris" / "config.pbtxt")
    return repo
