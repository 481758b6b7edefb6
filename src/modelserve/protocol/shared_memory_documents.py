"""The system shared-memory extension's control messages, REST and gRPC, in Triton's shapes.

REST: ``GET /v2/systemsharedmemory[/region/{name}]/status`` answers a JSON list of ``{"name", "key",
"offset", "byte_size"}``; ``POST .../region/{name}/register`` takes ``{"key", "offset", "byte_size"}``
(``offset`` optional, 0). gRPC: ``SystemSharedMemoryStatusResponse.regions`` maps each name to the same
four fields. The registry (``service/shared_memory.py``) checks the values; this module only reads and
writes the wire shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from modelserve.core.errors import DecodeError
from modelserve.service.shared_memory import RegionStatus

__all__ = ["register_request", "status_document", "status_message"]


def status_document(regions: Sequence[RegionStatus]) -> list[dict[str, Any]]:
    return [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in regions]


def status_message(regions: Sequence[RegionStatus]) -> Any:
    message = pb.SystemSharedMemoryStatusResponse()
    for r in regions:
        message.regions[r.name].CopyFrom(
            pb.SystemSharedMemoryStatusResponse.RegionStatus(
                name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size
            )
        )
    return message


def _unsigned(body: Mapping[str, Any], field: str) -> int:
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError(f"shared memory register request: '{field}' must be a non-negative integer")
    return value


def register_request(body: Mapping[str, Any]) -> tuple[str, int, int]:
    """``(key, offset, byte_size)`` of a REST register request body (a parsed JSON object). Raises
    :class:`DecodeError` naming the missing or mistyped field (Triton's texts)."""
    if "key" not in body:
        raise DecodeError("Shared memory register request has no 'key' field")
    key = body["key"]
    if not isinstance(key, str):
        raise DecodeError("shared memory register request: 'key' must be a string (a POSIX shared memory name)")
    if "byte_size" not in body:
        raise DecodeError("Shared memory register request has no 'byte_size' field")
    offset = _unsigned(body, "offset") if "offset" in body else 0
    return key, offset, _unsigned(body, "byte_size")
