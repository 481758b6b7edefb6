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


# Elements of one length in a row before the rest of the run is checked in bulk (numpy, strided).
_RUN = 256
_FIRST_CHUNK = 1024


def _same_length_run(view: memoryview, offset: int, length: int, limit: int) -> int:
    """How many of the next ``limit`` elements from ``offset`` have prefix ``length`` (all fit in ``view``).

    Galloping chunks, so a run that ends soon costs little and a long one costs one numpy pass."""
    stride = 4 + length
    done, chunk = 0, _FIRST_CHUNK
    while done < limit:
        n = min(chunk, limit - done)
        prefixes = np.ndarray((n,), dtype="<u4", buffer=view, offset=offset + done * stride, strides=(stride,))
        mismatch = prefixes != length
        if mismatch.any():
            return done + int(mismatch.argmax())
        done += n
        chunk *= 2
    return done


def _check_prefixes(view: memoryview, count: int, what: str) -> None:
    """Walk the length prefixes without building anything; raise on the first that does not fit.

    Runs of equal lengths (the common case, and the costly one: millions of short elements) are checked in
    bulk, so a malformed tensor is refused at numpy speed and before any element is allocated."""
    unpack = _LEN.unpack_from
    end = len(view)
    offset = index = streak = 0
    previous = -1
    try:
        while index < count:
            (length,) = unpack(view, offset)  # struct.error past the end
            following = offset + 4 + length
            if following > end:
                raise DecodeError(
                    f"{what}: BYTES element {index} declares {length} bytes but only {end - offset - 4} remain"
                )
            if length == previous:
                streak += 1
                if streak >= _RUN:
                    run = _same_length_run(view, offset, length, min(count - index, (end - offset) // (4 + length)))
                    index += run
                    offset += run * (4 + length)
                    streak = 0
                    continue
            else:
                previous, streak = length, 1
            offset = following
            index += 1
    except struct.error:
        raise DecodeError(
            f"{what}: BYTES data ends after {index} of {count} elements; each element needs a 4-byte "
            "little-endian length prefix followed by that many bytes"
        ) from None
    if offset != end:
        raise DecodeError(
            f"{what}: {end - offset} bytes left over after {count} BYTES elements; "
            "the shape's element count must match the serialized elements"
        )


def deserialize_bytes_tensor(buffer: bytes | memoryview, count: int, *, what: str) -> np.ndarray:
    """Read exactly ``count`` length-prefixed elements that fill ``buffer`` exactly.

    Returns a flat object array of ``bytes``. Raises :class:`DecodeError` naming ``what`` (e.g.
    ``input 'text'``) when a length runs past the end, too few elements are present, or bytes are left over.
    Every prefix is checked before the first element is built.
    """
    view = memoryview(buffer)
    if 4 * count > len(view):
        # Checked before allocating: a tiny buffer must not make us build a huge object array.
        raise DecodeError(
            f"{what}: {len(view)} bytes cannot hold {count} BYTES elements (each needs at least a 4-byte "
            "length prefix); the shape's element count must match the serialized elements"
        )
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    _check_prefixes(view, count, what)
    out = np.empty(count, dtype=object)
    unpack = _LEN.unpack_from
    offset = 0
    for index in range(count):
        (length,) = unpack(view, offset)
        offset += 4
        out[index] = bytes(view[offset : offset + length])
        offset += length
    return out
