"""The pure parts of a policy's fallback chain (``RoutingPolicy.fallback``); the service layer
(``service/resilience.py``) walks the chain.

- :func:`fallback_cause`: whether a failure may fall back, and why (metrics' ``cause``). Only the server's
  side: the model raised or its worker died (``model``), the request timed out (``timeout``), the target
  is not available (``unavailable``: an alias pointing at an unloaded version, a version unloading) or
  its breaker is open (``breaker_open``). Never a client's 4xx (the fallback would fail the same way) and
  never an overload refusal of a queue (the fallback would carry the overload to another model and defeat
  the shedding: the client gets 503 + Retry-After instead), nor a cancelled request.
- :class:`RetryBudget`: the cap on fallback attempts that run a model after one that ran and failed.
- :func:`check_policy` / :func:`check_fallbacks`: whether another model can stand in (its signature
  accepts this model's inputs and has this model's outputs) and a static answer fits, when a policy is set.
- :func:`static_outputs`: a static answer's tensors, one copy of the values per request row.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from modelserve.core.clock import Clock
from modelserve.core.datatypes import Datatype, datatype_from_numpy
from modelserve.core.errors import (
    CircuitOpenError,
    ErrorCode,
    ModelServeError,
    RoutingError,
    RuntimeFailure,
    ValidationError,
)
from modelserve.core.signature import ModelSignature
from modelserve.repository.manager import ModelManager
from modelserve.routing.policy import FallbackBudget, FallbackModel, FallbackStatic, FallbackTarget, RoutingPolicy

__all__ = [
    "FALLBACK_CAUSES",
    "STATIC_LABEL",
    "RetryBudget",
    "check_fallbacks",
    "check_policy",
    "fallback_cause",
    "fallback_label",
    "static_outputs",
]

FALLBACK_CAUSES = ("breaker_open", "model", "timeout", "unavailable")
STATIC_LABEL = "static"
_BUDGET_BUCKETS = 10


def fallback_cause(error: BaseException) -> str | None:
    """Why ``error`` may fall back (one of :data:`FALLBACK_CAUSES`), or None when it must reach the client."""
    if isinstance(error, CircuitOpenError):
        return "breaker_open"
    if isinstance(error, RuntimeFailure):
        return "model"
    if not isinstance(error, ModelServeError):
        return None
    if error.code is ErrorCode.DEADLINE_EXCEEDED:
        return "timeout"
    if isinstance(error, RoutingError) and error.code is ErrorCode.UNAVAILABLE:
        return "unavailable"
    return None


def fallback_label(target: FallbackTarget) -> str:
    """How an answer names the entry that gave it (``modelserve_fallback``): the version or alias, the
    other model (``name`` or ``name/version``), or ``static``."""
    if isinstance(target, str):
        return target
    if isinstance(target, FallbackModel):
        return f"{target.model}/{target.version}" if target.version else target.model
    return STATIC_LABEL


class RetryBudget:
    """Sliding-window budget for extra attempts: :meth:`try_spend` allows one while the window's extra
    attempts stay under ``percent`` of its requests (or under ``min_per_window``). Thread-safe, O(1)
    memory (the window is ``_BUDGET_BUCKETS`` buckets, so it slides in steps of a tenth of ``window_s``)."""

    def __init__(self, settings: FallbackBudget, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._bucket_ns = max(1, int(settings.window_s * 1e9 / _BUDGET_BUCKETS))
        self._buckets: deque[list[int]] = deque()  # [bucket index, requests, extra attempts]
        self._lock = threading.Lock()

    def record_request(self) -> None:
        """A request of the model arrived (before its first attempt)."""
        with self._lock:
            self._bucket(self._clock.now_ns())[1] += 1

    def try_spend(self) -> bool:
        """Take one extra attempt from the budget; False (nothing taken) when it is spent."""
        with self._lock:
            bucket = self._bucket(self._clock.now_ns())
            requests = sum(b[1] for b in self._buckets)
            extras = sum(b[2] for b in self._buckets)
            allowed = max(float(self.settings.min_per_window), requests * self.settings.percent / 100.0)
            if extras + 1 > allowed:
                return False
            bucket[2] += 1
            return True

    def _bucket(self, now_ns: int) -> list[int]:
        index = now_ns // self._bucket_ns
        buckets = self._buckets
        if not buckets or buckets[-1][0] != index:
            buckets.append([index, 0, 0])
        while buckets[0][0] <= index - _BUDGET_BUCKETS:
            buckets.popleft()
        return buckets[-1]


def check_fallbacks(
    model: str, policy: RoutingPolicy, signature: ModelSignature, others: dict[str, ModelSignature]
) -> None:
    """Raise ``ValueError`` naming the entry when ``policy.fallback`` cannot stand in for ``model``:
    another model (``others[name]``, its loaded signature; a model not loaded now is not checked) that
    lacks an input this model's clients send or needs one they do not, with another datatype or an
    incompatible shape, or lacks one of this model's outputs; a static answer naming an output this model
    does not have or values its datatype cannot hold."""
    for position, target in enumerate(policy.fallback):
        where = f"fallback[{position}]"
        if isinstance(target, FallbackModel):
            other = others.get(target.model)
            if other is None:
                continue
            if target.model == model:
                raise ValueError(f"{where}: names model '{model}' itself; use a version or alias string instead")
            _check_model(where, signature, other)
        elif isinstance(target, FallbackStatic):
            for name, values in target.static.items():
                spec = signature.output(name)
                if spec is None:
                    raise ValueError(
                        f"{where}: static output '{name}' is not an output of model '{model}' "
                        f"(its outputs: {list(signature.output_names)})"
                    )
                try:
                    _static_array(values, spec.datatype)
                except (TypeError, ValueError, OverflowError) as exc:
                    raise ValueError(
                        f"{where}: static output '{name}' values {values[:4]!r} do not fit its datatype "
                        f"{spec.datatype.value}: {exc}"
                    ) from None


def _check_model(where: str, mine: ModelSignature, other: ModelSignature) -> None:
    for spec in other.inputs:
        sent = mine.input(spec.name)
        if sent is None:
            if spec.optional:
                continue
            raise ValueError(
                f"{where}: model '{other.name}' needs input '{spec.name}', which model '{mine.name}' does not take "
                f"(its inputs: {[s.name for s in mine.inputs]})"
            )
        if sent.datatype is not spec.datatype or not _dims_accept(spec.dims, sent.dims):
            raise ValueError(
                f"{where}: model '{other.name}' input '{spec.name}' is {spec.datatype.value} {list(spec.dims)}, "
                f"model '{mine.name}' sends {sent.datatype.value} {list(sent.dims)}"
            )
    for spec in mine.inputs:
        if other.input(spec.name) is None:
            raise ValueError(f"{where}: model '{other.name}' has no input '{spec.name}', which '{mine.name}' takes")
    if (mine.max_batch_size > 0) != (other.max_batch_size > 0):
        raise ValueError(
            f"{where}: model '{mine.name}' {'batches' if mine.max_batch_size else 'does not batch'} and model "
            f"'{other.name}' {'does' if other.max_batch_size else 'does not'} (max_batch_size differs in kind)"
        )
    missing = [spec.name for spec in mine.outputs if other.output(spec.name) is None]
    if missing:
        raise ValueError(f"{where}: model '{other.name}' lacks outputs {missing} of model '{mine.name}'")


def _dims_accept(theirs: tuple[int, ...], mine: tuple[int, ...]) -> bool:
    """Every shape ``mine`` admits is one ``theirs`` admits (``-1`` is any length)."""
    return len(theirs) == len(mine) and all(t in (-1, m) for t, m in zip(theirs, mine, strict=True))


def _static_array(values: list[object], datatype: Datatype | None) -> np.ndarray:
    if datatype is Datatype.BYTES or (datatype is None and any(isinstance(v, (str, bytes)) for v in values)):
        items = [v if isinstance(v, bytes) else str(v).encode() for v in values]
        return np.array(items, dtype=object)
    if datatype is None:
        return np.asarray(values)
    array = np.asarray(values)
    if array.dtype.kind == "f" and datatype.numpy_dtype.kind in "iub" and not np.all(np.mod(array, 1) == 0):
        raise ValueError("fractional values for an integer output")
    return np.asarray(values, dtype=datatype.numpy_dtype)


def static_outputs(
    target: FallbackStatic, signature: ModelSignature | None, rows: int | None
) -> tuple[dict[str, np.ndarray], dict[str, Datatype]]:
    """A static answer's outputs and datatypes (the output's declared datatype when ``signature`` has it):
    ``rows`` copies of the values (shape ``[rows, len(values)]``) for a batching model's request of
    ``rows`` rows, else the values alone (shape ``[len(values)]``)."""
    outputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, Datatype] = {}
    for name, values in target.static.items():
        spec = signature.output(name) if signature is not None else None
        array = _static_array(values, spec.datatype if spec is not None else None)
        if rows is not None:
            array = np.tile(array, (rows, 1))
        outputs[name] = array
        datatype = spec.datatype if spec is not None else datatype_from_numpy(array.dtype)
        datatypes[name] = datatype if datatype is not None else Datatype.BYTES
    return outputs, datatypes


def check_policy(model: str, policy: RoutingPolicy, manager: ModelManager) -> None:
    """Check ``policy``'s fallback chain against what is loaded now (for the routing API before it sets a
    policy, and for policies from the settings file once their models load): raises
    :class:`~modelserve.core.errors.ValidationError` naming the entry when another model's signature does
    not accept ``model``'s inputs, or a static answer does not fit ``model``'s outputs. Entries whose
    model is not loaded are not checked (the request path skips one that refuses a request)."""
    versions = manager.loaded_versions(model)
    if not versions:
        return
    signature = max(versions, key=lambda v: int(v.version) if v.version.isdigit() else -1).signature
    others = {}
    for target in policy.fallback:
        if isinstance(target, FallbackModel):
            loaded = manager.loaded_versions(target.model)
            chosen = [v for v in loaded if v.version == target.version] if target.version else loaded
            if chosen:
                others[target.model] = chosen[-1].signature
    try:
        check_fallbacks(model, policy, signature, others)
    except ValueError as exc:
        raise ValidationError(f"model '{model}' routing policy: {exc}") from None
