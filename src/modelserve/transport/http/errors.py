"""Error code -> HTTP status: the one table for REST (Triton's choices, plus 413 and 504 where HTTP has a
better word than Triton used)."""

from __future__ import annotations

from modelserve.core.errors import ErrorCode

__all__ = ["HTTP_STATUS"]

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    # 499 (nginx's "client closed request"): nobody reads it, but logs and tests can tell it apart.
    ErrorCode.CANCELLED: 499,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNSUPPORTED: 501,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.INTERNAL: 500,
}
