"""modelserve: an inference server that speaks Triton's protocol (KServe V2 / Open Inference Protocol).

The public API: :class:`Engine` runs the server's engine in process (``async with
Engine.from_repository(path) as engine: await engine.infer(...)``); :class:`PythonModel` and
:class:`ModelContext` are what a repository's python models implement; :class:`ModelServeError` (with its
:class:`ErrorCode`) is what a failed request raises. The ``modelserve`` command runs the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from modelserve.core.errors import ErrorCode, ModelServeError
from modelserve.core.inference import InferResult
from modelserve.runtimes.python.api import ModelContext, PythonModel

if TYPE_CHECKING:
    from modelserve.app.engine import Engine

__all__ = ["Engine", "ErrorCode", "InferResult", "ModelContext", "ModelServeError", "PythonModel", "__version__"]


def __getattr__(name: str) -> Any:
    # The engine pulls in the whole server (onnxruntime, prometheus-client, ...): imported on first use, so
    # a python model's worker process, which imports PythonModel from here, never pays for it.
    if name == "Engine":
        from modelserve.app.engine import Engine

        return Engine
    raise AttributeError(f"module 'modelserve' has no attribute {name!r}")
