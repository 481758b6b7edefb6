"""Bounded cost per request (issue 11): a malformed or mistyped request is refused after work proportional
to what shows the error, not to its size. No wall-clock asserts: the work is shown bounded by what is
observable (allocations traced by tracemalloc, which data was left unparsed)."""

from __future__ import annotations

import contextlib
import json
import re
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from modelserve.core.bytes_tensor import deserialize_bytes_tensor, serialize_bytes_tensor
from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError, ValidationError
from modelserve.core.signature import ModelSignature, TensorSpec
from modelserve.protocol import grpc_codec, rest_codec
from modelserve.protocol.parameters import MAX_PARAMETER_CHARS, MAX_PARAMETERS, parse_request_parameters
from modelserve.protocol.rest_codec import (
    RestLimits,
    decode_infer_request,
    decode_infer_tensors,
    parse_infer_header,
    parse_json_body,
)
from modelserve.service.validation import check_declared_inputs

LIMITS = RestLimits(max_tensor_bytes=1 << 28, max_json_depth=64, max_requested_outputs=16, max_inputs=8)
MIB = 1024 * 1024


def _peak_bytes(call: Callable[[], Any]) -> int:
    """Peak bytes traced while ``call`` runs (it may raise)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(DecodeError, ValidationError):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _signature(datatype: Datatype = Datatype.FP32) -> ModelSignature:
    return ModelSignature(
        name="m",
        platform="python",
        max_batch_size=0,
        inputs=(TensorSpec("x", datatype, (-1,)),),
        outputs=(TensorSpec("y", Datatype.FP32, (-1,)),),
    )


def _int8_json_body(count: int) -> bytes:
    return b'{"inputs":[{"name":"x","datatype":"INT8","shape":[%d],"data":[' % count + b"0," * (count - 1) + b"0]}]}"


# --------------------------------------------------------------------------- caps before allocation


def test_too_many_inputs_is_refused_naming_the_setting() -> None:
    body = json.dumps(
        {"inputs": [{"name": f"i{n}", "datatype": "FP32", "shape": [1], "data": [1.0]} for n in range(9)]}
    ).encode()
    with pytest.raises(DecodeError, match=r"has 9 inputs; at most 8 are allowed \(limits\.max_inputs\)"):
        parse_infer_header(body, None, "m", "1", LIMITS)
    message = pb.ModelInferRequest(model_name="m")
    for n in range(9):
        message.inputs.add(name=f"i{n}", datatype="FP32", shape=[1])
        message.raw_input_contents.append(b"\0" * 4)
    with pytest.raises(DecodeError, match=r"has 9 inputs; at most 8 are allowed \(limits\.max_inputs\)"):
        grpc_codec.parse_infer_header(message, 1 << 20, 16, max_inputs=8)


@pytest.mark.parametrize("split_min", [0, 1 << 40])
def test_the_inputs_cap_is_checked_before_any_tensor_is_decoded(
    split_min: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rest_codec, "_SPLIT_MIN_BYTES", split_min)  # 0: more data arrays than max_inputs to cut
    # The first input's data is malformed; the count is what is reported.
    inputs = [{"name": "a", "datatype": "FP32", "shape": [2], "data": ["bad"]}]
    inputs += [{"name": f"i{n}", "datatype": "FP32", "shape": [1], "data": [1.0]} for n in range(8)]
    with pytest.raises(DecodeError, match=r"limits\.max_inputs"):
        decode_infer_request(json.dumps({"inputs": inputs}).encode(), None, "m", "1", LIMITS)


def test_parameter_names_and_strings_are_capped() -> None:
    with pytest.raises(DecodeError, match="256 are allowed"):
        parse_request_parameters({"k" * 300: 1})
    with pytest.raises(DecodeError, match=f"more than {MAX_PARAMETER_CHARS} characters"):
        parse_request_parameters({"a": "x" * (MAX_PARAMETER_CHARS // 2), "b": "x" * (MAX_PARAMETER_CHARS // 2 + 1)})
    assert parse_request_parameters({"a": "x" * 1000}).custom == {"a": "x" * 1000}


def test_output_parameters_are_capped_on_both_codecs() -> None:
    many = {f"p{n}": 1 for n in range(MAX_PARAMETERS + 1)}
    body = json.dumps(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}],
            "outputs": [{"name": "y", "parameters": many}],
        }
    ).encode()
    with pytest.raises(DecodeError, match=f"output 'y' has {MAX_PARAMETERS + 1} parameters"):
        parse_infer_header(body, None, "m", "1", LIMITS)
    message = pb.ModelInferRequest(model_name="m")
    output = message.outputs.add(name="y")
    for key in many:
        output.parameters[key].int64_param = 1
    with pytest.raises(DecodeError, match=f"output 'y' has {MAX_PARAMETERS + 1} parameters"):
        grpc_codec.parse_infer_header(message, 1 << 20, 16)


# --------------------------------------------------------------------------- datatype before decoding


def test_a_mistyped_large_json_body_is_refused_from_its_header() -> None:
    body = _int8_json_body(4 * MIB)  # 8 MiB of "0,"

    def check() -> None:
        header = parse_infer_header(body, None, "m", "1", LIMITS)
        check_declared_inputs(header.declared, _signature())

    with pytest.raises(
        ValidationError, match=r"^inference input 'x' data-type is 'INT8', but model 'm' expects 'FP32'"
    ):
        check()
    # The data array is neither parsed nor converted: far less than the body is allocated (a parse would
    # allocate a list of 8 bytes per element, 4x the body).
    assert _peak_bytes(check) < len(body) // 8
    header = parse_infer_header(body, None, "m", "1", LIMITS)
    assert header.inputs[0].data_span is not None


def test_the_same_large_body_for_the_right_datatype_decodes() -> None:
    count = 100_000
    body = _int8_json_body(count)
    header = parse_infer_header(body, None, "m", "1", LIMITS)
    check_declared_inputs(header.declared, _signature(Datatype.INT8))
    array = decode_infer_tensors(header, LIMITS).request.inputs["x"]
    assert array.dtype == np.int8 and array.shape == (count,) and not array.any()


def test_grpc_metadata_is_checked_without_touching_the_contents() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="INT8", shape=[1 << 20])
    message.raw_input_contents.append(b"\0" * 10)  # the wrong size: only decoding would notice
    header = grpc_codec.parse_infer_header(message, 1 << 28, 16)
    assert header.declared == {"x": (Datatype.INT8, (1 << 20,))}
    with pytest.raises(ValidationError, match="data-type is 'INT8', but model 'm' expects 'FP32'"):
        check_declared_inputs(header.declared, _signature())
    with pytest.raises(DecodeError, match="binary data is 10 bytes"):
        grpc_codec.decode_infer_tensors(header)


# Bodies whose numeric 'data' arrays are cut out by byte search when the header is large: each must decode
# exactly as when the header is parsed whole (or fail the same way).
TRICKY = [
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]},
    {"inputs": [{"data": [1.5, -2e3], "name": "x", "shape": [2], "datatype": "FP64"}]},
    {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2], "data": ["a]", "}b"]}]},
    {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}]},
    {"inputs": [{"name": "x", "datatype": "INT32", "shape": [3], "data": [[1], 2, [3]]}]},
    {
        "inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [7]}],
        "parameters": {'k"data': "[1]", "data": 3},
        "outputs": [{"name": "y", "parameters": {"data": 1}}],
    },
    {
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [1], "data": [1]},
            {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ]
    },
]


@pytest.mark.parametrize("document", TRICKY)
@pytest.mark.parametrize("spacing", [None, (",", ":"), (", ", " : ")])
def test_cutting_out_data_arrays_decodes_as_a_whole_parse(
    document: dict[str, Any], spacing: tuple[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps(document, separators=spacing).encode()

    def decode(split_min: int) -> Any:
        monkeypatch.setattr(rest_codec, "_SPLIT_MIN_BYTES", split_min)
        monkeypatch.setattr(rest_codec, "MIN_SPAN_BYTES", split_min)  # 0: cut-out arrays decoded from bytes
        try:
            decoded = decode_infer_request(body, None, "m", "1", LIMITS)
        except DecodeError as exc:
            return type(exc)
        return {k: (v.dtype, v.tolist()) for k, v in decoded.request.inputs.items()}, decoded.request.parameters

    assert decode(0) == decode(1 << 40)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"data":[1,,2]}]}',
        b'{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"data":[1, 2], [3]}]}',
        b'{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"data":[1, 2}]}',
    ],
)
def test_malformed_data_arrays_are_refused_either_way(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest_codec, "_SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(rest_codec, "MIN_SPAN_BYTES", 0)
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_infer_request(body, None, "m", "1", LIMITS)


@pytest.mark.parametrize("span_min", [0, 1 << 40])
def test_nan_in_a_cut_out_array_is_read(span_min: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest_codec, "_SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(rest_codec, "MIN_SPAN_BYTES", span_min)
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[NaN, Infinity]}]}'
    array = decode_infer_request(body, None, "m", "1", LIMITS).request.inputs["x"]
    assert np.isnan(array[0]) and np.isinf(array[1])


# --------------------------------------------------------------------------- BYTES length prefixes


def _one_byte_elements(count: int) -> bytearray:
    return bytearray(b"\x01\x00\x00\x00x" * count)


def test_a_bytes_tensor_whose_last_prefix_overruns_is_refused_before_building_elements() -> None:
    count = 2_000_000  # ~10 MB
    buffer = _one_byte_elements(count)
    buffer[-5:-1] = struct.pack("<I", 2)
    data = bytes(buffer)
    with pytest.raises(DecodeError, match=f"BYTES element {count - 1} declares 2 bytes but only 1 remain"):
        deserialize_bytes_tensor(data, count, what="input 'x'")
    # No object array (8 bytes an element) and no element (~34 bytes each): only numpy's chunked compare.
    assert _peak_bytes(lambda: deserialize_bytes_tensor(data, count, what="input 'x'")) < len(data) // 4


@pytest.mark.parametrize(
    "lengths",
    [
        [1] * 300 + [0] + [1] * 5000 + [3],
        [0, 1] * 700,
        [2] * 255 + [5] + [2] * 256 + [7] * 2000,
        [0] * 3000,
        [],
    ],
)
def test_bulk_checked_runs_decode_exactly(lengths: list[int]) -> None:
    items = [bytes([n % 251]) * n for n in lengths]
    array = np.empty(len(items), dtype=object)
    array[:] = items
    wire = serialize_bytes_tensor(array)
    assert list(deserialize_bytes_tensor(wire, len(items), what="x")) == items
    if items:
        with pytest.raises(DecodeError, match="left over"):
            deserialize_bytes_tensor(wire + b"\0", len(items), what="x")
        with pytest.raises(DecodeError, match=f"element {len(items) - 1} declares|ends after|cannot hold"):
            deserialize_bytes_tensor(wire[:-1], len(items), what="x")
        with pytest.raises(DecodeError, match=f"ends after {len(items)} of {len(items) + 1}|cannot hold"):
            deserialize_bytes_tensor(wire + b"\0\0", len(items) + 1, what="x")


# --------------------------------------------------------------------------- counts before parsing

DEFAULTS = RestLimits(max_tensor_bytes=1 << 28, max_json_depth=64, max_requested_outputs=1024, max_inputs=1024)


class _ParseSpy:
    """Counts orjson.loads calls on bodies of at least ``min_bytes`` (a parse of the header)."""

    def __init__(self, min_bytes: int) -> None:
        self.min_bytes = min_bytes
        self.calls = 0
        self._loads = rest_codec.orjson.loads

    def __call__(self, data: Any) -> Any:
        if len(data) >= self.min_bytes:
            self.calls += 1
        return self._loads(data)


def _refused_unparsed(body: bytes, monkeypatch: pytest.MonkeyPatch, match: str) -> None:
    """``body`` is refused with ``match``, with no parse of it and far less memory than its size."""
    spy = _ParseSpy(len(body) // 2)
    monkeypatch.setattr(rest_codec.orjson, "loads", spy)
    with pytest.raises(DecodeError, match=match):
        parse_infer_header(body, None, "m", "1", DEFAULTS)
    assert spy.calls == 0
    # A parse allocates ~12x the body (dicts, lists, strings); the counting copies a 256 KiB window or two.
    assert _peak_bytes(lambda: parse_infer_header(body, None, "m", "1", DEFAULTS)) < len(body) // 8


def test_a_million_inputs_are_refused_before_the_header_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    one = b'{"name":"i%07d","datatype":"FP32","shape":[1],"data":[1.0]},'
    body = b'{"inputs":[' + b"".join(one % n for n in range(1_000_000))[:-1] + b"]}"
    _refused_unparsed(
        body,
        monkeypatch,
        r'the request has more inputs and outputs than allowed: its header holds 1000000 "name" keys, more than '
        r"the 4098 that 1024 inputs \(limits\.max_inputs\) and 1024 outputs \(limits\.max_requested_outputs\) "
        r"can hold; send at most 1024 inputs and 1024 outputs per request",
    )


def test_a_million_requested_outputs_are_refused_before_the_header_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one = b'{"name":"o%07d","parameters":{"binary_data":true}},'
    outputs = b"".join(one % n for n in range(1_000_000))[:-1]
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}],"outputs":[' + outputs + b"]}"
    _refused_unparsed(
        body, monkeypatch, r'holds 1000001 "name" keys, more than the 4098 .*limits\.max_requested_outputs'
    )


@pytest.mark.parametrize("where", ["request", "input", "output"])
def test_a_million_parameters_are_refused_before_the_header_is_parsed(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = b"{" + b",".join(b'"p%07d":1' % n for n in range(1_000_000)) + b"}"
    tensor = b'{"name":"x","datatype":"FP32","shape":[1],"data":[1]'
    if where == "request":
        body = b'{"parameters":' + params + b',"inputs":[' + tensor + b"}]}"
    elif where == "input":
        body = b'{"inputs":[' + tensor + b',"parameters":' + params + b"}]}"
    else:
        body = b'{"inputs":[' + tensor + b'}],"outputs":[{"name":"y","parameters":' + params + b"}]}"
    _refused_unparsed(
        body, monkeypatch, r"the request header holds 100000\d keys, more than the 540936 that 1024 inputs"
    )


def test_input_parameters_are_capped_like_the_others() -> None:
    many = {f"p{n}": 1 for n in range(MAX_PARAMETERS + 1)}
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0], "parameters": many}]})
    with pytest.raises(DecodeError, match=f"input 'x' has {MAX_PARAMETERS + 1} parameters; at most 256"):
        parse_infer_header(body.encode(), None, "m", "1", LIMITS)


# Names and keys that look like what the counts search for: quotes, backslashes, colons, "name" itself.
_TRICKY_TEXT = st.text(
    alphabet=st.sampled_from(['"', "\\", ":", "n", "a", "m", "e", " ", "w", "_", "é", "{"]), max_size=8
)
_NAMES = st.one_of(_TRICKY_TEXT, st.sampled_from(["name", 'a"name', '\\"name', "x", 'name":', 'w":']))
_SCALARS = st.one_of(st.booleans(), st.integers(-5, 5), _NAMES)
_PARAMS = st.dictionaries(st.one_of(_NAMES, st.just("name")), _SCALARS, max_size=6)


@st.composite
def _requests_within_caps(draw: st.DrawFn, limits: RestLimits) -> bytes:
    """A valid request within ``limits`` (each parameters object within MAX_PARAMETERS), written with
    random spacing, escaping and key order."""
    names = draw(st.lists(_NAMES.filter(bool), min_size=1, max_size=limits.max_inputs, unique=True))
    inputs = [
        {"name": name, "datatype": "BYTES", "shape": [1], "data": [draw(_NAMES)], "parameters": draw(_PARAMS)}
        for name in names
    ]
    document: dict[str, Any] = {"id": draw(_NAMES), "parameters": draw(_PARAMS), "inputs": inputs}
    outputs = draw(st.lists(_NAMES.filter(bool), max_size=limits.max_requested_outputs, unique=True))
    if outputs:
        document["outputs"] = [{"name": name, "parameters": draw(_PARAMS)} for name in outputs]
    for inner in [document, *inputs]:
        if draw(st.booleans()):
            inner.update(reversed(list(inner.items())))
    spacing = draw(st.sampled_from([None, (",", ":"), (" , ", " : "), (",\n", ":\t")]))
    return json.dumps(document, separators=spacing, ensure_ascii=draw(st.booleans())).encode()


@pytest.fixture
def count_every_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest_codec, "_COUNT_MIN_BYTES", 0)  # the counts apply to headers of 4 MiB and more
    # The key bound as tight as the generated requests can reach (5 keys in an input, 6 parameters an object),
    # so a count that found one key too many would refuse some of them.
    monkeypatch.setattr(rest_codec, "_KEYS_PER_OBJECT", 5)
    monkeypatch.setattr(rest_codec, "MAX_PARAMETERS", 6)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), max_inputs=st.integers(1, 4), max_outputs=st.integers(1, 4))
@pytest.mark.usefixtures("count_every_header")
def test_the_key_counts_never_refuse_a_request_within_the_caps(
    data: st.DataObject, max_inputs: int, max_outputs: int
) -> None:
    limits = RestLimits(
        max_tensor_bytes=1 << 20, max_json_depth=8, max_requested_outputs=max_outputs, max_inputs=max_inputs
    )
    body = data.draw(_requests_within_caps(limits))
    header = parse_infer_header(body, None, "m", "1", limits)  # raises if the counts refused it
    assert len(header.inputs) == len(json.loads(body)["inputs"])


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.integers(1, 200), spacing=st.sampled_from([(",", ":"), (", ", ": ")]))
@pytest.mark.usefixtures("count_every_header")
def test_the_key_counts_refuse_more_inputs_than_the_bound(extra: int, spacing: tuple[str, str]) -> None:
    bound = 2 * (LIMITS.max_inputs + LIMITS.max_requested_outputs) + 2
    inputs = [{"name": f"i{n}", "datatype": "FP32", "shape": [1], "data": [1]} for n in range(bound + extra)]
    body = json.dumps({"inputs": inputs}, separators=spacing).encode()
    with pytest.raises(DecodeError, match=rf'holds {bound + extra} "name" keys, more than the {bound}'):
        parse_infer_header(body, None, "m", "1", LIMITS)


def test_strings_full_of_what_the_counts_look_for_are_not_counted() -> None:
    # 600,000 strings written with '"name":', 'w":' and '":' inside (escaped quotes): more of each than the
    # bounds, in a header over 4 MiB, and none of them a key.
    values = ['"name": 1', 'w": 2', '": 3'] * 200_000
    body = json.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [len(values)], "data": values}]})
    assert len(body) > 4 * MIB and body.count('":') > 540_936
    header = parse_infer_header(body.encode(), None, "m", "1", DEFAULTS)
    assert header.declared == {"x": (Datatype.BYTES, (len(values),))}


# --------------------------------------------------------------------------- large numeric JSON


def _fp32_rows_body(rows: int, tail: bytes = b"") -> bytes:
    data = b",".join([b"[5.1, 3.5, 1.4, 0.2]"] * rows) + tail
    return b'{"inputs":[{"name":"x","datatype":"FP32","shape":[%d,4],"data":[' % rows + data + b"]}]}"


def test_a_large_numeric_body_decodes_without_a_list_of_its_elements() -> None:
    rows = 400_000  # 8.4 MB of JSON, 6.4 MB of FP32
    body = _fp32_rows_body(rows)

    def decode() -> np.ndarray:
        return decode_infer_request(body, None, "m", "1", LIMITS).request.inputs["x"]

    array = decode()
    assert array.shape == (rows, 4) and array.dtype == np.float32 and float(array[-1, 3]) == pytest.approx(0.2)
    # Parsed whole, it is 1.6 M Python floats and 400 k lists: ~10x the body.
    assert _peak_bytes(decode) < 2 * len(body)


def test_a_typo_at_the_end_of_a_large_numeric_body_costs_no_parse_of_the_rest() -> None:
    body = _fp32_rows_body(400_000, tail=b",")
    comma = body.index(b",]}]}") - (body.index(b'"data":[') + len(b'"data":'))  # its byte in the array
    message = f"input 'x' 'data' is not valid JSON (trailing comma is not allowed at byte {comma})"
    with pytest.raises(DecodeError, match=re.escape(message)):
        decode_infer_request(body, None, "m", "1", LIMITS)
    # orjson on the whole array would build its 1.6 M floats before it met the comma (+5.5x).
    assert _peak_bytes(lambda: decode_infer_request(body, None, "m", "1", LIMITS)) < 2 * len(body)


def _parse_as_before(body: bytes) -> Any:
    """parse_json_body as it was: json.loads after every orjson refusal."""
    try:
        return ("ok", orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        try:
            document = json.loads(body)
            json.dumps(document, ensure_ascii=False).encode("utf-8")
            return ("ok", document)
        except UnicodeEncodeError:
            return ("surrogate",)
        except (ValueError, RecursionError):
            return ("invalid", exc.msg, exc.pos)


def _parse_now(body: bytes) -> Any:
    try:
        return ("ok", parse_json_body(body))
    except DecodeError as exc:
        if "lone surrogate" in exc.message:
            return ("surrogate",)
        found = re.search(r"not valid JSON \((.*) at byte (\d+)\)", exc.message)
        assert found is not None, exc.message
        return ("invalid", found[1], int(found[2]))


@pytest.mark.parametrize(
    "body",
    [
        b"[NaN, 1]",
        b"[Infinity]",
        b"[-Infinity, 1,]",
        b"[1e400]",
        b'["\\ud800"]',
        b'["\xed\xa0\x80"]',
        b"\xef\xbb\xbf[1]",
        '[1, "é"]'.encode("utf-16"),
        '[1, "é"]'.encode("utf-16-le"),
        '{"a": 1}'.encode("utf-32"),
        b"[1,]",
        b"[1 2]",
        b"{'a': 1}",
        b"[" * 1100 + b"]" * 1100,
        b"[\x0c1]",
        b"",
    ],
)
def test_json_is_retried_only_where_the_standard_library_could_read_it(body: bytes) -> None:
    assert _parse_now(body) == _parse_as_before(body)


@settings(max_examples=500, deadline=None, database=None)
@given(
    body=st.binary(max_size=24)
    | st.text(alphabet='[]{}",:0123456789.eE-+ aNInfity\\ud8\x00', max_size=24).map(str.encode)
)
def test_json_retries_change_no_outcome(body: bytes) -> None:
    assert _parse_now(body) == _parse_as_before(body)
