"""Fuzz tests: hostile binary tensors against the BYTES splitter and the raw/JSON tensor codec.

``core/bytes_tensor.deserialize_bytes_tensor`` (REST binary extension, gRPC raw contents, the python
runtime's pipe) and ``protocol/tensor_codec`` (``checked_shape``, ``tensor_from_raw``,
``tensor_from_json``) may only return or raise a declared :class:`ModelServeError`. What they return is
checked against the input: a BYTES buffer that splits must re-serialize to the very same bytes, and no
decoded tensor holds more than a small multiple of the bytes it came from (the allocation guard).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelserve.core.bytes_tensor import deserialize_bytes_tensor, serialize_bytes_tensor
from modelserve.core.datatypes import Datatype
from modelserve.core.errors import ErrorCode, ModelServeError
from modelserve.protocol.tensor_codec import checked_shape, tensor_from_json, tensor_from_raw, tensor_to_raw

FUZZ = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MAX_TENSOR_BYTES = 1 << 16


def _prefix(length: int) -> bytes:
    return struct.pack("<I", length)


def _refused(exc: ModelServeError) -> None:
    assert exc.code is not ErrorCode.INTERNAL, exc
    assert "input 'x'" in exc.message, exc.message  # the message names the input


# --------------------------------------------------------------------------- the BYTES splitter


@st.composite
def damaged_bytes_buffers(draw: st.DrawFn) -> tuple[bytes, int]:
    """A well-formed BYTES buffer, then maybe damaged: cut short, extended, one length prefix rewritten
    (to 0, to one too many, to 2**32-1), and an element count that is right or off."""
    elements = draw(st.lists(st.binary(max_size=8), max_size=6))
    buffer = bytearray(b"".join(_prefix(len(e)) + e for e in elements))
    count = len(elements)
    damage = draw(st.sampled_from(["none", "truncate", "extend", "prefix", "count"]))
    if damage == "truncate" and buffer:
        del buffer[draw(st.integers(0, len(buffer) - 1)) :]
    elif damage == "extend":
        buffer += draw(st.binary(min_size=1, max_size=6))
    elif damage == "prefix" and elements:
        index = draw(st.integers(0, count - 1))
        offset = sum(4 + len(e) for e in elements[:index])
        length = len(elements[index])
        buffer[offset : offset + 4] = _prefix(
            draw(st.sampled_from([0, length + 1, length - 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)) % 2**32
        )
    elif damage == "count":
        count = draw(st.one_of(st.integers(0, count + 3), st.sampled_from([2**31, 2**40, 2**62])))
    return bytes(buffer), count


def _reference_split(buffer: bytes, count: int) -> list[bytes] | None:
    """The format's definition, element by element: the list, or None when it does not parse exactly."""
    items, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(buffer):
            return None
        length = int.from_bytes(buffer[offset : offset + 4], "little")
        if offset + 4 + length > len(buffer):
            return None
        items.append(buffer[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items if offset == len(buffer) else None


def _split(buffer: bytes, count: int) -> np.ndarray | None:
    expected = _reference_split(buffer, count) if count <= len(buffer) // 4 + 1 else None
    try:
        out = deserialize_bytes_tensor(buffer, count, what="input 'x'")
    except ModelServeError as exc:
        _refused(exc)
        assert expected is None, f"refused a well-formed buffer: {exc}"
        return None
    assert expected is not None, "accepted a malformed buffer"
    assert list(out) == expected
    assert out.shape == (count,)
    assert out.dtype == np.dtype(object)
    assert all(type(item) is bytes for item in out)
    # Exactly the input again: nothing skipped, nothing read twice, nothing left over.
    assert serialize_bytes_tensor(out) == buffer
    # Allocation guard: one 8-byte pointer per element, and every element cost at least 4 input bytes.
    assert out.nbytes + sum(len(item) for item in out) <= 3 * len(buffer)
    return out


@FUZZ
@given(st.binary(max_size=200), st.integers(0, 64))
@example(b"", 0)
@example(b"\0\0\0\0", 0)  # bytes left over with no element declared
@example(b"\0\0\0", 1)  # a prefix cut short
@example(b"\xff\xff\xff\xff", 1)  # a 4 GiB element in a 4-byte buffer
def test_arbitrary_buffers_split_or_refuse(buffer: bytes, count: int) -> None:
    _split(buffer, count)


@FUZZ
@given(damaged_bytes_buffers())
@example((_prefix(1) + b"a" + _prefix(2) + b"b", 2))  # the last element's length overruns by one byte
@example((_prefix(1) + b"a" + _prefix(0), 2))  # the last element is empty: valid
@example((_prefix(0) * 3, 3))
@example((b"", 2**62))  # a huge count with nothing behind it: refused before np.empty
@example((_prefix(0) * 4, 2**40))
def test_damaged_bytes_buffers_split_or_refuse(case: tuple[bytes, int]) -> None:
    _split(*case)


@st.composite
def long_runs(draw: st.DrawFn) -> tuple[bytes, int]:
    """Hundreds to thousands of elements of one length (the splitter's bulk path for runs), with at most
    one prefix rewritten, placed anywhere (often near the end, or past the first bulk chunk)."""
    length = draw(st.integers(0, 3))
    n = draw(st.integers(200, 3000))
    lengths = [length] * n
    if draw(st.booleans()):
        index = draw(
            st.one_of(
                st.integers(0, n - 1), st.integers(max(0, n - 3), n - 1), st.sampled_from([255, 256, 1279, 1280, 1281])
            ).filter(lambda i: i < n)
        )
        lengths[index] = draw(st.sampled_from([length + 1, max(length - 1, 0), 0, 2**32 - 1]))
    payload = draw(st.binary(min_size=3, max_size=3))
    buffer = b"".join(_prefix(k) + payload[: min(k, 3)] for k in lengths)
    buffer += draw(st.sampled_from([b"", b"", b"\0", b"\0" * 4]))
    count = n + draw(st.sampled_from([0, 0, 0, -1, 1]))
    return buffer, count


@settings(FUZZ, max_examples=200)
@given(long_runs())
@example((_prefix(0) * 3000, 3000))
@example(((_prefix(1) + b"a") * 2999 + _prefix(2) + b"a", 3000))  # a run whose last prefix overruns by one
@example(((_prefix(2) + b"ab") * 1281 + _prefix(1) + b"a", 1282))  # the odd one past the first bulk chunk
def test_long_runs_of_equal_lengths_split_or_refuse(case: tuple[bytes, int]) -> None:
    _split(*case)


# --------------------------------------------------------------------------- raw and JSON tensors

datatypes = st.sampled_from(list(Datatype))
dims = st.one_of(st.integers(-2, 5), st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64, 2**128]))
shapes_any: st.SearchStrategy[Any] = st.one_of(
    st.lists(dims, max_size=5),
    st.lists(st.integers(0, 1), min_size=31, max_size=34),
    st.lists(st.one_of(st.integers(0, 3), st.floats(), st.booleans(), st.none(), st.text(max_size=2)), max_size=3),
    st.none(),
    st.text(max_size=3),
    st.integers(),
)


def _shape(shape: Any, datatype: Datatype) -> tuple[tuple[int, ...], int] | None:
    try:
        checked, count = checked_shape(shape, datatype, MAX_TENSOR_BYTES, "input 'x'")
    except ModelServeError as exc:
        _refused(exc)
        return None
    assert len(checked) <= 32
    assert all(type(d) is int and d >= 0 for d in checked)
    assert count == math.prod(checked)
    assert count * (datatype.itemsize or 1) <= MAX_TENSOR_BYTES
    return checked, count


@FUZZ
@given(shapes_any, datatypes)
@example([2**32, 2**32], Datatype.INT8)  # the product overflows int64
@example([2**63, 2**63, 0], Datatype.INT8)  # zero elements, but numpy cannot hold those dims
@example([0, 2**64], Datatype.FP32)
@example([True, 2], Datatype.FP32)  # bool is an int subclass, not a dimension
@example([1.0], Datatype.FP32)
@example([1] * 33, Datatype.INT8)
@example([-1], Datatype.BYTES)
def test_checked_shape_accepts_or_refuses(shape: Any, datatype: Datatype) -> None:
    _shape(shape, datatype)


@FUZZ
@given(datatypes, st.lists(st.integers(0, 4), max_size=3), st.binary(max_size=64), st.integers(-2, 2))
@example(Datatype.BOOL, [2], b"\x00\x02", 0)  # BOOL bytes other than 0/1
@example(Datatype.FP32, [1], b"\0\0\0", 0)  # one byte short
@example(Datatype.BYTES, [2], _prefix(1) + b"a" + _prefix(5) + b"bc", 0)
@example(Datatype.BF16, [0, 3], b"", 0)
def test_raw_tensors_decode_or_refuse(datatype: Datatype, shape: list[int], payload: bytes, delta: int) -> None:
    """Raw buffers of the right length often (so that decoding succeeds), or a few bytes off."""
    checked = _shape(shape, datatype)
    assert checked is not None
    shape_t, count = checked
    if datatype is not Datatype.BYTES:
        wanted = count * datatype.itemsize + delta
        payload = (payload * (wanted // max(len(payload), 1) + 1))[: max(wanted, 0)] if wanted > 0 else b""
    try:
        array = tensor_from_raw(memoryview(payload), datatype, shape_t, count, "input 'x'")
    except ModelServeError as exc:
        _refused(exc)
        return
    assert array.shape == shape_t
    if datatype is Datatype.BYTES:
        assert array.nbytes + sum(len(item) for item in array.reshape(-1)) <= 3 * len(payload)
    else:
        assert array.nbytes == len(payload)
    # What decodes re-encodes to the same bytes.
    assert bytes(tensor_to_raw(array, datatype)) == payload


json_leaves = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True, width=16),
    st.floats(min_value=-1e30, max_value=1e30),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**300]),
)
json_data = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=2), children, max_size=2)
    ),
    max_leaves=16,
)


def _deep(value: Any, depth: int) -> Any:
    for _ in range(depth - 1):
        value = [value]
    return value


@FUZZ
@given(datatypes, st.lists(st.integers(0, 3), max_size=3), json_data)
@example(Datatype.INT32, [2], [[1], 2])
@example(Datatype.INT32, [2], [1, [2]])
@example(Datatype.BYTES, [1], [1])
@example(Datatype.UINT64, [2], [2**64 - 1, -1])
@example(Datatype.INT64, [1], [10**300])
@example(Datatype.FP64, [1], [10**400])
@example(Datatype.BOOL, [1], [2])
@example(Datatype.BF16, [1], [1.0])
@example(Datatype.FP32, [], 1.5)
def test_json_tensors_decode_or_refuse(datatype: Datatype, shape: list[int], data: Any) -> None:
    checked = _shape(shape, datatype)
    assert checked is not None
    shape_t, count = checked
    try:
        array = tensor_from_json(data, datatype, shape_t, count, 16, "input 'x'")
    except ModelServeError as exc:
        _refused(exc)
        return
    assert array.shape == shape_t
    assert array.dtype == (np.dtype(object) if datatype is Datatype.BYTES else datatype.numpy_dtype)


def test_json_data_nested_10000_deep_is_refused() -> None:
    # Not an @example: hypothesis pretty-prints examples recursively. tensor_from_json flattens iteratively.
    try:
        tensor_from_json(_deep(1, 10_000), Datatype.INT32, (1,), 1, 16, "input 'x'")
    except ModelServeError as exc:
        _refused(exc)
    else:
        raise AssertionError("data nested 10,000 deep was accepted with max_depth 16")
