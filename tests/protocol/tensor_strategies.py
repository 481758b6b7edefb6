"""Hypothesis strategies and comparisons shared by the codec property tests.

Arrays are held the way the server holds them (BF16 as ``uint16`` words, BYTES as object arrays of
``bytes``); :func:`client_array` turns one into what tritonclient wants (``ml_dtypes.bfloat16`` for BF16).
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelserve.core.datatypes import Datatype

# Bounded so that the whole property suite runs in seconds; no example database is written to the tree.
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
# For tests parametrized over all 14 datatypes (so that each one is surely covered).
PER_DATATYPE_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=25)

FIXED_NATIVE = [
    Datatype.BOOL,
    Datatype.UINT8,
    Datatype.UINT16,
    Datatype.UINT32,
    Datatype.UINT64,
    Datatype.INT8,
    Datatype.INT16,
    Datatype.INT32,
    Datatype.INT64,
    Datatype.FP16,
    Datatype.FP32,
    Datatype.FP64,
]
ALL_DATATYPES = [*FIXED_NATIVE, Datatype.BF16, Datatype.BYTES]
FLOATS = (Datatype.FP16, Datatype.FP32, Datatype.FP64)

# Scalars (shape []) and 0-sized dimensions included.
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)

# Tensor and parameter names: any text, including non-ASCII (tritonclient escapes it to ASCII JSON).
names = st.text(min_size=1, max_size=6)


def object_array(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        out[index] = item
    return out.reshape(shape)


def bytes_arrays(shape_strategy: st.SearchStrategy[tuple[int, ...]], *, utf8: bool) -> st.SearchStrategy[np.ndarray]:
    """Object arrays of ``bytes``: any bytes (empty ones included), or UTF-8 text only (what JSON can carry)."""
    elements = st.text(max_size=5).map(str.encode) if utf8 else st.binary(max_size=5)
    return shape_strategy.flatmap(
        lambda shape: st.lists(elements, min_size=math.prod(shape), max_size=math.prod(shape)).map(
            lambda items: object_array(items, shape)
        )
    )


def arrays(
    datatype: Datatype, *, utf8: bool = False, shape: st.SearchStrategy[tuple[int, ...]] = shapes
) -> st.SearchStrategy[np.ndarray]:
    """Server-side arrays of ``datatype``: every bit pattern for BF16, NaN/Inf/-0.0/subnormals for floats."""
    if datatype is Datatype.BYTES:
        return bytes_arrays(shape, utf8=utf8)
    return hnp.arrays(datatype.numpy_dtype, shape)


@st.composite
def typed_arrays(
    draw: st.DrawFn, datatypes: list[Datatype] = ALL_DATATYPES, *, utf8: bool = False
) -> tuple[Datatype, np.ndarray]:
    datatype = draw(st.sampled_from(datatypes))
    return datatype, draw(arrays(datatype, utf8=utf8))


def client_array(array: np.ndarray, datatype: Datatype) -> np.ndarray:
    """The array as tritonclient must be given it (it maps BF16 to ``ml_dtypes.bfloat16`` only)."""
    if datatype is Datatype.BF16:
        return array.view(ml_dtypes.bfloat16)
    return array


def _as_bytes(item: Any) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else bytes(item)


def assert_bit_exact(actual: np.ndarray, expected: np.ndarray, datatype: Datatype) -> None:
    """Binary paths: same shape, and the same bytes element by element (NaN payloads and -0.0 included)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if datatype is Datatype.BYTES:
        assert actual.dtype == np.dtype(object)
        assert all(type(item) is bytes for item in actual.reshape(-1))
        assert list(actual.reshape(-1)) == [_as_bytes(item) for item in expected.reshape(-1)]
        return
    assert actual.dtype.itemsize == datatype.itemsize
    if datatype is not Datatype.BF16:
        assert actual.dtype == datatype.numpy_dtype, (actual.dtype, datatype)
    assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()


def assert_same_values(actual: np.ndarray, expected: np.ndarray, datatype: Datatype) -> None:
    """JSON paths: same shape and dtype; floats NaN-aware (a NaN's sign and payload do not survive JSON)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if datatype is Datatype.BYTES:
        assert [_as_bytes(item) for item in actual.reshape(-1)] == [_as_bytes(item) for item in expected.reshape(-1)]
        return
    assert actual.dtype == datatype.numpy_dtype, (actual.dtype, datatype)
    if datatype in FLOATS:
        assert np.array_equal(actual, expected, equal_nan=True), (actual, expected)
        numbers = ~np.isnan(expected)
        assert np.array_equal(np.signbit(actual[numbers]), np.signbit(expected[numbers])), "-0.0 lost its sign"
    else:
        assert np.array_equal(actual, expected), (actual, expected)


# Custom request parameters: never a reserved name (tritonclient refuses those before sending).
_RESERVED = {"sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers", "binary_data_output"}
parameter_keys = names.filter(lambda key: key not in _RESERVED and not key.startswith("triton_"))
parameter_values = st.one_of(
    st.text(max_size=6),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
custom_parameters = st.dictionaries(parameter_keys, parameter_values, max_size=4)


def assert_same_parameters(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal, and each value keeps its type (True is not 1, 2.0 is not 2)."""
    assert actual == expected
    assert {key: type(value) for key, value in actual.items()} == {key: type(v) for key, v in expected.items()}
