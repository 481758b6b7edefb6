"""Fuzz tests: hostile REST bodies against ``rest_codec.decode_infer_request`` and ``parse_json_body``.

The only allowed outcomes are a decoded request or a declared :class:`ModelServeError` whose code is not
INTERNAL (a client's bytes never make a 500). A decoded request must also stay small: its tensors hold at
most a few bytes per byte of body, so a short body can never make the server allocate a large tensor.
Bounded (``max_examples``) so the file runs in seconds in ``make test``; no example database is written.
The bugs the fuzzing found are explicit ``@example`` tests at the end (each failed before its fix).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import ErrorCode, ModelServeError
from modelserve.protocol.rest_codec import DecodedRestRequest, RestLimits, decode_infer_request, parse_json_body

FUZZ = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
# Only the explicit examples: the tests at the end pin one input each, deterministically.
EXPLICIT_ONLY = settings(FUZZ, phases=[Phase.explicit])

LIMITS = RestLimits(max_tensor_bytes=1 << 16, max_json_depth=16, max_requested_outputs=4)
DATATYPE_NAMES = [dt.value for dt in Datatype]


def _decoded_bytes(array: np.ndarray) -> int:
    """What a decoded tensor holds: its buffer, plus the payloads of a BYTES (object) array."""
    if array.dtype == np.dtype(object):
        return array.nbytes + sum(len(item) for item in array.reshape(-1))
    return array.nbytes


def _decode(body: bytes, header_length: int | None, limits: RestLimits = LIMITS) -> DecodedRestRequest | None:
    """Decode; None for a declared refusal. Anything else (another exception type) fails the test."""
    try:
        decoded = decode_infer_request(body, header_length, "m", "1", limits)
    except ModelServeError as exc:
        assert exc.code is not ErrorCode.INTERNAL, exc
        assert exc.message
        return None
    # The cheap allocation guard: the smallest JSON element ("1,") is 2 bytes and becomes at most 8.
    total = sum(_decoded_bytes(array) for array in decoded.request.inputs.values())
    assert total <= 4 * len(body) + 64, (total, len(body))
    for name, array in decoded.request.inputs.items():
        assert name in decoded.request.input_datatypes
        assert all(type(d) is int and d >= 0 for d in array.shape)
    return decoded


def _json(document: Any) -> bytes:
    # allow_nan: writes NaN/Infinity literals, as tritonclient (python-rapidjson) does.
    return json.dumps(document, allow_nan=True).encode()


# --------------------------------------------------------------------------- strategies

# Dimensions a client could write: small ones, negative ones, ones past int32/int64, and non-integers.
# The strategies keep them <= 2**128; bigger ones are test_shape_with_giant_dimensions_is_refused's.
huge_ints = st.sampled_from([2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**128, -(2**63)])
dims = st.one_of(st.integers(-2, 4), st.integers(-(2**64), 2**128), huge_ints)
odd_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),  # NaN and +-Infinity included
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1", "", "FP32"]),
    st.text(max_size=4),
    huge_ints,
)
json_values = st.recursive(
    st.one_of(odd_scalars, st.integers()),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=12,
)
shapes = st.one_of(st.lists(dims, max_size=5), st.lists(st.integers(0, 2), min_size=30, max_size=34), json_values)
datatypes = st.one_of(
    st.sampled_from(DATATYPE_NAMES), st.sampled_from(["fp32", "FLOAT", "TYPE_FP32", "STRING", ""]), json_values
)
# Elements of every kind JSON can carry, including ones past every numeric type's range.
elements = st.one_of(
    st.integers(-3, 3),
    st.integers(-(2**65), 2**65),
    st.floats(),
    st.floats(width=16),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
    st.just([]),
    st.just({}),
)


def _nest(flat: list[Any], shape: list[int]) -> Any:
    """Row-major nesting of ``flat`` into ``shape`` (the nested JSON form clients may send)."""
    if not shape:
        return flat[0] if flat else flat
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _fitting_elements(datatype: Datatype) -> st.SearchStrategy[Any]:
    """JSON elements that a tensor of ``datatype`` accepts (so that some documents decode)."""
    if datatype is Datatype.BOOL:
        return st.booleans()
    if datatype is Datatype.BYTES:
        return st.text(max_size=3)
    if datatype in (Datatype.FP16, Datatype.FP32, Datatype.FP64):
        return st.floats(width=16)
    if datatype is Datatype.BF16:
        return st.integers(0, 1)  # refused anyway: BF16 cannot travel as JSON
    info = np.iinfo(datatype.numpy_dtype)  # type: ignore[type-var]
    return st.integers(int(info.min), int(info.max))


def _raw_blob(draw: st.DrawFn, datatype: str, shape: Any) -> bytes:
    """A blob that fits ``shape`` for a valid datatype and shape (BYTES length-prefixed), else random."""
    if isinstance(shape, list) and all(type(d) is int and 0 <= d <= 3 for d in shape) and draw(st.booleans()):
        known = Datatype(datatype)
        count = int(np.prod(shape)) if shape else 1
        if known is Datatype.BYTES:
            items = draw(st.lists(st.binary(max_size=4), min_size=count, max_size=count))
            return b"".join(len(item).to_bytes(4, "little") + item for item in items)
        if known is Datatype.BOOL:
            return bytes(draw(st.lists(st.integers(0, 1), min_size=count, max_size=count)))
        return draw(st.binary(min_size=count * known.itemsize, max_size=count * known.itemsize))
    return draw(st.binary(max_size=40))


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    """An input that often looks right (known datatype, data whose count matches a small shape), then is
    damaged: a field dropped or replaced, the data nested differently, parameters of odd types."""
    datatype = draw(st.sampled_from(DATATYPE_NAMES))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    count = int(np.prod(shape)) if shape else 1
    fitting = _fitting_elements(Datatype(datatype))
    flat = draw(st.lists(st.one_of(fitting, fitting, elements), min_size=count, max_size=count))
    tensor: dict[str, Any] = {"name": draw(st.text(min_size=1, max_size=3)), "datatype": datatype, "shape": shape}
    tensor["data"] = _nest(flat, shape) if draw(st.booleans()) else flat
    damage = draw(st.sampled_from(["none"] * 6 + ["shape", "datatype", "data", "drop", "parameters", "binary"]))
    if damage == "shape":
        tensor["shape"] = draw(shapes)
    elif damage == "datatype":
        tensor["datatype"] = draw(datatypes)
    elif damage == "data":
        tensor["data"] = draw(json_values)
    elif damage == "drop":
        del tensor[draw(st.sampled_from(sorted(tensor)))]
    elif damage == "parameters":
        tensor["parameters"] = draw(json_values)
    elif damage == "binary":
        tensor["parameters"] = {"binary_data_size": draw(st.one_of(dims, odd_scalars))}
        if draw(st.booleans()):
            del tensor["data"]
    return tensor


request_parameters = st.one_of(
    st.dictionaries(
        st.one_of(
            st.sampled_from(
                ["priority", "timeout", "binary_data_output", "sequence_id", "headers", "triton_x", "custom"]
            ),
            st.text(max_size=4),
        ),
        st.one_of(odd_scalars, st.integers(), json_values),
        max_size=4,
    ),
    json_values,
)
outputs = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {"name": st.one_of(st.text(max_size=3), json_values)},
            optional={"parameters": st.one_of(st.dictionaries(st.text(max_size=3), json_values), json_values)},
        ),
        max_size=6,
    ),
    json_values,
)
documents = st.one_of(
    # Mostly plain requests (whose inputs may still be damaged), so that many decode all the way.
    st.fixed_dictionaries({"inputs": st.lists(tensors(), max_size=3)}),
    st.fixed_dictionaries({"inputs": st.lists(tensors(), max_size=3)}),
    st.fixed_dictionaries(
        {"inputs": st.one_of(st.lists(tensors(), max_size=3), json_values)},
        optional={
            "id": st.one_of(st.text(max_size=3), json_values),
            "parameters": request_parameters,
            "outputs": outputs,
        },
    ),
    json_values,
)

# Pieces of JSON, valid and not, glued at random: exercises the parser's error paths and orjson's
# fallback to the standard library (NaN/Infinity).
json_tokens = st.sampled_from(
    ['{', '}', '[', ']', ',', ':', '"inputs"', '"name"', '"shape"', '"datatype"', '"data"', '"parameters"',
     '"binary_data_size"', '"FP32"', '"BYTES"', '"a"', '0', '-1', '1e400', '-0', '1.5', 'NaN', 'Infinity',
     '-Infinity', 'true', 'null', '99999999999999999999999', '"\\u0000"', '"\\ud83d\\ude00"', ' ', '\x00', '\xff']
)  # fmt: skip
json_texts = st.lists(json_tokens, max_size=40).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))


@st.composite
def binary_bodies(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """A JSON header declaring binary inputs, the blobs (of the right length or not), and a header length
    that is right, off by a little, zero, negative, past the end or absent."""
    inputs = []
    blobs = []
    for index in range(draw(st.integers(0, 3))):
        datatype = draw(st.sampled_from(DATATYPE_NAMES))
        shape = draw(
            st.one_of(st.lists(st.integers(0, 3), max_size=3), st.lists(st.integers(0, 3), max_size=3), shapes)
        )
        blob = _raw_blob(draw, datatype, shape)
        size = draw(st.one_of(st.just(len(blob)), st.just(len(blob)), st.just(len(blob)), dims, odd_scalars))
        inputs.append(
            {"name": f"i{index}", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}
        )
        blobs.append(blob)
    header = _json({"inputs": inputs, "parameters": {"binary_data_output": draw(st.booleans())}})
    body = header + b"".join(blobs) + draw(st.one_of(st.just(b""), st.binary(max_size=4)))
    header_length = draw(
        st.one_of(
            st.just(len(header)),
            st.just(len(header)),
            st.integers(-3, 3).map(lambda delta: len(header) + delta),
            st.integers(-len(body) - 2, len(body) + 2),
            st.sampled_from([0, -1, 2**63, -(2**63)]),
            st.none(),
        )
    )
    return body, header_length


# --------------------------------------------------------------------------- properties


@FUZZ
@given(st.binary(max_size=300), st.one_of(st.none(), st.integers(-4, 310)))
@example(b"", None)
@example(b"", 0)
@example(b"{}", 3)
@example(b"\xff\xfe{", None)
@example(b'{"inputs": []}', -1)
@example(b"[" * 10_000, None)
def test_arbitrary_bytes_decode_or_refuse(body: bytes, header_length: int | None) -> None:
    _decode(body, header_length)


@FUZZ
@given(st.binary(max_size=300))
@example(b"[" * 10_000 + b"]" * 10_000)
@example(b'{"a": NaN, "b": -Infinity}')
@example(b"9" * 5000)
def test_parse_json_body_returns_or_refuses(body: bytes) -> None:
    try:
        parse_json_body(body)
    except ModelServeError as exc:
        assert exc.code is ErrorCode.INVALID_ARGUMENT


@FUZZ
@given(json_texts)
def test_json_fragments_decode_or_refuse(body: bytes) -> None:
    _decode(body, None)


@FUZZ
@given(documents)
@example({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [[[[1.0]]]]}]})
@example({"inputs": [{"name": "a", "datatype": "INT32", "shape": [2**32, 2**32], "data": []}]})  # product > int64
@example({"inputs": [{"name": "a", "datatype": "INT8", "shape": [0, 2**63, 2**63], "data": []}]})
@example({"inputs": [{"name": "a", "datatype": "INT8", "shape": [-1], "data": []}]})
@example({"inputs": [{"name": "a", "datatype": "INT8", "shape": [1] * 33, "data": [1]}]})
@example({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [float("nan")]}]})
@example({"inputs": [{"name": "a", "datatype": "INT64", "shape": [1], "data": [float("inf")]}]})
@example({"inputs": [{"name": "a", "datatype": "UINT64", "shape": [2], "data": [2**64, -1]}]})
@example({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [10**400]}]})
@example({"inputs": [{"name": "a", "datatype": "BF16", "shape": [1], "data": [1]}]})
@example({"inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "data": [1]}]})
@example({"inputs": [{"name": "a", "datatype": "BOOL", "shape": [2], "data": [1, 0]}]})
@example({"inputs": [{"name": "a", "datatype": "INT32", "shape": [2], "data": [[1], 2]}]})
@example({"inputs": [{"name": "a", "datatype": "INT32", "shape": [], "data": 7}]})
@example({"inputs": [{"name": "a", "datatype": "INT32", "shape": [1], "data": [1]}] * 2})
@example({"inputs": [], "parameters": {"priority": -1, "timeout": 1.5, "binary_data_output": "yes"}})
@example({"inputs": [], "parameters": {"triton_internal": 1}})
@example({"inputs": [], "parameters": {str(i): i for i in range(300)}})
@example({"inputs": [], "outputs": [{"name": "o", "parameters": {"binary_data": [1]}}]})
@example({"inputs": [], "outputs": [{"name": str(i)} for i in range(10)]})
@example({"inputs": [], "id": 7})
def test_structured_documents_decode_or_refuse(document: Any) -> None:
    _decode(_json(document), None)


def test_data_nested_10000_deep_is_refused() -> None:
    body = (
        b'{"inputs":[{"name":"a","shape":[1],"datatype":"INT32","data":' + b"[" * 10_000 + b"1" + b"]" * 10_000 + b"}]}"
    )
    assert _decode(body, None) is None


def test_data_nested_past_max_json_depth_is_refused() -> None:
    # 17 levels: under orjson's own limit (1024), over the server's (max_json_depth=16).
    body = _json({"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": _deep([1], 17)}]})
    assert _decode(body, None) is None


def _deep(value: Any, depth: int) -> Any:
    for _ in range(depth - 1):
        value = [value]
    return value


@FUZZ
@given(binary_bodies())
@example(
    (b'{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}' + b"\0" * 3, 91)
)
@example((b'{"inputs":[{"name":"a","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":9}}]}'
          + b"\1\0\0\0x\2\0\0\0y", 93))  # fmt: skip
@example((b'{"inputs":[{"name":"a","datatype":"BOOL","shape":[1],"parameters":{"binary_data_size":1}}]}\x02', 91))
@example((b'{"inputs":[{"name":"a","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":1}}]}\x01', 0))
@example((b'{"inputs":[{"name":"a","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":1}}]}\x01', 2**40))
@example((b'{"inputs":[{"name":"a","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":-1}}]}\x01', 91))
@example(
    (b'{"inputs":[{"name":"a","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":1},"data":[1]}]}\x01', 100)
)
def test_binary_bodies_decode_or_refuse(case: tuple[bytes, int | None]) -> None:
    body, header_length = case
    decoded = _decode(body, header_length)
    if decoded is not None and header_length is not None and header_length > 0:
        # Every byte after the header belongs to exactly one declared blob.
        raw = sum(
            _decoded_bytes(a) if a.dtype != np.dtype(object) else sum(4 + len(x) for x in a.reshape(-1))
            for a in decoded.request.inputs.values()
        )
        assert raw == len(body) - header_length


# --------------------------------------------------------------------------- bugs found by fuzzing, fixed


@EXPLICIT_ONLY
@given(st.just(b""))
@example(b'{"inputs":[{"name":"a","shape":[1],"datatype":"BYTES","data":["\\ud800"]}]}')
def test_bytes_element_with_lone_surrogate_is_refused(body: bytes) -> None:
    # orjson refuses the lone surrogate, the standard-library fallback (there for NaN) accepts it, and
    # str.encode("utf-8") then raises.
    _decode(body, None)


GIANT = b"9" * 4000  # each one under the 4300-digit limit, so the JSON parses; their product is over it


@EXPLICIT_ONLY
@given(st.just(b""))
@example(b'{"inputs":[{"name":"a","shape":[' + GIANT + b"," + GIANT + b'],"datatype":"INT8","data":[1]}]}')
def test_shape_with_giant_dimensions_is_refused(body: bytes) -> None:
    # orjson refuses the 4000-digit numbers, the standard-library fallback reads them as Python ints, and
    # the over-the-limit message formats their product, past sys.get_int_max_str_digits().
    _decode(body, None)


@EXPLICIT_ONLY
@given(st.just(b""))
@example(b'{"inputs":[{"name":"a","shape":[0,' + GIANT + b"," + GIANT + b'],"datatype":"INT8","data":[]}]}')
def test_zero_sized_shape_with_giant_dimensions_is_refused(body: bytes) -> None:
    _decode(body, None)


@EXPLICIT_ONLY
@given(st.just(b""))
@example(b'{"inputs":[{"name":"a","shape":[1],"datatype":"FP16","data":[1e10]}]}')
def test_json_float_past_range_decodes_without_warning(body: bytes) -> None:
    # Decoding to inf or refusing are both fine; a warning per request (an exception under -W error) is not.
    _decode(body, None)
