"""Reading a request body within limits, and undoing its Content-Encoding without inflating a bomb.

- ``Content-Length`` over the limit is refused before a byte is read.
- The body is gathered into one ``bytearray`` (no list of pieces), and the number of pieces is capped:
  a body sent as a million one-byte chunks costs neither stack nor memory (Triton CVE-2025-23310).
- gzip/deflate are inflated incrementally with ``max_length``, so inflation stops as soon as the
  output would pass the limit, whatever the compression ratio.
"""

from __future__ import annotations

import zlib
from typing import Any

from modelserve.core.errors import DecodeError, ErrorCode, ModelServeError

__all__ = ["ClientDisconnected", "decompress", "read_body"]


class ClientDisconnected(Exception):
    """The client went away before its body arrived."""


def _too_large(limit: int) -> DecodeError:
    return DecodeError(
        f"request body is larger than the server's limit of {limit} bytes (limits.max_request_bytes); "
        "send a smaller request or raise the limit",
        code=ErrorCode.PAYLOAD_TOO_LARGE,
    )


async def read_body(receive: Any, content_length: int | None, max_bytes: int, max_chunks: int) -> bytearray:
    """Read the whole body. Raises :class:`DecodeError` (413) past a limit, :class:`ClientDisconnected`."""
    if content_length is not None and content_length > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    chunks = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        piece = message.get("body", b"")
        if piece:
            chunks += 1
            if chunks > max_chunks:
                raise DecodeError(
                    f"request body arrived in more than {max_chunks} pieces (limits.max_body_chunks); "
                    "send it in fewer, larger chunks",
                    code=ErrorCode.PAYLOAD_TOO_LARGE,
                )
            if len(body) + len(piece) > max_bytes:
                raise _too_large(max_bytes)
            body += piece
        if not message.get("more_body", False):
            return body


def decompress(body: bytearray, encoding: str, max_bytes: int) -> bytes | bytearray:
    """Undo ``Content-Encoding`` (gzip or deflate = zlib stream). Raises :class:`ModelServeError`."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj(zlib.MAX_WBITS)
    else:
        raise ModelServeError(
            f"Content-Encoding '{encoding[:32]}' is not supported; use gzip, deflate or none",
            code=ErrorCode.UNSUPPORTED,
        )
    out = bytearray()
    pending: bytes = bytes(body)
    try:
        while pending:
            out += inflater.decompress(pending, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise _too_large(max_bytes)
            pending = inflater.unconsumed_tail
        out += inflater.flush()
    except zlib.error as exc:
        raise DecodeError(f"the request body is not valid {encoding} data: {exc}") from exc
    if len(out) > max_bytes:
        raise _too_large(max_bytes)
    if not inflater.eof:
        raise DecodeError(f"the {encoding} request body is truncated")
    if inflater.unused_data:
        raise DecodeError(
            f"the request body has {len(inflater.unused_data)} bytes after the end of the {encoding} stream; "
            f"send exactly one {encoding} stream"
        )
    return out
