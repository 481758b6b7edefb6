"""Inference requests and responses as the server's layers see them: numpy tensors, never wire JSON.

The protocol layer turns REST/gRPC bytes into an :class:`InferRequest` and an :class:`InferResult` back
into bytes; routing, scheduling and runtimes only ever see these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from modelserve.core.datatypes import Datatype
from modelserve.core.shared_memory import SharedMemoryRef

__all__ = ["ARM_PARAMETER", "FALLBACK_PARAMETER", "InferRequest", "InferResult", "ParameterValue", "RequestedOutput"]

ParameterValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """One output the client asked for, with its per-output parameters (``binary_data``, ``classification``).
    ``shared_memory`` is where the client wants it written instead of in the response (its
    ``shared_memory_*`` parameters, read by the protocol layer)."""

    name: str
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    shared_memory: SharedMemoryRef | None = None


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request.

    ``model_version`` is ``""`` when the client named no version (the server picks one).
    ``requested_outputs`` is None when the client asked for every output.
    ``input_datatypes`` are the datatypes the client declared (BF16 arrives as uint16 words, so the
    array's dtype alone cannot tell).
    ``priority`` (1 is highest, 0 means the model's default) and ``timeout_us`` (0 means none) are the
    reserved OIP parameters ``priority`` and ``timeout``; they are kept out of ``parameters``.
    """

    model_name: str
    model_version: str
    inputs: dict[str, np.ndarray]
    input_datatypes: dict[str, Datatype]
    id: str | None = None
    requested_outputs: tuple[RequestedOutput, ...] | None = None
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    priority: int = 0
    timeout_us: int = 0


# The response parameter naming the routing arm that chose the version (REST and gRPC).
ARM_PARAMETER = "modelserve_arm"
# The response parameter naming the fallback entry that answered instead of the chosen target (REST and gRPC).
FALLBACK_PARAMETER = "modelserve_fallback"


@dataclass(slots=True)
class InferResult:
    """Outputs in the order they must be sent (request order, else model order).

    ``arm``: the arm of the model's routing split that chose the version ("" when no split did); the
    codecs report it as the response parameter :data:`ARM_PARAMETER`, ``model_version`` stays the
    version that served.
    ``fallback``: the entry of the policy's fallback chain that answered because the chosen target failed
    or its breaker is open ("" when the target answered): a version or alias, ``model[/version]`` or
    ``static``; reported as :data:`FALLBACK_PARAMETER` (REST: also the ``x-modelserve-fallback`` header).
    """

    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    output_datatypes: dict[str, Datatype]
    id: str | None = None
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    arm: str = ""
    fallback: str = ""
