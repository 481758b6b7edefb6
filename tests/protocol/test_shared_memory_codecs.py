"""The codecs' part of the shared-memory extension: tensor parameters read into windows, inputs copied out
of a registry and outputs written into it, for requests tritonclient (HTTP and gRPC) builds itself. The
registry is the real one over real POSIX shared memory."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc._utils import _get_inference_request

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError, ErrorCode
from modelserve.core.inference import InferResult
from modelserve.protocol import grpc_codec, rest_codec
from modelserve.protocol.rest_codec import RestLimits
from modelserve.service.shared_memory import SharedMemoryError, SharedMemoryRegistry

LIMITS = RestLimits(max_tensor_bytes=1 << 20, max_json_depth=64, max_requested_outputs=16)


@pytest.fixture
def region() -> Iterator[tuple[SharedMemoryRegistry, shared_memory.SharedMemory]]:
    """Region 'r': 4 KiB of a fresh shm object, registered."""
    key = f"mstest_{uuid.uuid4().hex}"
    obj = shared_memory.SharedMemory(key, create=True, size=4096)
    registry = SharedMemoryRegistry(max_regions=4, max_total_bytes=1 << 20)
    registry.register("r", "/" + key, 0, 4096)
    yield registry, obj
    registry.close()
    obj.close()
    obj.unlink()


def rest_request(inputs: list[httpclient.InferInput], outputs: list[httpclient.InferRequestedOutput] | None) -> Any:
    body, header_length = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return rest_codec.parse_infer_header(body, header_length, "m", "", LIMITS)


def test_rest_inputs_come_from_the_region_and_outputs_go_to_it(region: Any) -> None:
    registry, obj = region
    values = np.arange(16, dtype=np.int32).reshape(1, 16)
    obj.buf[64:128] = values.tobytes()
    first = httpclient.InferInput("A", [1, 16], "INT32").set_shared_memory("r", 64, offset=64)
    second = httpclient.InferInput("B", [1, 16], "INT32")
    second.set_data_from_numpy(values, binary_data=True)  # one input in the body, one in the region
    output = httpclient.InferRequestedOutput("C", binary_data=True)
    output.set_shared_memory("r", 64, offset=1024)
    header = rest_request([first, second], [output])
    assert header.shared_memory_bytes == 64
    decoded = rest_codec.decode_infer_tensors(header, LIMITS, registry)
    np.testing.assert_array_equal(decoded.request.inputs["A"], values)
    obj.buf[64:68] = b"\xff" * 4  # copied in: a later write to the region changes nothing
    assert decoded.request.inputs["A"][0, 0] == 0
    result = InferResult("m", "1", {"C": values * 2}, {"C": Datatype.INT32})
    body, json_length = rest_codec.encode_infer_response(result, decoded.request, True, registry)
    assert json_length is None  # no blob: the output is in the region
    (entry,) = json.loads(body)["outputs"]
    assert entry == {
        "name": "C",
        "datatype": "INT32",
        "shape": [1, 16],
        "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 64, "shared_memory_offset": 1024},
    }
    np.testing.assert_array_equal(np.frombuffer(obj.buf[1024:1088], dtype=np.int32), (values * 2).ravel())


def test_grpc_raw_contents_are_only_for_the_inputs_not_in_shared_memory(region: Any) -> None:
    registry, obj = region
    values = np.arange(16, dtype=np.int32).reshape(1, 16)
    obj.buf[0:64] = (values + 1).tobytes()
    first = grpcclient.InferInput("A", [1, 16], "INT32")
    first.set_data_from_numpy(values)
    second = grpcclient.InferInput("B", [1, 16], "INT32").set_shared_memory("r", 64)
    third = grpcclient.InferInput("C", [1, 16], "INT32")
    third.set_data_from_numpy(values + 2)
    output = grpcclient.InferRequestedOutput("D")
    output.set_shared_memory("r", 64, offset=512)
    message = _get_inference_request("m", [first, second, third], "", "", [output], 0, False, False, 0, None, None)
    assert len(message.raw_input_contents) == 2
    header = grpc_codec.parse_infer_header(message, 1 << 20, 16)
    request = grpc_codec.decode_infer_tensors(header, registry)
    for name, expected in (("A", values), ("B", values + 1), ("C", values + 2)):
        np.testing.assert_array_equal(request.inputs[name], expected)
    result = InferResult("m", "1", {"D": values * 3, "E": values}, {"D": Datatype.INT32, "E": Datatype.INT32})
    response = grpc_codec.encode_infer_response(result, request.requested_outputs, registry)
    read = grpcclient.InferResult(response)
    assert response.raw_output_contents[0] == b""  # an empty entry keeps the positions of the others
    np.testing.assert_array_equal(read.as_numpy("E"), values)
    assert response.outputs[0].parameters["shared_memory_byte_size"].int64_param == 64
    np.testing.assert_array_equal(np.frombuffer(obj.buf[512:576], dtype=np.int32), (values * 3).ravel())


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"shared_memory_offset": 0}, "'shared_memory_offset' can not be specified without"),
        ({"shared_memory_byte_size": 64}, "'shared_memory_byte_size' can not be specified without"),
        ({"shared_memory_region": "r"}, "'shared_memory_byte_size' must be specified along with"),
        ({"shared_memory_region": "", "shared_memory_byte_size": 64}, "must be the name of a registered region"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": -1}, "must be a non-negative integer"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": True}, "must be a non-negative integer"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": 64, "shared_memory_offset": "0"}, "non-negative"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": 60}, "needs 64 bytes (16 x 4)"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": 64, "binary_data_size": 64}, "only one of"),
    ],
)
def test_rest_shared_memory_parameters_are_checked_before_any_region(parameters: dict[str, Any], expected: str) -> None:
    body = json.dumps({"inputs": [{"name": "A", "shape": [1, 16], "datatype": "INT32", "parameters": parameters}]})
    with pytest.raises(DecodeError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        rest_codec.parse_infer_header(body.encode() + b"\0" * 64, len(body), "m", "", LIMITS)


def test_an_output_in_shared_memory_cannot_be_classified_too() -> None:
    output = {
        "name": "C",
        "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 8, "classification": 2},
    }
    body = json.dumps({"inputs": [], "outputs": [output]}).encode()
    with pytest.raises(DecodeError, match="can't set both 'shared_memory_region' and 'classification'"):
        rest_codec.parse_infer_header(body, None, "m", "", LIMITS)


def test_a_bytes_window_over_the_tensor_limit_is_refused_before_any_copy() -> None:
    tensor = {"name": "A", "shape": [2], "datatype": "BYTES"}
    tensor["parameters"] = {"shared_memory_region": "r", "shared_memory_byte_size": (1 << 20) + 1}
    with pytest.raises(DecodeError, match="over the server's limit") as caught:
        rest_codec.parse_infer_header(json.dumps({"inputs": [tensor]}).encode(), None, "m", "", LIMITS)
    assert caught.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_unknown_regions_and_a_disabled_extension_are_named(region: Any) -> None:
    registry, _ = region
    header = rest_request([httpclient.InferInput("A", [1, 16], "INT32").set_shared_memory("nope", 64)], None)
    with pytest.raises(SharedMemoryError, match="input 'A': shared memory region 'nope' is not registered"):
        rest_codec.decode_infer_tensors(header, LIMITS, registry)
    with pytest.raises(DecodeError, match="system shared memory is disabled on this server") as caught:
        rest_codec.decode_infer_tensors(header, LIMITS, None)
    assert caught.value.code is ErrorCode.UNSUPPORTED
