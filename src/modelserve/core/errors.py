"""Domain errors: what went wrong, at which stage, with a transport-neutral code.

A request moves through stages, and each stage raises its own error class::

    bytes --decode--> InferRequest --route--> model version --validate--> queue --run--> outputs --encode--> bytes
          DecodeError               RoutingError          ValidationError   QueueError  RuntimeFailure  EncodeError
                                                                            CircuitOpenError (a breaker is open)

Load-time failures are ``ModelLoadError``, each with the stage of the load that raised it
(``LoadStage``), in the order a load runs::

    budget --> config --> checksum --> load --> verify --> warmup --> READY

budget: no room under ``repository.memory_budget_mb``; config: config.pbtxt, version_policy or scheduler
settings; checksum: ``SHA256SUMS``; load: the runtime reads the model file; verify: the config disagrees
with the model file, or an instance is unhealthy; warmup: a ``model_warmup`` request failed.

Every error carries an :class:`ErrorCode`. The transports own the mapping from code to HTTP status and
gRPC status, each in one table (``transport/http/errors.py``, ``transport/grpc/errors.py``); nothing below
the transport knows about HTTP. Messages name the thing that was wrong, what was expected, and the fix;
they never carry tracebacks, file system paths or internal keys, because they are sent to clients as they are.
"""

from __future__ import annotations

import enum
from typing import Literal

__all__ = [
    "CircuitOpenError",
    "DecodeError",
    "EncodeError",
    "ErrorCode",
    "LoadStage",
    "ModelLoadError",
    "ModelServeError",
    "QueueError",
    "RoutingError",
    "RuntimeFailure",
    "ValidationError",
]


class ErrorCode(enum.Enum):
    """Transport-neutral error codes (the subset of gRPC's codes a client can act on)."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    PERMISSION_DENIED = "permission_denied"
    UNSUPPORTED = "unsupported"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INTERNAL = "internal"


class ModelServeError(Exception):
    """Base class: an error whose message is safe to send to the client.

    ``retry_after_s`` is a hint for overload errors (HTTP ``Retry-After``).
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None, retry_after_s: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return self.message


class DecodeError(ModelServeError):
    """The bytes on the wire are not a well-formed request (malformed JSON, truncated binary, bad lengths)."""

    code = ErrorCode.INVALID_ARGUMENT


class RoutingError(ModelServeError):
    """The request names a model or version that does not exist or is not ready."""

    code = ErrorCode.NOT_FOUND


class ValidationError(ModelServeError):
    """The request is well-formed but does not match the model's signature (name, datatype, shape)."""

    code = ErrorCode.INVALID_ARGUMENT


class QueueError(ModelServeError):
    """The request was not admitted or not run: a limit was reached, the server is draining, or it expired."""

    code = ErrorCode.UNAVAILABLE


class CircuitOpenError(QueueError):
    """Not run: the version's circuit breaker is open after it kept failing (``routing/breaker.py``);
    UNAVAILABLE with a retry hint, refused for the cost of a lock."""

    code = ErrorCode.UNAVAILABLE


class RuntimeFailure(ModelServeError):
    """The model itself failed while running this request (the runtime raised, or its worker died)."""

    code = ErrorCode.INTERNAL


class EncodeError(ModelServeError):
    """The outputs cannot be written in the format the client asked for (e.g. non-UTF-8 BYTES as JSON)."""

    code = ErrorCode.INVALID_ARGUMENT


LoadStage = Literal["budget", "config", "checksum", "load", "verify", "warmup"]


class ModelLoadError(ModelServeError):
    """A model version could not be loaded: bad config, missing file, config and model file disagree.

    ``stage`` says where the load stopped (see the module docstring); it is set by the code that raises,
    never guessed from the message, and labels ``modelserve_model_load_failures_total``. A runtime that
    cannot read its model file raises with the default, ``"load"``.
    """

    code = ErrorCode.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        *,
        stage: LoadStage = "load",
        code: ErrorCode | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message, code=code, retry_after_s=retry_after_s)
        self.stage: LoadStage = stage
