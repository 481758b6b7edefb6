"""``json_arrays.decode_numeric_span`` against the whole parse it stands in for (``parse_json_body`` then
``tensor_from_json``): for any span without strings or objects, valid or not, it answers exactly what the whole
path answers (the same tensor, the same error message, the same JSON error at the same byte), or ``None`` (the
caller then parses it whole). Windows and pieces are shrunk to a few bytes so that every boundary case is
reached by short spans."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError
from modelserve.protocol import json_arrays
from modelserve.protocol.json_arrays import JsonSyntaxError, decode_numeric_span
from modelserve.protocol.rest_codec import parse_json_body
from modelserve.protocol.tensor_codec import tensor_from_json

PROPERTY = settings(
    max_examples=600,
    deadline=None,
    database=None,
    # The window fixture only sets a constant: nothing to reset between examples.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
DATATYPES = [dt for dt in Datatype if dt is not Datatype.BF16]
WHAT = "input 'x'"

_ATOMS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(-300, 300).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(json.dumps),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.sampled_from(["true", "false", "null", "NaN", "Infinity", "-Infinity", "1e400", "-0", "0.5", "1E5", "2e-3"]),
)
_TREES = st.recursive(_ATOMS, lambda inner: st.lists(inner, max_size=4), max_leaves=24)
_SPACE = st.sampled_from(["", "", "", " ", "\n", " \t "])


@st.composite
def _spans(draw: st.DrawFn) -> bytes:
    """A JSON array of numbers and words, nested or not, with random spacing, sometimes mutated."""
    tokens: list[str] = []

    def emit(tree: Any) -> None:
        if isinstance(tree, list):
            tokens.append("[")
            for index, item in enumerate(tree):
                if index:
                    tokens.append(",")
                emit(item)
            tokens.append("]")
        else:
            tokens.append(tree)

    emit(draw(st.lists(_TREES, max_size=6)))
    text = "".join(token + draw(_SPACE) for token in tokens)
    if draw(st.integers(0, 3)) == 0:  # a typo: insert, delete or replace one character
        where = draw(st.integers(0, len(text) - 1))
        char = draw(st.sampled_from(list("[],0 -.etn")))
        kind = draw(st.integers(0, 2))
        text = text[:where] + (char if kind < 2 else "") + text[where + (kind > 0) :]
    return text.encode()


def _outcome(call: Any) -> Any:
    try:
        array = call()
    except DecodeError as exc:
        return ("error", exc.message)
    if array is None:
        return None
    if isinstance(array, JsonSyntaxError):  # what the caller words as the whole path does
        return ("error", f"{WHAT} 'data' is not valid JSON ({array.msg} at byte {array.pos})")
    if array.dtype == np.dtype(object):
        return ("array", array.shape, array.tolist())
    return ("array", array.shape, array.dtype.str, array.tobytes())


def _whole(span: bytes, datatype: Datatype, shape: tuple[int, ...], max_depth: int) -> Any:
    def call() -> np.ndarray:
        data = parse_json_body(memoryview(span), f"{WHAT} 'data'")
        return tensor_from_json(data, datatype, shape, int(np.prod(shape)), max_depth, WHAT)

    outcome = _outcome(call)
    if outcome[0] == "error" and "is not valid JSON" in outcome[1]:
        return ("error", outcome[1].split(";")[0])  # the advice after it is the caller's
    return outcome


def _fast(span: bytes, datatype: Datatype, shape: tuple[int, ...], max_depth: int) -> Any:
    count = int(np.prod(shape))
    return _outcome(lambda: decode_numeric_span(memoryview(span), datatype, shape, count, max_depth, WHAT))


def _element_count(span: bytes) -> int:
    try:
        data = json.loads(span)
    except ValueError:
        return 3
    if not isinstance(data, list):
        return 1
    stack, found = [data], 0
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            else:
                found += 1
    return found


@pytest.fixture(params=[3, 1 << 20], ids=["tiny-windows", "real-windows"])
def window(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(json_arrays, "_WINDOW", request.param)
    monkeypatch.setattr(json_arrays, "_MAX_CARRY", 4 * max(request.param, 64))
    return int(request.param)


@PROPERTY
@given(span=_spans(), datatype=st.sampled_from(DATATYPES), depth=st.sampled_from([2, 3, 64]), data=st.data())
def test_the_fast_path_answers_as_the_whole_parse(
    window: int, span: bytes, datatype: Datatype, depth: int, data: st.DataObject
) -> None:
    elements = _element_count(span)
    count = data.draw(st.sampled_from([elements, elements, max(elements - 1, 0), elements + 1]))
    shape = data.draw(st.sampled_from([(count,), (1, count)]))
    fast = _fast(span, datatype, shape, depth)
    if fast is not None:
        assert fast == _whole(span, datatype, shape, depth)


@pytest.mark.parametrize(
    ("span", "datatype", "shape"),
    [
        (b"[1, 2, 3]", Datatype.INT8, (3,)),
        (b"[[1.5, -2e3], [3, 4E-2]]", Datatype.FP32, (2, 2)),
        (b"[[1,2],[3,4]]", Datatype.FP16, (4,)),
        (b"[ [ ], [1], [[2, 3]], [] ]", Datatype.INT64, (3,)),
        (b"[true, false, true]", Datatype.BOOL, (3,)),
        (b"[NaN, Infinity, -Infinity, 1]", Datatype.FP64, (4,)),
        (b"[18446744073709551615, 0]", Datatype.UINT64, (2,)),
        (b"[[[1]], 2, [3, [4]]]", Datatype.INT32, (4,)),
    ],
)
def test_valid_numeric_arrays_take_the_fast_path(span: bytes, datatype: Datatype, shape: tuple[int, ...]) -> None:
    fast = _fast(span, datatype, shape, 64)
    assert fast is not None and fast[0] == "array"
    assert fast == _whole(span, datatype, shape, 64)


@pytest.mark.parametrize(
    ("span", "datatype", "shape", "message"),
    [
        (b"[1, 2]", Datatype.INT8, (3,), "'data' has 2 elements but shape [3] needs 3"),
        (b"[1, null]", Datatype.FP32, (2,), "FP32 'data' must hold only numbers"),
        (b"[1.5, 300]", Datatype.INT8, (2,), "INT8 'data' must hold integers, not fractions"),
        (b"[1, 300]", Datatype.INT8, (2,), "Python integer 300 out of bounds for int8"),
        (b"[1, 1e10]", Datatype.FP16, (2,), "a value is outside the range of FP16"),
        (b"[true, 1]", Datatype.BOOL, (2,), "BOOL 'data' must hold only true/false"),
        (b"[1, [2]]", Datatype.FP32, (2,), "FP32 'data' must hold only numbers"),
        (b"[[[1]]]", Datatype.FP32, (1,), "'data' is nested deeper than 2 levels"),
        (b"[1, 2]", Datatype.BYTES, (2,), "BYTES elements in JSON must be strings, element 0 is int"),
    ],
)
def test_bad_values_get_the_whole_paths_message(
    span: bytes, datatype: Datatype, shape: tuple[int, ...], message: str
) -> None:
    fast = _fast(span, datatype, shape, 2)
    assert fast == _whole(span, datatype, shape, 2)
    assert fast is not None and fast[0] == "error" and message in fast[1]


@pytest.mark.parametrize(
    "span",
    [
        b"[1,,2]",
        b"[1 2]",
        b"[[1]2]",
        b"[1,]",
        b"[[1],]",
        b"[1]]",
        b"[[1, 2], [3, 4]",
        b"[NaN, 1, 2,]",
        b"[1, 2, NaN, 3 4]",
        b"[1, Infinity, [2]]]",
        b"[" * 1100 + b"]" * 1100,
        b"[" + b"1, " * 40 + b"[" * 1100 + b"]" * 1101,
        # Found by the property: content after the outer array, in the window that closes it.
        b" [],0,0,-10, -10 ]",
        b"[1] ,[2]",
        b"[1, 2] 3",
    ],
)
def test_invalid_json_gets_orjsons_message_and_byte(window: int, span: bytes) -> None:
    fast = _fast(span, Datatype.FP32, (2,), 2000)
    assert fast is not None and fast[1].startswith(f"{WHAT} 'data' is not valid JSON")
    assert fast == _whole(span, Datatype.FP32, (2,), 2000)


def test_a_large_array_is_decoded_without_a_list_of_its_elements() -> None:
    import tracemalloc

    rows = 400_000
    span = b"[" + b",".join([b"[5.1, 3.5, 1.4, 0.2]"] * rows) + b"]"
    tracemalloc.start()
    try:
        array = decode_numeric_span(memoryview(span), Datatype.FP32, (rows, 4), rows * 4, 64, WHAT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert array is not None and array.shape == (rows, 4) and float(array[-1, 0]) == pytest.approx(5.1)
    # The result (6.4 MB) plus a window's piece (~8 MB of Python floats for 1 MiB of text); a whole parse
    # holds a float (24 B) and a pointer per element plus a list per row: ~80 MB here.
    assert peak < array.nbytes + 2 * len(span)
