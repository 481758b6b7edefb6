"""Request-level parameters: the reserved ones the server acts on, and the custom ones it passes on.

Reserved (never passed to the model as custom parameters): ``priority`` and ``timeout`` (schedule
policy), ``binary_data_output``, ``sequence_id``/``sequence_start``/``sequence_end``, ``headers``, and
every other ``triton_*`` name, which clients may not set (Triton rejects them too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelserve.core.errors import DecodeError, ValidationError
from modelserve.core.inference import ParameterValue

__all__ = [
    "MAX_PARAMETERS",
    "MAX_PARAMETER_CHARS",
    "MAX_PARAMETER_NAME_CHARS",
    "RequestParameters",
    "check_parameter_count",
    "parse_request_parameters",
]

_SEQUENCE = ("sequence_id", "sequence_start", "sequence_end")
# triton_* names that Triton's own clients send and Triton accepts: perf_analyzer puts
# triton_enable_empty_final_response on every gRPC request (it matters only for decoupled models).
_TRITON_DEFINED = frozenset({"triton_enable_empty_final_response"})
# Checked before any tensor is decoded, so a request's parameters cost at most this much to look at.
MAX_PARAMETERS = 256
MAX_PARAMETER_NAME_CHARS = 256
MAX_PARAMETER_CHARS = 1024 * 1024  # all string values of one request's parameters together


@dataclass(frozen=True, slots=True)
class RequestParameters:
    custom: dict[str, ParameterValue]
    priority: int
    timeout_us: int
    binary_data_output: bool


def _non_negative_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"request parameter '{key}' must be a non-negative integer, got {value!r}"[:200])
    return value


def check_parameter_count(count: int, what: str) -> None:
    """Refuse more than :data:`MAX_PARAMETERS` parameters on ``what`` (the request, an output)."""
    if count > MAX_PARAMETERS:
        raise DecodeError(f"{what} has {count} parameters; at most {MAX_PARAMETERS} are allowed")


def parse_request_parameters(raw: Mapping[str, Any] | None) -> RequestParameters:
    """Split and check request parameters. Raises :class:`DecodeError`/:class:`ValidationError`."""
    custom: dict[str, ParameterValue] = {}
    priority = 0
    timeout_us = 0
    binary = False
    if not raw:
        return RequestParameters(custom, priority, timeout_us, binary)
    check_parameter_count(len(raw), "the request")
    chars = 0
    for key, value in raw.items():
        if not isinstance(value, (str, int, float, bool)):
            raise DecodeError(
                f"request parameter '{key[:64]}' must be a string, number or boolean, got {type(value).__name__}"
            )
        if len(key) > MAX_PARAMETER_NAME_CHARS:
            raise DecodeError(
                f"request parameter '{key[:64]}...' has a {len(key)}-character name; at most "
                f"{MAX_PARAMETER_NAME_CHARS} are allowed"
            )
        if isinstance(value, str):
            chars += len(value)
            if chars > MAX_PARAMETER_CHARS:
                raise DecodeError(
                    f"the request's string parameters hold more than {MAX_PARAMETER_CHARS} characters "
                    f"(at '{key[:64]}'); send large values as an input tensor"
                )
        if key in _TRITON_DEFINED:
            continue
        if key.startswith("triton_"):
            raise ValidationError(f"request parameter '{key[:64]}' is reserved (names starting with 'triton_')")
        if key == "priority":
            priority = _non_negative_int(key, value)
        elif key == "timeout":
            timeout_us = _non_negative_int(key, value)
        elif key == "binary_data_output":
            if not isinstance(value, bool):
                raise ValidationError(f"request parameter 'binary_data_output' must be true or false, got {value!r}")
            binary = value
        elif key in _SEQUENCE:
            if key == "sequence_id" and value not in (0, ""):
                raise ValidationError(
                    "sequence requests (sequence_id) are not supported: this server has no sequence batcher"
                )
        elif key == "headers":
            continue
        else:
            custom[key] = value
    return RequestParameters(custom, priority, timeout_us, binary)
