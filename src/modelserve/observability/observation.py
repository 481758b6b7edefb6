"""What a served request leaves behind for the prediction log and drift detection, and the seam they plug into.

The request path asks each observer ``wants(model, version)`` (a dict lookup and a random draw), builds
one :class:`Observation` only if some observer does, and hands it over with ``submit`` (a non-blocking put
into that observer's bounded queue). Everything else, serialising, writing files, binning, statistics,
happens on the observer's own thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from modelserve.core.context import EMPTY_CONTEXT, RequestContext
from modelserve.core.inference import ParameterValue

__all__ = ["Observation", "Observer"]


@dataclass(slots=True)
class Observation:
    """One served request, shared read-only by the observers (not frozen: a frozen dataclass's __init__
    costs a microsecond more, on every observed request)."""

    model: str
    version: str
    requested_version: str  # as the client named it: "", a number or an alias
    request_id: str | None
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    parameters: Mapping[str, ParameterValue]
    latency_ns: int
    time_ms: int
    context: RequestContext = EMPTY_CONTEXT


class Observer(Protocol):
    def wants(self, model: str, version: str) -> bool:
        """Whether to build an observation of this request; must be cheap (it runs on every request)."""
        ...

    def submit(self, observation: Observation) -> None:
        """Take the observation without blocking; when full, drop it and count the drop."""
        ...
