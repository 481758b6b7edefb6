"""Fuzz tests: hostile ``ModelInferRequest`` messages against ``grpc_codec.decode_infer_request``.

Messages are built field by field by hypothesis (any datatype string, int64 shapes of any sign and size,
raw_input_contents of random lengths and counts, typed ``contents`` in the wrong field or of the wrong
length, every ``InferParameter`` oneof or none), and also parsed from damaged serialized bytes (what the
gRPC layer hands over after protobuf accepted them). The only allowed outcomes are an
:class:`InferRequest` or a declared :class:`ModelServeError` that is not INTERNAL; a decoded request's
tensors hold at most a few bytes per byte of message (the allocation guard).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError as ProtobufDecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import ErrorCode, ModelServeError
from modelserve.core.inference import InferRequest
from modelserve.protocol.grpc_codec import decode_infer_request

FUZZ = settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MAX_TENSOR_BYTES = 1 << 16
MAX_REQUESTED_OUTPUTS = 4
INT64 = (-(2**63), 2**63 - 1)
Tensor = pb.ModelInferRequest.InferInputTensor
Output = pb.ModelInferRequest.InferRequestedOutputTensor

CONTENT_FIELDS = {
    "bool_contents": st.booleans(),
    "int_contents": st.one_of(st.integers(-3, 3), st.integers(-(2**31), 2**31 - 1)),
    "int64_contents": st.integers(*INT64),
    "uint_contents": st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1)),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=6),
}


def _decoded_bytes(array: np.ndarray) -> int:
    if array.dtype == np.dtype(object):
        return array.nbytes + sum(len(item) for item in array.reshape(-1))
    return array.nbytes


def _decode(message: Any) -> InferRequest | None:
    try:
        request = decode_infer_request(message, MAX_TENSOR_BYTES, MAX_REQUESTED_OUTPUTS)
    except ModelServeError as exc:
        assert exc.code is not ErrorCode.INTERNAL, exc
        assert exc.message
        return None
    declared = {t.name: tuple(t.shape) for t in message.inputs}
    for name, array in request.inputs.items():
        assert array.shape == declared[name]
        assert request.input_datatypes[name].value == next(t.datatype for t in message.inputs if t.name == name)
    # Allocation guard: a packed int64 element costs at least 1 byte on the wire and 8 decoded.
    total = sum(_decoded_bytes(array) for array in request.inputs.values())
    assert total <= 8 * message.ByteSize() + 64, (total, message.ByteSize())
    return request


# --------------------------------------------------------------------------- strategies

datatype_names = st.one_of(
    st.sampled_from([dt.value for dt in Datatype]),
    st.sampled_from(["", "fp32", "TYPE_FP32", "STRING"]),
    st.text(max_size=4),
)
dims = st.one_of(st.integers(-2, 4), st.integers(*INT64), st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1, -(2**63)]))
shapes = st.one_of(
    st.lists(st.integers(0, 3), max_size=3),
    st.lists(dims, max_size=5),
    st.lists(st.integers(0, 1), min_size=31, max_size=34),
)
parameters = st.one_of(
    st.builds(pb.InferParameter, bool_param=st.booleans()),
    st.builds(pb.InferParameter, int64_param=st.integers(*INT64)),
    st.builds(pb.InferParameter, uint64_param=st.integers(0, 2**64 - 1)),
    st.builds(pb.InferParameter, double_param=st.floats()),
    st.builds(pb.InferParameter, string_param=st.text(max_size=4)),
    st.just(pb.InferParameter()),  # no oneof set
)
parameter_maps = st.dictionaries(
    st.one_of(
        st.sampled_from(
            [
                "priority",
                "timeout",
                "binary_data_output",
                "sequence_id",
                "sequence_start",
                "headers",
                "triton_x",
                "triton_enable_empty_final_response",
            ]
        ),
        st.text(max_size=4),
    ),
    parameters,
    max_size=4,
)


@st.composite
def contents(draw: st.DrawFn, count: int) -> Any:
    """Typed contents in one or two fields, usually ``count`` long (so that decoding can succeed)."""
    message = pb.InferTensorContents()
    for field in draw(st.lists(st.sampled_from(sorted(CONTENT_FIELDS)), min_size=1, max_size=2, unique=True)):
        size = draw(st.one_of(st.just(count), st.integers(0, count + 2)))
        getattr(message, field).extend(draw(st.lists(CONTENT_FIELDS[field], min_size=size, max_size=size)))
    return message


@st.composite
def raw_blob(draw: st.DrawFn, datatype: str, count: int) -> bytes:
    """A raw buffer of the right size for a fixed-size datatype (or a BYTES encoding), or random bytes."""
    known = {dt.value: dt for dt in Datatype}.get(datatype)
    if known is not None and draw(st.booleans()):
        if known is Datatype.BYTES:
            items = draw(st.lists(st.binary(max_size=4), min_size=count, max_size=count))
            return b"".join(len(item).to_bytes(4, "little") + item for item in items)
        if known is Datatype.BOOL:
            return bytes(draw(st.lists(st.integers(0, 1), min_size=count, max_size=count)))
        return draw(st.binary(min_size=count * known.itemsize, max_size=count * known.itemsize))
    return draw(st.binary(max_size=48))


@st.composite
def messages(draw: st.DrawFn) -> Any:
    message = pb.ModelInferRequest(
        model_name=draw(st.text(max_size=3)), model_version=draw(st.text(max_size=2)), id=draw(st.text(max_size=3))
    )
    use_raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        shape = draw(shapes)
        datatype = draw(datatype_names)
        tensor = message.inputs.add(
            name=draw(st.sampled_from(["a", "b", ""]) | st.text(max_size=3)), datatype=datatype, shape=shape
        )
        count = math.prod(shape) if all(0 <= d <= 3 for d in shape) else 0
        if draw(st.booleans()):
            for key, value in draw(parameter_maps).items():
                tensor.parameters[key].CopyFrom(value)
        if use_raw:
            message.raw_input_contents.append(draw(raw_blob(datatype, count)))
            if draw(st.integers(0, 9)) == 0:
                tensor.contents.CopyFrom(draw(contents(count)))  # mixed: refused
        elif draw(st.integers(0, 4)):
            tensor.contents.CopyFrom(draw(contents(count)))
    if use_raw:
        # One raw entry per input, or a few too many or too few.
        extra = draw(st.integers(-2, 2))
        if extra > 0:
            message.raw_input_contents.extend(draw(st.lists(st.binary(max_size=8), min_size=extra, max_size=extra)))
        for _ in range(min(-extra, len(message.raw_input_contents))):
            message.raw_input_contents.pop()
    for key, value in draw(parameter_maps).items():
        message.parameters[key].CopyFrom(value)
    for _ in range(draw(st.integers(0, 6))):
        output = message.outputs.add(name=draw(st.text(max_size=3)))
        for key, value in draw(parameter_maps).items():
            output.parameters[key].CopyFrom(value)
    return message


def _message(**fields: Any) -> Any:
    return pb.ModelInferRequest(**fields)


# --------------------------------------------------------------------------- properties


@FUZZ
@given(messages())
@example(_message(inputs=[Tensor(name="a", datatype="INT8", shape=[2**32, 2**32])], raw_input_contents=[b""]))
@example(_message(inputs=[Tensor(name="a", datatype="INT8", shape=[2**62, 2**62, 0])], raw_input_contents=[b""]))
@example(_message(inputs=[Tensor(name="a", datatype="INT8", shape=[-(2**63)])]))
@example(_message(inputs=[Tensor(name="a", datatype="INT8", shape=[1] * 33)]))
@example(_message(inputs=[Tensor(name="a", datatype="BYTES", shape=[2])], raw_input_contents=[b"\1\0\0\0a\2\0\0\0b"]))
@example(_message(inputs=[Tensor(name="a", datatype="BYTES", shape=[2**20])], raw_input_contents=[b"\0\0\0\0"]))
@example(_message(inputs=[Tensor(name="a", datatype="BOOL", shape=[1])], raw_input_contents=[b"\2"]))
@example(
    _message(
        inputs=[Tensor(name="a", datatype="FP16", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1.0]))]
    )
)
@example(
    _message(
        inputs=[Tensor(name="a", datatype="BF16", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1.0]))]
    )
)
@example(
    _message(inputs=[Tensor(name="a", datatype="INT8", shape=[1], contents=pb.InferTensorContents(int_contents=[300]))])
)
@example(
    _message(
        inputs=[Tensor(name="a", datatype="UINT8", shape=[1], contents=pb.InferTensorContents(uint_contents=[256]))]
    )
)
@example(
    _message(inputs=[Tensor(name="a", datatype="INT32", shape=[2], contents=pb.InferTensorContents(int_contents=[1]))])
)
@example(
    _message(
        inputs=[
            Tensor(
                name="a", datatype="UINT64", shape=[2], contents=pb.InferTensorContents(uint64_contents=[2**64 - 1, 0])
            )
        ]
    )
)
@example(
    _message(
        inputs=[
            Tensor(
                name="a", datatype="BYTES", shape=[1, 2], contents=pb.InferTensorContents(bytes_contents=[b"ab", b"cd"])
            )
        ]
    )
)
@example(_message(inputs=[Tensor(name="a", datatype="INT8", shape=[1])] * 2, raw_input_contents=[b"\0", b"\0"]))
@example(
    _message(
        inputs=[Tensor(name="a", datatype="INT8", shape=[1]), Tensor(name="b", datatype="INT8", shape=[1])],
        raw_input_contents=[b"\0"],
    )
)
@example(_message(raw_input_contents=[b"\0"]))
@example(_message(parameters={"x": pb.InferParameter()}))
@example(_message(parameters={"priority": pb.InferParameter(uint64_param=2**64 - 1)}))
@example(_message(parameters={"priority": pb.InferParameter(int64_param=-1)}))
@example(_message(parameters={"sequence_id": pb.InferParameter(string_param="s")}))
@example(_message(parameters={str(i): pb.InferParameter(bool_param=True) for i in range(300)}))
@example(_message(outputs=[Output(name=str(i)) for i in range(5)]))
@example(_message(outputs=[Output(name="o", parameters={"x": pb.InferParameter()})]))
def test_messages_decode_or_refuse(message: Any) -> None:
    _decode(message)


_SEED = _message(
    id="r",
    inputs=[
        Tensor(name="a", datatype="FP32", shape=[1, 2]),
        Tensor(name="b", datatype="BYTES", shape=[1], parameters={"p": pb.InferParameter(int64_param=1)}),
    ],
    raw_input_contents=[b"\0" * 8, b"\1\0\0\0x"],
    parameters={"priority": pb.InferParameter(int64_param=1)},
    outputs=[Output(name="o")],
).SerializeToString()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_SEED) - 1), st.integers(0, 255)), max_size=4), st.integers(0, len(_SEED)))
@example([], len(_SEED))
def test_damaged_serialized_messages_decode_or_refuse(flips: list[tuple[int, int]], keep: int) -> None:
    """A valid request's wire bytes with a few bytes rewritten and the tail cut: protobuf may refuse them
    (that is gRPC's job, before us); whatever it accepts, we decode or refuse."""
    data = bytearray(_SEED)
    for position, value in flips:
        data[position] = value
    try:
        message = pb.ModelInferRequest.FromString(bytes(data[:keep]))
    except ProtobufDecodeError:
        return
    _decode(message)
