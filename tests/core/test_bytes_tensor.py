"""Property tests: BYTES tensors in their binary form (4-byte little-endian length, then the bytes).

Checked against tritonclient's own ``serialize_byte_tensor`` / ``deserialize_bytes_tensor`` so that both
sides of the wire agree byte for byte, and against every way a buffer can be cut or padded.
"""

from __future__ import annotations

import math
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient import utils as triton_utils

from modelserve.core.bytes_tensor import deserialize_bytes_tensor, serialize_bytes_tensor
from modelserve.core.errors import DecodeError
from tests.protocol.tensor_strategies import PROPERTY_SETTINGS, object_array, shapes

elements = st.lists(st.binary(max_size=12), max_size=12)  # empty strings and non-UTF-8 bytes included


def _flat(items: list[bytes] | list[str]) -> np.ndarray:
    return object_array(items, (len(items),))


@PROPERTY_SETTINGS
@given(items=elements)
def test_round_trip(items: list[bytes]) -> None:
    buffer = serialize_bytes_tensor(_flat(items))
    assert len(buffer) == sum(4 + len(item) for item in items)
    out = deserialize_bytes_tensor(buffer, len(items), what="input 's'")
    assert out.dtype == np.dtype(object) and out.shape == (len(items),)
    assert all(type(item) is bytes for item in out)
    assert list(out) == items


@PROPERTY_SETTINGS
@given(data=st.data(), shape=shapes)
def test_serialization_is_row_major_and_matches_tritonclient(data: st.DataObject, shape: tuple[int, ...]) -> None:
    items = data.draw(st.lists(st.binary(max_size=6), min_size=math.prod(shape), max_size=math.prod(shape)))
    array = object_array(items, shape)
    for layout in (array, np.asfortranarray(array), array.T):
        buffer = serialize_bytes_tensor(layout)
        theirs = triton_utils.serialize_byte_tensor(layout)
        assert buffer == (theirs.item() if theirs.size else b"")
        assert list(triton_utils.deserialize_bytes_tensor(buffer)) == list(np.ascontiguousarray(layout).reshape(-1))
        assert list(deserialize_bytes_tensor(buffer, layout.size, what="x")) == list(layout.reshape(-1))


@PROPERTY_SETTINGS
@given(items=st.lists(st.text(max_size=6), max_size=8))
def test_str_elements_are_written_as_utf8(items: list[str]) -> None:
    buffer = serialize_bytes_tensor(_flat(items))
    assert list(deserialize_bytes_tensor(buffer, len(items), what="x")) == [item.encode() for item in items]


@PROPERTY_SETTINGS
@given(items=elements.filter(bool), data=st.data())
def test_any_truncation_is_a_decode_error(items: list[bytes], data: st.DataObject) -> None:
    buffer = serialize_bytes_tensor(_flat(items))
    cut = data.draw(st.integers(0, len(buffer) - 1), label="cut")
    with pytest.raises(DecodeError, match="input 's'"):
        deserialize_bytes_tensor(buffer[:cut], len(items), what="input 's'")


@PROPERTY_SETTINGS
@given(items=elements, extra=st.binary(min_size=1, max_size=12))
def test_left_over_bytes_are_a_decode_error(items: list[bytes], extra: bytes) -> None:
    buffer = serialize_bytes_tensor(_flat(items))
    with pytest.raises(DecodeError, match="input 's'"):
        deserialize_bytes_tensor(buffer + extra, len(items), what="input 's'")


@PROPERTY_SETTINGS
@given(items=elements, delta=st.sampled_from([-1, 1]) | st.integers(-5, 5).filter(bool))
def test_an_element_count_other_than_the_serialized_one_is_a_decode_error(items: list[bytes], delta: int) -> None:
    buffer = serialize_bytes_tensor(_flat(items))
    count = len(items) + delta
    if count < 0:
        return
    with pytest.raises(DecodeError):
        deserialize_bytes_tensor(buffer, count, what="x")


@PROPERTY_SETTINGS
@given(items=elements.filter(bool), data=st.data())
def test_an_over_long_length_prefix_is_a_decode_error(items: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(items) - 1), label="element")
    offset = sum(4 + len(item) for item in items[:index])
    remaining = sum(4 + len(item) for item in items[index:]) - 4
    length = data.draw(st.integers(remaining + 1, 2**32 - 1), label="declared length")
    buffer = bytearray(serialize_bytes_tensor(_flat(items)))
    struct.pack_into("<I", buffer, offset, length)
    with pytest.raises(DecodeError, match=f"element {index} declares {length} bytes"):
        deserialize_bytes_tensor(bytes(buffer), len(items), what="x")


@PROPERTY_SETTINGS
@given(buffer=st.binary(max_size=40), count=st.integers(0, 12))
def test_arbitrary_buffers_decode_or_raise_decode_error(buffer: bytes, count: int) -> None:
    try:
        out = deserialize_bytes_tensor(memoryview(buffer), count, what="x")
    except DecodeError:
        return
    assert serialize_bytes_tensor(out) == buffer  # whatever decodes re-encodes to the same bytes


@pytest.mark.parametrize("bad", [1, 1.5, None, np.int32(3), ["a"]])
def test_non_bytes_elements_are_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="bytes or str"):
        serialize_bytes_tensor(object_array([b"ok", bad], (2,)))


@PROPERTY_SETTINGS
@given(array=hnp.arrays(np.dtype("S4"), shapes))
def test_numpy_fixed_width_bytes_elements_serialize(array: np.ndarray) -> None:
    buffer = serialize_bytes_tensor(array)
    assert list(deserialize_bytes_tensor(buffer, array.size, what="x")) == [bytes(x) for x in array.reshape(-1)]


def test_deserializing_checks_the_buffer_before_allocating() -> None:
    """An empty buffer cannot hold 2**22 elements (each needs 4 bytes): refuse before allocating 32 MiB.

    The REST and gRPC decoders guard this in ``tensor_from_raw``; the helper itself does not (yet), so any
    other caller (the python runtime's worker pipe) still allocates ``8 x count`` bytes up front.
    """
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            deserialize_bytes_tensor(b"", 2**22, what="x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
