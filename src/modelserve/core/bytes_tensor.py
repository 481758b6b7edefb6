"""BYTES tensors in their binary form: each element is a 4-byte little-endian length, then the bytes.

Used by the binary-tensor extension (REST), ``raw_input_contents`` (gRPC) and the python runtime's
worker pipe, so there is one implementation to test.
"""

from __future__ import annotations

import struct

import numpy as np

from modelserve.core.errors import DecodeError

__all__ = ["deserialize_bytes_tensor", "serialize_bytes_tensor"]

_LEN = struct.Struct("<I")


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """Length-prefix every element of ``array`` (row-major). ``str`` elements are written as UTF-8.

    Raises ``TypeError`` for an element that is neither bytes nor str (a model bug, not a client's).
    """
    parts: list[bytes] = []
    for item in array.reshape(-1):
        if isinstance(item, bytes):
            data = item
        elif isinstance(item, str):
            data = item.encode("utf-8")
        elif isinstance(item, (bytearray, memoryview, np.bytes_)):
            data = bytes(item)
        else:
            raise TypeError(f"a BYTES tensor element must be bytes or str, got {type(item).__name__}")
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(buffer: bytes | memoryview, count: int, *, what: str) -> np.ndarray:
    """Read exactly ``count`` length-prefixed elements that fill ``buffer`` exactly.

    Returns a flat object array of ``bytes``. Raises :class:`DecodeError` naming ``what`` (e.g.
    ``input 'text'``) when a length runs past the end, too few elements are present, or bytes are left over.
    """
    view = memoryview(buffer)
    if 4 * count > len(view):
        # Checked before allocating: a tiny buffer must not make us build a huge object array.
        raise DecodeError(
            f"{what}: {len(view)} bytes cannot hold {count} BYTES elements (each needs at least a 4-byte "
            "length prefix); the shape's element count must match the serialized elements"
        )
    out = np.empty(count, dtype=object)
    offset = 0
    end = len(view)
    for index in range(count):
        if offset + 4 > end:
            raise DecodeError(
                f"{what}: BYTES data ends after {index} of {count} elements; each element needs a 4-byte "
                "little-endian length prefix followed by that many bytes"
            )
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise DecodeError(f"{what}: BYTES element {index} declares {length} bytes but only {end - offset} remain")
        out[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != end:
        raise DecodeError(
            f"{what}: {end - offset} bytes left over after {count} BYTES elements; "
            "the shape's element count must match the serialized elements"
        )
    return out
