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
from typing import Literal, Protocol

import numpy as np

from modelserve.core.signature import ModelSignature, TensorSpec

__all__ = ["LoadContext", "MemoryFootprint", "MemorySource", "Runtime", "RuntimeMetadata"]


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


MemorySource = Literal["worker-rss", "file-size", "pickled-size", "floor"]


@dataclass(frozen=True, slots=True)
class MemoryFootprint:
    """What one loaded instance holds, and how that was found out.

    ``source``: ``worker-rss`` (the resident memory of the instance's own worker process),
    ``file-size`` (the bytes of the model files it loaded), ``pickled-size`` (the serialised size of the
    in-memory object), or ``floor`` (the measurement was below the runtime's documented minimum, or
    unavailable, and the minimum is counted instead). Never 0 bytes: a memory budget that counts a loaded
    model as free would let any number of them in.
    """

    size_bytes: int
    source: MemorySource

    @classmethod
    def at_least(cls, measured_bytes: int, source: MemorySource, *, floor_bytes: int) -> MemoryFootprint:
        """``measured_bytes`` from ``source``, or the runtime's ``floor_bytes`` when that is more."""
        if floor_bytes <= 0:
            raise ValueError(f"a memory floor must be positive, got {floor_bytes} bytes")
        if measured_bytes < floor_bytes:
            return cls(floor_bytes, "floor")
        return cls(measured_bytes, source)


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

    @property
    def failure_reason(self) -> str:
        """Why the instance has stopped serving for good, "" while it serves or can recover by itself (e.g.
        "worker process died 5 times in a row; last: exit code 3; ..."). Only a reload clears it; the
        repository index shows a version whose every instance reports one as FAILED with the reason."""
        ...

    def memory_bytes(self) -> MemoryFootprint:
        """What this loaded instance holds (after ``load``), never less than the runtime's floor.

        The memory budget adds these up per version, so it must be what *this* instance keeps, not what
        the process grew by while it loaded: shared libraries imported by the first model of a kind and
        pages freed by an earlier unload would otherwise be counted, or missed, by whichever load came first.
        """
        ...
