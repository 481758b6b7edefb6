"""Bounded cost per request (issue 11): a malformed or mistyped request is refused after work proportional
to what shows the error, not to its size. No wall-clock asserts: the work is shown bounded by what is
observable (allocations traced by tracemalloc, which data was left unparsed)."""

from __future__ import annotations

import contextlib
import json
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from modelserve.core.bytes_tensor import deserialize_bytes_tensor, serialize_bytes_tensor
from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError, ValidationError
from modelserve.core.signature import ModelSignature, TensorSpec
from modelserve.protocol import grpc_codec, rest_codec
from modelserve.protocol.parameters import MAX_PARAMETER_CHARS, MAX_PARAMETERS, parse_request_parameters
from modelserve.protocol.rest_codec import RestLimits, decode_infer_request, decode_infer_tensors, parse_infer_header
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

    with pytest.raises(ValidationError, match="input 'x' of model 'm' has datatype INT8 but the model expects FP32"):
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
    with pytest.raises(ValidationError, match="has datatype INT8 but the model expects FP32"):
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
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_infer_request(body, None, "m", "1", LIMITS)


def test_nan_in_a_cut_out_array_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest_codec, "_SPLIT_MIN_BYTES", 0)
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
