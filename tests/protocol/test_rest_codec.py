"""Property tests: the REST codec against what tritonclient.http really writes and reads.

Requests are built by ``tritonclient.http.InferenceServerClient.generate_request_body`` (JSON and binary
tensor extension) and decoded by ours; responses are encoded by ours and read back with
``tritonclient.http.InferResult.from_response_body(...).as_numpy``. No server runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import tracemalloc
from typing import Any

import numpy as np
import pytest
import rapidjson
import tritonclient.http as httpclient
from hypothesis import given
from hypothesis import strategies as st

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError, EncodeError, ErrorCode
from modelserve.core.inference import InferRequest, InferResult, RequestedOutput
from modelserve.protocol.rest_codec import RestLimits, decode_infer_request, encode_infer_response
from modelserve.protocol.tensor_codec import checked_shape, tensor_from_json
from tests.protocol.tensor_strategies import (
    ALL_DATATYPES,
    FLOATS,
    PER_DATATYPE_SETTINGS,
    PROPERTY_SETTINGS,
    arrays,
    assert_bit_exact,
    assert_same_parameters,
    assert_same_values,
    client_array,
    custom_parameters,
    names,
    object_array,
    shapes,
)

LIMITS = RestLimits(max_tensor_bytes=1 << 20, max_json_depth=64, max_requested_outputs=16)
JSON_DATATYPES = [dt for dt in ALL_DATATYPES if dt is not Datatype.BF16]


def _decode(body: bytes, header_length: int | None, limits: RestLimits = LIMITS) -> Any:
    return decode_infer_request(body, header_length, "m", "1", limits)


# --------------------------------------------------------------------------- requests


@st.composite
def input_specs(
    draw: st.DrawFn, first: Datatype | None = None, *, all_binary: bool = False
) -> list[tuple[str, Datatype, np.ndarray, bool]]:
    """1-3 inputs (the first of datatype ``first`` when given), each binary or JSON (BF16 binary only;
    JSON BYTES must be UTF-8, as tritonclient requires)."""
    specs = []
    for index, name in enumerate(draw(st.lists(names, min_size=1, max_size=3, unique=True))):
        binary = all_binary or first is Datatype.BF16 or draw(st.booleans())
        if index == 0 and first is not None:
            datatype = first
        else:
            datatype = draw(st.sampled_from(ALL_DATATYPES if binary else JSON_DATATYPES))
        specs.append((name, datatype, draw(arrays(datatype, utf8=not binary)), binary))
    return specs


def _client_inputs(specs: list[tuple[str, Datatype, np.ndarray, bool]]) -> list[httpclient.InferInput]:
    tensors = []
    for name, datatype, array, binary in specs:
        tensor = httpclient.InferInput(name, list(array.shape), datatype.value)
        tensor.set_data_from_numpy(client_array(array, datatype), binary_data=binary)
        tensors.append(tensor)
    return tensors


requested_outputs = st.none() | st.lists(
    st.tuples(names, st.booleans(), st.integers(0, 5)), min_size=1, max_size=3, unique_by=lambda o: o[0]
)


@pytest.mark.parametrize("datatype", ALL_DATATYPES)
@PER_DATATYPE_SETTINGS
@given(
    data=st.data(),
    outputs=requested_outputs,
    request_id=st.text(max_size=8),
    priority=st.integers(0, 2**32),
    timeout=st.none() | st.integers(0, 2**40),
    parameters=custom_parameters,
    header_when_json_only=st.booleans(),
)
def test_tritonclient_request_round_trips(
    datatype: Datatype,
    data: st.DataObject,
    outputs: list[tuple[str, bool, int]] | None,
    request_id: str,
    priority: int,
    timeout: int | None,
    parameters: dict[str, Any],
    header_when_json_only: bool,
) -> None:
    specs = data.draw(input_specs(datatype), label="inputs")
    client_outputs = (
        None
        if outputs is None
        else [httpclient.InferRequestedOutput(n, binary_data=b, class_count=c) for n, b, c in outputs]
    )
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        _client_inputs(specs),
        outputs=client_outputs,
        request_id=request_id,
        priority=priority,
        timeout=timeout,
        parameters=parameters,
    )
    if json_size is None and header_when_json_only:
        json_size = len(body)  # the C++ client always sends Inference-Header-Content-Length
    decoded = _decode(body, json_size)
    request = decoded.request

    assert list(request.inputs) == [name for name, *_ in specs]
    for name, kind, array, binary in specs:
        assert request.input_datatypes[name] is kind
        if binary:
            assert_bit_exact(request.inputs[name], array, kind)
        else:
            assert_same_values(request.inputs[name], array, kind)
    assert request.id == (request_id or None)
    if outputs is None:
        assert request.requested_outputs is None
        assert decoded.binary_data_output is True  # tritonclient asks for binary when it names no outputs
    else:
        assert request.requested_outputs == tuple(
            RequestedOutput(n, {"binary_data": b, **({"classification": c} if c else {})}) for n, b, c in outputs
        )
        for got, (_, binary, _) in zip(request.requested_outputs, outputs, strict=True):
            assert type(got.parameters["binary_data"]) is bool and got.parameters["binary_data"] is binary
        assert decoded.binary_data_output is False
    assert_same_parameters(request.parameters, parameters)
    assert request.priority == priority
    assert request.timeout_us == (timeout or 0)


@PROPERTY_SETTINGS
@given(specs=input_specs(all_binary=True), data=st.data())
def test_truncated_or_padded_binary_body_is_refused(
    specs: list[tuple[str, Datatype, np.ndarray, bool]], data: st.DataObject
) -> None:
    body, json_size = httpclient.InferenceServerClient.generate_request_body(_client_inputs(specs))
    assert json_size is not None
    cut = data.draw(st.integers(0, len(body) - 1), label="cut")
    with pytest.raises(DecodeError):
        _decode(body[:cut], json_size)
    extra = data.draw(st.binary(min_size=1, max_size=8), label="extra")
    with pytest.raises(DecodeError):
        _decode(body + extra, json_size)


# --------------------------------------------------------------------------- responses


@st.composite
def response_cases(draw: st.DrawFn, first: Datatype) -> tuple[InferResult, InferRequest, bool, list[bool]]:
    """Outputs of every datatype, each JSON or binary (per-output ``binary_data`` or the request default),
    some Fortran-ordered (non-contiguous) and some BYTES holding ``str`` as models return them."""
    default_binary = draw(st.booleans())
    name_outputs = draw(st.booleans())
    outputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, Datatype] = {}
    requested: list[RequestedOutput] = []
    binary_flags: list[bool] = []
    for index, name in enumerate(draw(st.lists(names, min_size=1, max_size=4, unique=True))):
        flag = draw(st.none() | st.booleans()) if name_outputs else None
        binary = default_binary if flag is None else flag
        datatype = first if index == 0 else draw(st.sampled_from(ALL_DATATYPES))
        array = draw(arrays(datatype, utf8=not binary))
        if datatype is Datatype.BYTES and not binary and draw(st.booleans()):
            array = object_array([item.decode() for item in array.reshape(-1)], array.shape)
        if draw(st.booleans()):
            array = np.asfortranarray(array)
        outputs[name] = array
        datatypes[name] = datatype
        requested.append(RequestedOutput(name, {} if flag is None else {"binary_data": flag}))
        binary_flags.append(binary or datatype is Datatype.BF16)  # BF16 never goes into JSON
    response = InferResult(
        model_name=draw(names),
        model_version=draw(st.sampled_from(["1", "7", "42"])),
        outputs=outputs,
        output_datatypes=datatypes,
        id=draw(st.none() | st.text(max_size=8)),
        parameters=draw(custom_parameters),
    )
    request = InferRequest(
        model_name=response.model_name,
        model_version="",
        inputs={},
        input_datatypes={},
        id=response.id,
        requested_outputs=tuple(requested) if name_outputs else None,
    )
    return response, request, default_binary, binary_flags


@pytest.mark.parametrize("datatype", ALL_DATATYPES)
@PER_DATATYPE_SETTINGS
@given(data=st.data())
def test_response_round_trips_through_tritonclient(datatype: Datatype, data: st.DataObject) -> None:
    response, request, default_binary, binary_flags = data.draw(response_cases(datatype), label="case")
    body, header_length = encode_infer_response(response, request, default_binary)
    assert (header_length is None) == (not any(binary_flags))

    result = httpclient.InferResult.from_response_body(body, verbose=False, header_length=header_length)
    document = result.get_response()
    assert document["model_name"] == response.model_name
    assert document["model_version"] == response.model_version
    assert document.get("id") == response.id
    assert_same_parameters(document.get("parameters", {}), response.parameters)
    assert [output["name"] for output in document["outputs"]] == list(response.outputs)

    for (name, array), binary in zip(response.outputs.items(), binary_flags, strict=True):
        kind = response.output_datatypes[name]
        output = result.get_output(name)
        assert output["datatype"] == kind.value
        assert output["shape"] == list(array.shape)
        got = result.as_numpy(name)
        if binary:
            assert "data" not in output
            assert output["parameters"]["binary_data_size"] >= 0
            assert_bit_exact(got.view(np.uint16) if kind is Datatype.BF16 else got, array, kind)
        else:
            assert "parameters" not in output
            assert None not in output["data"], "a non-finite float was written as null"
            assert len(output["data"]) == array.size  # JSON data is emitted flat
            if kind is Datatype.BYTES:
                assert all(type(item) is str for item in got.reshape(-1))
            assert_same_values(got, array, kind)


@PROPERTY_SETTINGS
@given(data=st.data(), datatype=st.sampled_from(FLOATS))
def test_non_finite_json_outputs_are_literals_tritonclient_reads(data: st.DataObject, datatype: Datatype) -> None:
    values = data.draw(st.lists(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.5]), min_size=1))
    array = np.array(values, dtype=datatype.numpy_dtype)
    response = InferResult("m", "1", {"y": array}, {"y": datatype})
    request = InferRequest("m", "", {}, {})
    body, header_length = encode_infer_response(response, request, False)
    assert header_length is None
    assert b"null" not in body
    got = httpclient.InferResult.from_response_body(body, header_length=None).as_numpy("y")
    assert_same_values(got, array, datatype)


@PROPERTY_SETTINGS
@given(
    array=arrays(Datatype.BYTES, shape=shapes.filter(lambda s: math.prod(s) > 0)),
    data=st.data(),
)
def test_non_utf8_bytes_output_is_refused_as_json_and_round_trips_as_binary(
    array: np.ndarray, data: st.DataObject
) -> None:
    flat = array.reshape(-1)
    flat[data.draw(st.integers(0, flat.size - 1))] = b"\xff" + data.draw(st.binary(max_size=3))
    response = InferResult("m", "1", {"s": array}, {"s": Datatype.BYTES})
    request = InferRequest("m", "", {}, {})
    with pytest.raises(EncodeError, match="not UTF-8"):
        encode_infer_response(response, request, False)
    body, header_length = encode_infer_response(response, request, True)
    got = httpclient.InferResult.from_response_body(body, header_length=header_length).as_numpy("s")
    assert_bit_exact(got, array, Datatype.BYTES)


# --------------------------------------------------------------------------- nested JSON data


def _list_depth(value: Any) -> int:
    if not isinstance(value, list):
        return 0
    return 1 + max((_list_depth(item) for item in value), default=0)


def _json_data(array: np.ndarray, datatype: Datatype) -> Any:
    """Nested row-major lists of depth ``ndim`` (a bare scalar for shape [])."""
    if datatype is Datatype.BYTES:
        array = object_array([item.decode() for item in array.reshape(-1)], array.shape)
    return array.tolist()


@st.composite
def json_tensors(draw: st.DrawFn) -> tuple[Datatype, np.ndarray]:
    datatype = draw(st.sampled_from(JSON_DATATYPES))
    return datatype, draw(arrays(datatype, utf8=True))


@PROPERTY_SETTINGS
@given(tensor=json_tensors(), extra_levels=st.integers(0, 6), max_depth=st.integers(2, 8))
def test_nested_json_data_equals_flat_up_to_the_depth_limit(
    tensor: tuple[Datatype, np.ndarray], extra_levels: int, max_depth: int
) -> None:
    datatype, array = tensor
    nested = _json_data(array, datatype)
    for _ in range(extra_levels):  # singleton wrappers: same elements, deeper nesting
        nested = [nested]
    flat = _json_data(array.reshape(-1), datatype)
    limits = RestLimits(LIMITS.max_tensor_bytes, max_depth, LIMITS.max_requested_outputs)

    def decode(data: Any) -> np.ndarray:
        header = {"inputs": [{"name": "x", "shape": list(array.shape), "datatype": datatype.value, "data": data}]}
        return _decode(json.dumps(header).encode(), None, limits).request.inputs["x"]

    assert_same_values(decode(flat), array, datatype)
    if _list_depth(nested) <= max_depth:
        assert_same_values(decode(nested), array, datatype)
    else:
        with pytest.raises(DecodeError, match="nested deeper"):
            decode(nested)


@pytest.mark.parametrize("levels", [65, 2000, 100_000])
def test_absurdly_deep_json_data_is_a_decode_error(levels: int) -> None:
    data = "[" * levels + "1" + "]" * levels
    header = '{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":' + data + "}]}"
    with pytest.raises(DecodeError):
        _decode(header.encode(), None)


def test_tritonclient_nan_literals_in_json_requests_are_accepted() -> None:
    tensor = httpclient.InferInput("x", [3], "FP32")
    tensor.set_data_from_numpy(np.array([np.nan, np.inf, -np.inf], dtype=np.float32), binary_data=False)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    assert b"NaN" in body and json_size is None
    got = _decode(body, None).request.inputs["x"]
    assert_same_values(got, np.array([np.nan, np.inf, -np.inf], dtype=np.float32), Datatype.FP32)


def test_bf16_is_refused_in_json_both_ways() -> None:
    header = {"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [1.0]}]}
    with pytest.raises(DecodeError, match="BF16"):
        _decode(rapidjson.dumps(header).encode(), None)
    with pytest.raises(DecodeError, match="BF16"):
        tensor_from_json([1.0], Datatype.BF16, (1,), 1, 8, "input 'x'")


# --------------------------------------------------------------------------- declared sizes


@PROPERTY_SETTINGS
@given(
    dims=st.lists(st.integers(0, 2**70) | st.just(0), max_size=8),
    datatype=st.sampled_from(ALL_DATATYPES),
    limit=st.integers(0, 2**48),
)
def test_checked_shape_compares_exact_sizes_with_the_limit(dims: list[int], datatype: Datatype, limit: int) -> None:
    count = math.prod(dims)
    if count * (datatype.itemsize or 1) > limit:
        with pytest.raises(DecodeError) as info:
            checked_shape(dims, datatype, limit, "input 'x'")
        assert info.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    elif count == 0:
        # Empty, but the other dimensions may still be refused (numpy cannot hold dimensions past its range).
        with contextlib.suppress(DecodeError):
            assert checked_shape(dims, datatype, limit, "input 'x'") == (tuple(dims), 0)
    else:
        assert checked_shape(dims, datatype, limit, "input 'x'") == (tuple(dims), count)


@PROPERTY_SETTINGS
@given(
    dims=st.lists(st.integers(-(2**63), 2**63), min_size=1, max_size=6).filter(lambda d: min(d) < 0),
    datatype=st.sampled_from(ALL_DATATYPES),
)
def test_negative_dimensions_are_refused(dims: list[int], datatype: Datatype) -> None:
    with pytest.raises(DecodeError, match="negative") as info:
        checked_shape(dims, datatype, 2**62, "input 'x'")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("shape", [[1.0], [True], ["2"], [None], "[2]", None, {"0": 1}, [1] * 33])
def test_malformed_shapes_are_refused(shape: Any) -> None:
    with pytest.raises(DecodeError):
        checked_shape(shape, Datatype.FP32, 2**62, "input 'x'")


def _peak_bytes_while(action: Any) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("datatype", ALL_DATATYPES)
@pytest.mark.parametrize("shape", [[2**40], [2**32, 2**32], [2**20, 2**20, 2**20], [2**63, 2**63, 3]])
def test_huge_declared_shapes_are_refused_without_allocating(shape: list[int], datatype: Datatype) -> None:
    header = {
        "inputs": [{"name": "x", "shape": shape, "datatype": datatype.value, "parameters": {"binary_data_size": 0}}]
    }
    body = json.dumps(header).encode()

    def decode() -> None:
        with pytest.raises(DecodeError) as info:
            _decode(body, len(body), RestLimits(2**28, 64, 16))
        # No bytes were sent for that shape: a mismatch (400), not a request over a limit (413).
        assert info.value.code is ErrorCode.INVALID_ARGUMENT

    assert _peak_bytes_while(decode) < 1 << 20


@pytest.mark.parametrize("datatype", [Datatype.FP32, Datatype.INT8, Datatype.BYTES])
def test_what_was_sent_decides_between_a_mismatch_and_a_size_limit(datatype: Datatype) -> None:
    """Sent bytes that fit the shape but are over the limit: 413. Bytes or JSON data that cannot fill the
    shape: 400, whatever the declared size (a retry of an invalid request would fail again)."""
    itemsize = datatype.itemsize or 4
    limit = 1024
    count = limit // (datatype.itemsize or 1) + 1  # one element over the limit
    over = {"sent_bytes": count * itemsize}
    with pytest.raises(DecodeError) as info:
        checked_shape([count], datatype, limit, "input 'x'", **over)
    assert info.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    for sent in ({"sent_bytes": 4}, {"max_sent_elements": 3}):
        with pytest.raises(DecodeError, match=r"must match|needs") as info:
            checked_shape([2**40], datatype, limit, "input 'x'", **sent)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT
        with pytest.raises(DecodeError) as info:
            checked_shape([2**70, 2**70], datatype, limit, "input 'x'", **sent)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT


@PROPERTY_SETTINGS
@given(
    dims=st.lists(st.integers(0, 2**64), min_size=1, max_size=4).map(lambda d: [*d, 0]).flatmap(st.permutations),
    datatype=st.sampled_from(ALL_DATATYPES),
    binary=st.booleans(),
)
def test_zero_dimension_beside_any_others_is_an_empty_tensor_or_a_decode_error(
    dims: list[int], datatype: Datatype, binary: bool
) -> None:
    """Never a numpy error (dimensions past intp's range) and never an allocation."""
    tensor: dict[str, Any] = {"name": "x", "shape": dims, "datatype": datatype.value}
    if binary or datatype is Datatype.BF16:
        tensor["parameters"] = {"binary_data_size": 0}
    else:
        tensor["data"] = []
    body = json.dumps({"inputs": [tensor]}).encode()
    try:
        got = _decode(body, len(body)).request.inputs["x"]
    except DecodeError:
        return
    assert got.shape == tuple(dims) and got.size == 0
    assert got.dtype == datatype.numpy_dtype


def test_bytes_shape_within_the_limit_but_without_data_does_not_allocate_per_element() -> None:
    """A 120-byte request declaring 2**22 BYTES elements (under a 16 MiB limit) and sending none.

    BUG (kept failing on purpose): ``deserialize_bytes_tensor`` allocates ``np.empty(count, object)``
    (8 bytes a pointer, here 32 MiB; 2 GiB under the default 256 MiB limit) before it looks at the buffer,
    which can hold at most ``len(buffer) // 4`` elements.
    """
    header = {"inputs": [{"name": "s", "shape": [2**22], "datatype": "BYTES", "parameters": {"binary_data_size": 0}}]}
    body = json.dumps(header).encode()

    def decode() -> None:
        with pytest.raises(DecodeError):
            _decode(body, len(body), RestLimits(2**24, 64, 16))

    assert _peak_bytes_while(decode) < 1 << 20


def test_json_fp16_from_tritonclient_is_accepted() -> None:
    """tritonclient sends FP16 as JSON numbers (Triton itself refuses them); we accept them exactly."""
    array = np.array([0.1, -2.5, 65504.0, np.float16(6e-8)], dtype=np.float16)
    tensor = httpclient.InferInput("h", [4], "FP16").set_data_from_numpy(array, binary_data=False)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    assert json_size is None
    assert_same_values(_decode(body, None).request.inputs["h"], array, Datatype.FP16)
