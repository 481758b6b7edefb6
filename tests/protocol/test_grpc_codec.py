"""Property tests: the gRPC codec against the messages tritonclient.grpc really builds and reads.

Requests are built with ``tritonclient.grpc.InferInput.set_data_from_numpy`` and the client's own
``_get_inference_request`` (raw_input_contents, as tritonclient always sends), or with the typed
``contents`` fields (as other clients may); every message goes through ``SerializeToString`` and back, as
on the wire. Responses are encoded by ours and read with ``tritonclient.grpc.InferResult.as_numpy``.
"""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc._utils import _get_inference_request

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError, ErrorCode
from modelserve.core.inference import InferResult, RequestedOutput
from modelserve.protocol.grpc_codec import decode_infer_request, encode_infer_response
from tests.protocol.tensor_strategies import (
    ALL_DATATYPES,
    FIXED_NATIVE,
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

MAX_TENSOR_BYTES = 1 << 20
MAX_OUTPUTS = 16


def _wire(message: Any) -> Any:
    """The message as the server receives it: serialized and parsed again."""
    return type(message).FromString(message.SerializeToString())


def _decode(message: Any, max_tensor_bytes: int = MAX_TENSOR_BYTES) -> Any:
    return decode_infer_request(_wire(message), max_tensor_bytes, MAX_OUTPUTS)


# --------------------------------------------------------------------------- raw_input_contents requests


@st.composite
def input_specs(draw: st.DrawFn, first: Datatype) -> list[tuple[str, Datatype, np.ndarray]]:
    specs = []
    for index, name in enumerate(draw(st.lists(names, min_size=1, max_size=3, unique=True))):
        datatype = first if index == 0 else draw(st.sampled_from(ALL_DATATYPES))
        specs.append((name, datatype, draw(arrays(datatype))))
    return specs


def _client_request(specs: list[tuple[str, Datatype, np.ndarray]], **kwargs: Any) -> Any:
    inputs = []
    for name, datatype, array in specs:
        tensor = grpcclient.InferInput(name, list(array.shape), datatype.value)
        tensor.set_data_from_numpy(client_array(array, datatype))
        inputs.append(tensor)
    arguments: dict[str, Any] = {
        "model_name": "m",
        "model_version": "",
        "request_id": "",
        "outputs": None,
        "sequence_id": 0,
        "sequence_start": False,
        "sequence_end": False,
        "priority": 0,
        "timeout": None,
        "parameters": None,
    }
    arguments.update(kwargs)
    return _get_inference_request(inputs=inputs, **arguments)


@pytest.mark.parametrize("datatype", ALL_DATATYPES)
@PER_DATATYPE_SETTINGS
@given(
    data=st.data(),
    outputs=st.none() | st.lists(st.tuples(names, st.integers(0, 5)), min_size=1, max_size=3, unique_by=lambda o: o[0]),
    request_id=st.text(max_size=8),
    model_version=st.sampled_from(["", "1", "12"]),
    priority=st.integers(0, 2**63),
    timeout=st.none() | st.integers(0, 2**40),
    parameters=custom_parameters,
)
def test_tritonclient_request_round_trips(
    datatype: Datatype,
    data: st.DataObject,
    outputs: list[tuple[str, int]] | None,
    request_id: str,
    model_version: str,
    priority: int,
    timeout: int | None,
    parameters: dict[str, Any],
) -> None:
    specs = data.draw(input_specs(datatype), label="inputs")
    message = _client_request(
        specs,
        model_version=model_version,
        request_id=request_id,
        outputs=None if outputs is None else [grpcclient.InferRequestedOutput(n, class_count=c) for n, c in outputs],
        priority=priority,
        timeout=timeout,
        parameters=parameters,
    )
    request = _decode(message)

    assert request.model_name == "m"
    assert request.model_version == model_version
    assert list(request.inputs) == [name for name, *_ in specs]
    for name, kind, array in specs:
        assert request.input_datatypes[name] is kind
        assert_bit_exact(request.inputs[name], array, kind)
    assert request.id == (request_id or None)
    if outputs is None:
        assert request.requested_outputs is None
    else:
        assert request.requested_outputs == tuple(
            RequestedOutput(n, {"classification": c} if c else {}) for n, c in outputs
        )
    assert_same_parameters(request.parameters, parameters)
    assert request.priority == priority
    assert request.timeout_us == (timeout or 0)


@PROPERTY_SETTINGS
@given(specs=input_specs(Datatype.BYTES) | input_specs(Datatype.FP32), data=st.data())
def test_raw_contents_of_the_wrong_size_are_refused(
    specs: list[tuple[str, Datatype, np.ndarray]], data: st.DataObject
) -> None:
    message = _client_request(specs)
    index = data.draw(st.integers(0, len(specs) - 1), label="input")
    raw = message.raw_input_contents[index]
    if data.draw(st.booleans(), label="truncate") and raw:
        message.raw_input_contents[index] = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    else:
        message.raw_input_contents[index] = raw + data.draw(st.binary(min_size=1, max_size=8), label="extra")
    with pytest.raises(DecodeError):
        _decode(message)


@PROPERTY_SETTINGS
@given(array=arrays(Datatype.UINT8, shape=shapes.filter(lambda s: math.prod(s) > 0)), data=st.data())
def test_raw_bool_bytes_other_than_0_and_1_are_refused(array: np.ndarray, data: st.DataObject) -> None:
    flat = array.reshape(-1).copy()
    flat[data.draw(st.integers(0, flat.size - 1))] = data.draw(st.integers(2, 255))
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="b", datatype="BOOL", shape=array.shape)
    message.raw_input_contents.append(flat.tobytes())
    with pytest.raises(DecodeError, match="BOOL"):
        _decode(message)


def test_one_raw_entry_per_input_is_required() -> None:
    specs = [("a", Datatype.INT32, np.arange(3, dtype=np.int32)), ("b", Datatype.FP32, np.ones(2, np.float32))]
    short = _client_request(specs)
    del short.raw_input_contents[1]
    with pytest.raises(DecodeError, match="raw_input_contents"):
        _decode(short)
    extra = _client_request(specs)
    extra.raw_input_contents.append(b"")
    with pytest.raises(DecodeError, match="raw_input_contents"):
        _decode(extra)


# --------------------------------------------------------------------------- typed contents requests

_FIELD = {
    Datatype.BOOL: "bool_contents",
    Datatype.INT8: "int_contents",
    Datatype.INT16: "int_contents",
    Datatype.INT32: "int_contents",
    Datatype.INT64: "int64_contents",
    Datatype.UINT8: "uint_contents",
    Datatype.UINT16: "uint_contents",
    Datatype.UINT32: "uint_contents",
    Datatype.UINT64: "uint64_contents",
    Datatype.FP32: "fp32_contents",
    Datatype.FP64: "fp64_contents",
    Datatype.BYTES: "bytes_contents",
}
_FIELD_RANGE = {"int_contents": (-(2**31), 2**31 - 1), "uint_contents": (0, 2**32 - 1)}


def _contents_request(tensors: list[tuple[str, Datatype, tuple[int, ...], list[Any]]]) -> Any:
    message = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape, values in tensors:
        tensor = message.inputs.add(name=name, datatype=datatype.value, shape=shape)
        getattr(tensor.contents, _FIELD[datatype]).extend(values)
    return message


@pytest.mark.parametrize("datatype", list(_FIELD))
@PER_DATATYPE_SETTINGS
@given(data=st.data())
def test_typed_contents_round_trip(datatype: Datatype, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype), label="array")
    values = list(array.reshape(-1)) if datatype is Datatype.BYTES else array.reshape(-1).tolist()
    request = _decode(_contents_request([("x", datatype, array.shape, values)]))
    assert request.input_datatypes["x"] is datatype
    if datatype in FLOATS:
        # Values are exact (fp32_contents holds float32), but a signalling NaN is quieted on its way
        # through a Python float, on the client's side; so NaN-aware rather than bit-exact.
        assert_same_values(request.inputs["x"], array, datatype)
    else:
        assert_bit_exact(request.inputs["x"], array, datatype)


@pytest.mark.parametrize("datatype", [Datatype.INT8, Datatype.INT16, Datatype.UINT8, Datatype.UINT16])
@PER_DATATYPE_SETTINGS
@given(data=st.data())
def test_narrow_integers_in_wide_contents_fields_are_range_checked(datatype: Datatype, data: st.DataObject) -> None:
    low, high = _FIELD_RANGE[_FIELD[datatype]]
    info = np.iinfo(datatype.numpy_dtype)
    values = data.draw(st.lists(st.integers(int(info.min), int(info.max)), max_size=6), label="values")
    outside = data.draw(
        st.integers(low, high).filter(lambda v: not info.min <= v <= info.max), label="outside the range"
    )
    values.insert(data.draw(st.integers(0, len(values)), label="position"), outside)
    with pytest.raises(DecodeError, match="outside the range"):
        _decode(_contents_request([("x", datatype, (len(values),), values)]))


@pytest.mark.parametrize("datatype", [Datatype.FP16, Datatype.BF16])
def test_fp16_and_bf16_have_no_contents_field(datatype: Datatype) -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="h", datatype=datatype.value, shape=[2])
    tensor.contents.fp32_contents.extend([1.0, 2.0])
    with pytest.raises(DecodeError, match="raw_input_contents"):
        _decode(message)


def test_mixing_contents_and_raw_contents_is_refused() -> None:
    message = _contents_request([("a", Datatype.INT32, (2,), [1, 2])])
    message.inputs.add(name="b", datatype="INT32", shape=[1])
    message.raw_input_contents.append(np.int32(3).tobytes())
    with pytest.raises(DecodeError, match="contents"):
        _decode(message)


_INTEGERS = [dt for dt in _FIELD if dt.numpy_dtype.kind in "iu"]


@pytest.mark.parametrize("datatype", _INTEGERS)
def test_typed_contents_keep_extreme_integers(datatype: Datatype) -> None:
    info = np.iinfo(datatype.numpy_dtype)
    values = sorted({int(info.min), int(info.min) + 1, 0, 1, int(info.max) - 1, int(info.max)})
    values += [v for v in (2**53 + 1, 2**63 + 1) if v <= info.max]
    request = _decode(_contents_request([("x", datatype, (len(values),), values)]))
    assert request.inputs["x"].dtype == datatype.numpy_dtype
    assert request.inputs["x"].tolist() == values


def test_uint64_contents_keep_full_precision() -> None:
    """Minimal counterexample of the UINT64 typed-contents bug, kept failing on purpose.

    ``_from_contents`` widens with ``np.array(values)``; numpy promotes Python ints that fit int64 mixed
    with ones >= 2**63 to float64, so [0, 2**63 + 1] arrives as [0, 2**63] (and values near 2**64 - 1
    overflow the cast back: a RuntimeWarning and garbage).
    """
    values = [0, 2**63 + 1]
    request = _decode(_contents_request([("x", Datatype.UINT64, (2,), values)]))
    assert request.inputs["x"].dtype == np.uint64
    assert request.inputs["x"].tolist() == values


# --------------------------------------------------------------------------- declared sizes


@pytest.mark.parametrize("datatype", ALL_DATATYPES)
@pytest.mark.parametrize("shape", [[2**40], [2**32, 2**32], [2**62, 2**62, 2**62], [2**63 - 1, 3]])
def test_huge_declared_shapes_are_refused_without_allocating(shape: list[int], datatype: Datatype) -> None:
    for raw in (True, False):
        message = pb.ModelInferRequest(model_name="m")
        message.inputs.add(name="x", datatype=datatype.value, shape=shape)
        if raw:
            message.raw_input_contents.append(b"")
        wire = _wire(message)
        tracemalloc.start()
        try:
            with pytest.raises(DecodeError) as info:
                decode_infer_request(wire, 2**28, MAX_OUTPUTS)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # The data sent (none) cannot match the shape: a mismatch, not a request over a limit.
        assert info.value.code is ErrorCode.INVALID_ARGUMENT
        assert peak < 1 << 20


@PROPERTY_SETTINGS
@given(
    dims=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=5).filter(lambda d: min(d) < 0),
    datatype=st.sampled_from(ALL_DATATYPES),
)
def test_negative_dimensions_are_refused(dims: list[int], datatype: Datatype) -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype=datatype.value, shape=dims)
    message.raw_input_contents.append(b"")
    with pytest.raises(DecodeError, match="negative") as info:
        _decode(message)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_bytes_shape_without_data_does_not_allocate_per_element() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="s", datatype="BYTES", shape=[2**22])
    message.raw_input_contents.append(b"")
    wire = _wire(message)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            decode_infer_request(wire, 2**24, MAX_OUTPUTS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# --------------------------------------------------------------------------- responses


@st.composite
def responses(draw: st.DrawFn, first: Datatype) -> InferResult:
    """Outputs of every datatype; some Fortran-ordered (non-contiguous), some BYTES holding ``str``."""
    outputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, Datatype] = {}
    for index, name in enumerate(draw(st.lists(names, min_size=1, max_size=4, unique=True))):
        datatype = first if index == 0 else draw(st.sampled_from(ALL_DATATYPES))
        utf8 = datatype is Datatype.BYTES and draw(st.booleans())
        array = draw(arrays(datatype, utf8=utf8))
        if utf8 and draw(st.booleans()):
            array = object_array([item.decode() for item in array.reshape(-1)], array.shape)
        if draw(st.booleans()):
            array = np.asfortranarray(array)
        outputs[name] = array
        datatypes[name] = datatype
    return InferResult(
        model_name=draw(names),
        model_version=draw(st.sampled_from(["1", "7"])),
        outputs=outputs,
        output_datatypes=datatypes,
        id=draw(st.none() | st.text(max_size=8)),
    )


@pytest.mark.parametrize("datatype", ALL_DATATYPES)
@PER_DATATYPE_SETTINGS
@given(data=st.data())
def test_response_round_trips_through_tritonclient(datatype: Datatype, data: st.DataObject) -> None:
    response = data.draw(responses(datatype), label="response")
    message = _wire(encode_infer_response(response))
    assert message.model_name == response.model_name
    assert message.model_version == response.model_version
    assert message.id == (response.id or "")
    # One raw entry per output, in order, empty ones included (what as_numpy and perf_analyzer index by).
    assert len(message.raw_output_contents) == len(response.outputs)
    assert [output.name for output in message.outputs] == list(response.outputs)

    result = grpcclient.InferResult(message)
    for name, array in response.outputs.items():
        kind = response.output_datatypes[name]
        output = result.get_output(name)
        assert output.datatype == kind.value
        assert list(output.shape) == list(array.shape)
        got = result.as_numpy(name)
        assert_bit_exact(got.view(np.uint16) if kind is Datatype.BF16 else got, array, kind)


@PROPERTY_SETTINGS
@given(datatype=st.sampled_from(FIXED_NATIVE), data=st.data())
def test_response_raw_bytes_are_little_endian_row_major(datatype: Datatype, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype, shape=shapes.filter(lambda s: len(s) >= 2)))
    transposed = array.T  # a non-contiguous view: the wire must carry the view's row-major order
    message = encode_infer_response(InferResult("m", "1", {"y": transposed}, {"y": datatype}))
    expected = np.ascontiguousarray(transposed).astype(datatype.numpy_dtype.newbyteorder("<")).tobytes()
    assert message.raw_output_contents[0] == expected
