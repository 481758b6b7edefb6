"""Tensor data in and out of wire form: raw little-endian buffers and JSON lists.

Every size a client declares is checked *before* any allocation: the element count of a declared shape is
computed with exact integers and compared with the configured tensor limit, and raw buffers must match
``count x itemsize`` exactly, so a request declaring ``[2**40]`` is refused without allocating anything.
Raw buffers become numpy views (``frombuffer``), never per-element Python loops.
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from modelserve.core.bytes_tensor import deserialize_bytes_tensor, serialize_bytes_tensor
from modelserve.core.datatypes import Datatype, parse_datatype
from modelserve.core.errors import DecodeError, EncodeError, ErrorCode

__all__ = [
    "PRECHECK_MIN_BYTES",
    "JsonElementRule",
    "bytes_element_error",
    "check_json_datatype",
    "checked_datatype",
    "checked_shape",
    "element_rule",
    "elements_to_array",
    "json_count_error",
    "json_depth_error",
    "json_element_error",
    "tensor_from_json",
    "tensor_from_raw",
    "tensor_to_json_data",
    "tensor_to_raw",
]

_LITTLE_ENDIAN = sys.byteorder == "little"


def checked_datatype(name: Any, what: str) -> Datatype:
    datatype = parse_datatype(name) if isinstance(name, str) else None
    if datatype is None:
        raise DecodeError(f"{what}: unknown datatype {name!r}; use one of {', '.join(dt.value for dt in Datatype)}")
    return datatype


# Below this many payload bytes, decoding a request costs about what checking it against the model first
# would (a second resolve of the model, ~2 µs): the transports check before decoding only above it, so the
# cost of refusing stays proportional to the error while small requests keep the short path.
PRECHECK_MIN_BYTES = 64 * 1024

# The protocol's dimensions are int64. Checked before anything formats or multiplies them: a JSON integer
# of 4,000 digits is a valid Python int, but formatting it (or a product of two) raises ValueError.
_MAX_DIM = 2**63 - 1


def _brief(value: Any) -> str:
    """A client value for an error message, bounded, and safe for ints too long to format."""
    try:
        return repr(value)[:200]
    except ValueError:
        return f"a {type(value).__name__} holding numbers too long to print"


def checked_shape(
    shape: Any,
    datatype: Datatype,
    max_tensor_bytes: int,
    what: str,
    *,
    sent_bytes: int | None = None,
    max_sent_elements: int | None = None,
) -> tuple[tuple[int, ...], int]:
    """Validate a declared shape; return it and its element count. Never allocates.

    What the client really sent is checked before the size limit, so a shape that disagrees with it is
    INVALID_ARGUMENT (never retryable), and RESOURCE_EXHAUSTED / 413 means the data itself is over the
    limit: ``sent_bytes`` is the tensor's binary size (raw contents, a binary blob, a shared-memory
    window), which a fixed-size type must fill exactly and BYTES must have 4 bytes an element for;
    ``max_sent_elements`` bounds how many elements the data can hold (JSON text, typed gRPC contents)."""
    if not isinstance(shape, (list, tuple)) or not all(type(d) is int for d in shape):
        raise DecodeError(f"{what}: 'shape' must be a list of non-negative integers, got {_brief(shape)}")
    if len(shape) > 32:
        raise DecodeError(f"{what}: shape has {len(shape)} dimensions; at most 32 are allowed")
    if any(d < 0 for d in shape):
        raise DecodeError(f"{what}: shape {_brief(list(shape))} has a negative dimension; dimensions must be >= 0")
    if any(d > _MAX_DIM for d in shape):
        if sent_bytes is not None or max_sent_elements is not None:
            raise DecodeError(
                f"{what}: a dimension of 'shape' is past int64 (over {_MAX_DIM}); the data sent cannot hold it"
            )
        raise DecodeError(
            f"{what}: a dimension of 'shape' is past int64 (over {_MAX_DIM}), far over the server's limit of "
            f"{max_tensor_bytes} bytes per tensor (limits.max_tensor_bytes)",
            code=ErrorCode.PAYLOAD_TOO_LARGE,
        )
    count = math.prod(shape)
    itemsize = datatype.itemsize or 1  # BYTES: at least 4 bytes each on the wire, 1 is a lower bound
    if count * itemsize > max_tensor_bytes:
        # Over the limit as declared: a mismatch with what was sent is the error (a shape that fits is
        # checked against its data later, where each form of data has its own message).
        if sent_bytes is not None:
            _check_sent_bytes(shape, datatype, count, sent_bytes, what)
        if max_sent_elements is not None and count > max_sent_elements:
            raise DecodeError(
                f"{what}: shape {list(shape)} declares {count} elements, but its data can hold at most "
                f"{max_sent_elements}; the shape must match the data"
            )
        raise DecodeError(
            f"{what}: shape {list(shape)} declares {count} elements ({count * itemsize} bytes), over the "
            f"server's limit of {max_tensor_bytes} bytes per tensor (limits.max_tensor_bytes)",
            code=ErrorCode.PAYLOAD_TOO_LARGE,
        )
    # With a zero dimension the count is 0, but numpy still refuses dimensions whose product is past its range.
    extent = math.prod(d for d in shape if d)
    if count == 0 and extent * itemsize > max_tensor_bytes:
        raise DecodeError(
            f"{what}: shape {list(shape)} has zero elements but its other dimensions multiply to {extent}, over "
            f"the server's limit of {max_tensor_bytes} bytes per tensor (limits.max_tensor_bytes); use small "
            "dimensions alongside the zero"
        )
    return tuple(shape), count


def _check_sent_bytes(shape: Sequence[int], datatype: Datatype, count: int, sent_bytes: int, what: str) -> None:
    if datatype is Datatype.BYTES:
        if 4 * count > sent_bytes:
            raise DecodeError(
                f"{what}: shape {list(shape)} declares {count} BYTES elements, which need at least {4 * count} "
                f"bytes (a 4-byte length each), but only {sent_bytes} bytes were sent; the shape must match the data"
            )
        return
    if count * datatype.itemsize != sent_bytes:
        raise DecodeError(
            f"{what}: binary data is {sent_bytes} bytes but shape {list(shape)} of {datatype.value} needs "
            f"{count * datatype.itemsize} bytes ({count} elements x {datatype.itemsize})"
        )


def tensor_from_raw(
    buffer: bytes | memoryview, datatype: Datatype, shape: tuple[int, ...], count: int, what: str
) -> np.ndarray:
    """A tensor from its binary form (a read-only view over ``buffer`` for fixed-size types)."""
    if datatype is Datatype.BYTES:
        return deserialize_bytes_tensor(buffer, count, what=what).reshape(shape)
    expected = count * datatype.itemsize
    if len(buffer) != expected:
        raise DecodeError(
            f"{what}: binary data is {len(buffer)} bytes but shape {list(shape)} of {datatype.value} needs "
            f"{expected} bytes ({count} elements x {datatype.itemsize})"
        )
    dtype = datatype.numpy_dtype if _LITTLE_ENDIAN else datatype.numpy_dtype.newbyteorder("<")
    array = np.frombuffer(buffer, dtype=dtype)
    if datatype is Datatype.BOOL and count and array.view(np.uint8).max() > 1:
        raise DecodeError(f"{what}: BOOL data must be bytes 0 or 1")
    return array.reshape(shape)


def json_depth_error(max_depth: int, what: str) -> DecodeError:
    return DecodeError(f"{what}: 'data' is nested deeper than {max_depth} levels")


def _flatten(data: Any, max_depth: int, what: str) -> list[Any]:
    """Row-major elements of a flat or nested list. Iterative, because the depth is client-controlled.

    A list whose first element is not a list is taken as flat: a nested list further on is then an element
    (refused by :func:`element_rule`), and no depth is checked."""
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack: list[tuple[Iterator[Any], int]] = [(iter(data), 1)]
    while stack:
        items, depth = stack[-1]
        for item in items:
            if isinstance(item, list):
                if depth >= max_depth:
                    raise json_depth_error(max_depth, what)
                stack.append((iter(item), depth + 1))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def check_json_datatype(datatype: Datatype, what: str) -> None:
    """Refuse a datatype that JSON ``data`` cannot carry (before anything is decoded)."""
    if datatype is Datatype.BF16:
        raise DecodeError(f"{what}: BF16 data cannot travel as JSON; send it with the binary tensor extension")


def json_count_error(elements: int, shape: tuple[int, ...], count: int, what: str) -> DecodeError:
    return DecodeError(
        f"{what}: 'data' has {elements} elements but shape {list(shape)} needs {count}; make the shape's "
        "product equal the number of elements"
    )


class JsonElementRule(enum.IntEnum):
    """The checks on the elements of a numeric tensor's JSON 'data', in the order they are reported: each
    is "some element breaks it", so over a tensor decoded in pieces the lowest broken rule is the one."""

    OK = 0
    NOT_A_NUMBER = 1
    NOT_A_BOOL = 2
    A_FRACTION = 3


def element_rule(items: Sequence[Any], datatype: Datatype) -> JsonElementRule:
    """The first rule that some element of ``items`` breaks (numeric and BOOL datatypes, not BYTES)."""
    if any(isinstance(item, (str, list, dict)) or item is None for item in items):
        return JsonElementRule.NOT_A_NUMBER
    if datatype is Datatype.BOOL:
        if any(type(item) is not bool for item in items):
            return JsonElementRule.NOT_A_BOOL
    elif datatype.numpy_dtype.kind in ("i", "u") and any(type(item) is float for item in items):
        return JsonElementRule.A_FRACTION
    return JsonElementRule.OK


def json_element_error(rule: JsonElementRule, datatype: Datatype, what: str) -> DecodeError:
    if rule is JsonElementRule.NOT_A_NUMBER:
        return DecodeError(f"{what}: {datatype.value} 'data' must hold only numbers (or true/false for BOOL)")
    if rule is JsonElementRule.NOT_A_BOOL:
        return DecodeError(f"{what}: BOOL 'data' must hold only true/false")
    return DecodeError(f"{what}: {datatype.value} 'data' must hold integers, not fractions")


def elements_to_array(items: Sequence[Any], datatype: Datatype, what: str) -> np.ndarray:
    """A flat array of ``datatype`` from elements that pass :func:`element_rule`. numpy converts in order,
    so the error is the first offending element's, however the elements are split into pieces."""
    try:
        # A float past the datatype's range (1e10 as FP16) would silently become inf: refuse it instead.
        with np.errstate(over="raise", invalid="raise"):
            return np.array(items, dtype=datatype.numpy_dtype)
    except FloatingPointError:
        raise DecodeError(
            f"{what}: a value is outside the range of {datatype.value}; send values that fit the input's datatype"
        ) from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise DecodeError(f"{what}: a value does not fit {datatype.value}: {_brief(str(exc))}") from exc


def bytes_element_error(index: int, item: Any, what: str) -> DecodeError:
    return DecodeError(f"{what}: BYTES elements in JSON must be strings, element {index} is {type(item).__name__}")


def tensor_from_json(
    data: Any, datatype: Datatype, shape: tuple[int, ...], count: int, max_depth: int, what: str
) -> np.ndarray:
    """A tensor from a JSON ``data`` value (flat or nested list, or a bare scalar for shape ``[]``)."""
    check_json_datatype(datatype, what)
    flat = _flatten(data, max_depth, what)
    if len(flat) != count:
        raise json_count_error(len(flat), shape, count, what)
    if datatype is Datatype.BYTES:
        out = np.empty(count, dtype=object)
        for index, item in enumerate(flat):
            if isinstance(item, str):
                try:
                    out[index] = item.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate escape ("\ud800"): not text
                    raise DecodeError(
                        f"{what}: BYTES element {index} is not valid Unicode text (a lone surrogate escape); send "
                        "binary data for non-text bytes"
                    ) from None
            else:
                raise bytes_element_error(index, item, what)
        return out.reshape(shape)
    rule = element_rule(flat, datatype)
    if rule is not JsonElementRule.OK:
        raise json_element_error(rule, datatype, what)
    return elements_to_array(flat, datatype, what).reshape(shape)


def tensor_to_raw(array: np.ndarray, datatype: Datatype) -> bytes | memoryview:
    """The binary form of an output: little-endian row-major bytes, BYTES length-prefixed."""
    if datatype is Datatype.BYTES:
        try:
            return serialize_bytes_tensor(array)
        except TypeError as exc:
            raise EncodeError(f"output holds a non-bytes element: {exc}", code=ErrorCode.INTERNAL) from exc
    if not _LITTLE_ENDIAN:
        array = array.astype(array.dtype.newbyteorder("<"))
    contiguous = np.ascontiguousarray(array)
    return contiguous.data.cast("B") if contiguous.size else b""


def tensor_to_json_data(array: np.ndarray, datatype: Datatype, name: str) -> Any:
    """A flat, JSON-ready view of an output (numpy arrays are serialized by orjson directly)."""
    if datatype is Datatype.BF16:
        raise EncodeError(f"output '{name}' is BF16, which cannot be sent as JSON; request it with binary_data")
    flat = array.reshape(-1)
    if datatype is Datatype.BYTES:
        values: list[str] = []
        for item in flat:
            raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            try:
                values.append(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise EncodeError(
                    f"output '{name}' holds bytes that are not UTF-8 and cannot be sent as JSON; request it "
                    'with "parameters": {"binary_data": true}'
                ) from exc
        return values
    return flat
