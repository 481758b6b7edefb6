"""The Runtime seam: what every model backend offers the scheduler.

A runtime instance is one executor of one model version (one onnxruntime session, one worker
process...). ``instance_group { count: N }`` makes N instances. Every method is **blocking** and is
called from a worker thread, never from the event loop; one instance runs one call at a time (the
scheduler guarantees it), so implementations need no locking of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from modelserve.core.signature import ModelSignature, TensorSpec

__all__ = ["LoadContext", "Runtime", "RuntimeFactory", "RuntimeMetadata"]


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What a runtime needs to load one instance. ``parameters`` are the config's ``parameters`` map."""

    model_name: str
    version: str
    version_dir: Path
    model_filename: str
    signature: ModelSignature | None
    parameters: Mapping[str, str] = field(default_factory=dict)
    instance_index: int = 0


@dataclass(frozen=True, slots=True)
class RuntimeMetadata:
    """What the model file itself declares (for config auto-completion and mismatch checks).

    Shapes here are the model's full shapes, batch dimension included, ``-1`` for variable dims.
    Empty tuples mean the runtime cannot tell (a Python model declares nothing).
    """

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


class Runtime(Protocol):
    def load(self) -> RuntimeMetadata:
        """Load the model; raise ``ModelLoadError`` with a message naming the file and the fix."""
        ...

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Run the model. ``inputs`` are shaped as the model expects; return at least ``output_names``.

        Raise ``RuntimeFailure`` (or any exception, which the scheduler wraps) to fail this call only.
        """
        ...

    def unload(self) -> None:
        """Release everything the instance holds (sessions, worker processes). Idempotent."""
        ...

    @property
    def is_healthy(self) -> bool:
        """False while the instance cannot serve (e.g. its worker process died and is being replaced)."""
        ...


class RuntimeFactory(Protocol):
    def __call__(self, context: LoadContext) -> Runtime: ...
