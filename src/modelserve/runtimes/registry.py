"""Which runtime serves a model: Triton's ``platform``/``backend`` names mapped to our runtimes."""

from __future__ import annotations

from dataclasses import dataclass

from modelserve.runtimes.base import LoadContext, Runtime

__all__ = ["RuntimeKind", "runtime_kind_for"]


@dataclass(frozen=True, slots=True)
class RuntimeKind:
    name: str
    platform: str
    backend: str
    default_filename: str

    def create(self, context: LoadContext) -> Runtime:
        # Imported here so that a server with no python models never imports that runtime, and the
        # onnxruntime import cost is paid only when an ONNX model loads.
        if self.name == "onnx":
            from modelserve.runtimes.onnx import OnnxRuntime

            return OnnxRuntime(context)
        if self.name == "sklearn":
            from modelserve.runtimes.sklearn import SklearnRuntime

            return SklearnRuntime(context)
        from modelserve.runtimes.python.process import PythonProcessRuntime

        return PythonProcessRuntime(context)


ONNX = RuntimeKind("onnx", platform="onnxruntime_onnx", backend="onnxruntime", default_filename="model.onnx")
SKLEARN = RuntimeKind("sklearn", platform="sklearn", backend="sklearn", default_filename="model.skops")
PYTHON = RuntimeKind("python", platform="python", backend="python", default_filename="model.py")

_BY_NAME = {
    "onnxruntime_onnx": ONNX,
    "onnxruntime": ONNX,
    "onnx": ONNX,
    "sklearn": SKLEARN,
    "python": PYTHON,
}
SUPPORTED = ("onnxruntime_onnx", "onnxruntime", "sklearn", "python")


def runtime_kind_for(platform: str, backend: str) -> RuntimeKind | None:
    """The runtime for a config's ``backend`` (preferred) or ``platform``; None when neither is known."""
    for name in (backend, platform):
        if name:
            return _BY_NAME.get(name)
    return None


def runtime_kind_for_file(filename: str) -> RuntimeKind | None:
    """Guess the runtime from a version folder's file, for repositories without ``config.pbtxt``."""
    for kind in (ONNX, SKLEARN, PYTHON):
        if filename == kind.default_filename:
            return kind
    return None
