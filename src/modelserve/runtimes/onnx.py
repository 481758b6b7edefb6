"""onnxruntime on the CPU. ``InferenceSession.run`` releases the GIL, so instances run on threads.

Config ``parameters`` read (Triton's onnxruntime backend names): ``intra_op_thread_count``,
``inter_op_thread_count``, ``execution_mode`` (0 sequential, 1 parallel), ``graph_optimization_level``
(onnxruntime's integers: 0 disable, 1 basic, 2 extended, 99 all).

Memory: an instance is counted as the size of its version folder's files (the model file and any external
weights beside it), because a session keeps its initializers, and onnxruntime's Python API reports no
allocator statistics to read instead. That is a lower bound: a session also holds graph state and an
arena that grows with the largest batch it ran (``digits_mlp``, 4.5 MB on disk, grows the process by
9-12 MB). Below ``MEMORY_FLOOR_BYTES`` the floor is counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import ModelLoadError, RuntimeFailure
from modelserve.core.signature import TensorSpec
from modelserve.runtimes.base import LoadContext, MemoryFootprint, RuntimeMetadata

__all__ = ["MEMORY_FLOOR_BYTES", "OnnxRuntime"]

# The least one session is counted as. A session of the 530-byte iris model, with one intra- and one
# inter-op thread, grew the process by ~115 KiB after a request (50 sessions measured together); 1 MiB
# leaves room for the arena's growth under larger batches, so that small models still count.
MEMORY_FLOOR_BYTES = 1 << 20

_ORT_TYPES: dict[str, Datatype] = {
    "tensor(bool)": Datatype.BOOL,
    "tensor(uint8)": Datatype.UINT8,
    "tensor(uint16)": Datatype.UINT16,
    "tensor(uint32)": Datatype.UINT32,
    "tensor(uint64)": Datatype.UINT64,
    "tensor(int8)": Datatype.INT8,
    "tensor(int16)": Datatype.INT16,
    "tensor(int32)": Datatype.INT32,
    "tensor(int64)": Datatype.INT64,
    "tensor(float16)": Datatype.FP16,
    "tensor(float)": Datatype.FP32,
    "tensor(double)": Datatype.FP64,
    "tensor(string)": Datatype.BYTES,
}


def _int_parameter(context: LoadContext, key: str, default: int) -> int:
    raw = context.parameters.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ModelLoadError(
            f"model '{context.model_name}': parameter '{key}' must be an integer, got '{raw}'"
        ) from exc


def _spec(arg: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"ONNX tensor '{arg.name}' has type {arg.type}, which modelserve cannot serve")
    dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(name=arg.name, datatype=datatype, dims=dims)


def _files_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue  # removed since the session read it: what the session holds is already counted
    return total


def _as_str_elements(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    out.reshape(-1)[:] = [b.decode("utf-8") if isinstance(b, bytes) else b for b in array.reshape(-1)]
    return out


class OnnxRuntime:
    """One onnxruntime ``InferenceSession`` (one instance of ``instance_group``)."""

    # Runs in this process (no pipe to wait on): a scheduler may run a call that takes microseconds in place.
    runs_in_process = True

    def __init__(self, context: LoadContext) -> None:
        self._context = context
        self._session: Any = None
        self._string_inputs: frozenset[str] = frozenset()

    def load(self) -> RuntimeMetadata:
        import onnxruntime as ort

        context = self._context
        path = context.version_dir / context.model_filename
        options = ort.SessionOptions()
        # One intra-op thread by default: on a small CPU, parallelism comes from instances and batching,
        # and oversubscribed ORT thread pools spin and steal cycles from the event loop.
        options.intra_op_num_threads = _int_parameter(context, "intra_op_thread_count", 1)
        options.inter_op_num_threads = _int_parameter(context, "inter_op_thread_count", 1)
        if _int_parameter(context, "execution_mode", 0) == 1:
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        level = _int_parameter(context, "graph_optimization_level", 99)
        options.graph_optimization_level = {
            0: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            2: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        }.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelLoadError(
                f"model '{context.model_name}' version {context.version}: onnxruntime cannot load "
                f"'{context.model_filename}': {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from exc
        inputs = tuple(_spec(arg) for arg in self._session.get_inputs())
        outputs = tuple(_spec(arg) for arg in self._session.get_outputs())
        self._string_inputs = frozenset(s.name for s in inputs if s.datatype is Datatype.BYTES)
        return RuntimeMetadata(inputs=inputs, outputs=outputs)

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {}
        for name, array in inputs.items():
            # onnxruntime wants str elements for tensor(string).
            feed[name] = _as_str_elements(array) if name in self._string_inputs else array
        try:
            results = self._session.run(list(output_names), feed)
        except Exception as exc:
            raise RuntimeFailure(
                f"model '{self._context.model_name}' failed to run: {str(exc).splitlines()[0][:300]}"
            ) from exc
        return dict(zip(output_names, results, strict=True))

    def unload(self) -> None:
        self._session = None

    @property
    def is_healthy(self) -> bool:
        return self._session is not None

    @property
    def failure_reason(self) -> str:
        return ""  # nothing fails for good in process: a failed load raises, a failed call fails alone

    def memory_bytes(self) -> MemoryFootprint:
        """The version folder's file size (see the module docstring), at least ``MEMORY_FLOOR_BYTES``."""
        if self._session is None:
            return MemoryFootprint(MEMORY_FLOOR_BYTES, "floor")
        measured = _files_bytes(self._context.version_dir)
        return MemoryFootprint.at_least(measured, "file-size", floor_bytes=MEMORY_FLOOR_BYTES)
