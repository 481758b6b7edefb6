"""Bounded cost per request (issue 11), through the real server: each amplification case is refused with
the right status and message, the server's memory does not grow with the refused body, and the next good
request is served."""

from __future__ import annotations

import struct

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.server_process import ServerProcess

MIB = 1024 * 1024


def _rss(server: ServerProcess) -> int:
    return int(psutil.Process(server.process.pid).memory_info().rss)


def _iris_ok_over_http(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
    response = httpx.post(f"http://127.0.0.1:{server.http_port}/v2/models/iris/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text


def test_a_mistyped_16_mib_json_body_is_refused_from_its_header(examples_server: ServerProcess) -> None:
    count = 8 * MIB
    body = (
        b'{"inputs":[{"name":"input-0","datatype":"INT8","shape":[%d],"data":[' % count + b"0," * (count - 1) + b"0]}]}"
    )
    url = f"http://127.0.0.1:{examples_server.http_port}/v2/models/iris/infer"
    _iris_ok_over_http(examples_server)
    before = _rss(examples_server)
    response = httpx.post(url, content=body, timeout=60)
    assert response.status_code == 400
    assert response.json() == {
        "error": "inference input 'input-0' data-type is 'INT8', but model 'iris' expects 'FP32'. "
        "Send input 'input-0' as FP32 (it was sent as INT8)"
    }
    # Reading the body costs its size; a parse of the data would cost 4x more again (8 bytes per element).
    assert _rss(examples_server) - before < 2 * len(body)
    _iris_ok_over_http(examples_server)


def test_too_many_inputs_are_refused_naming_the_setting(examples_server: ServerProcess) -> None:
    inputs = [{"name": f"i{n}", "datatype": "FP32", "shape": [1], "data": [1.0]} for n in range(2000)]
    url = f"http://127.0.0.1:{examples_server.http_port}/v2/models/iris/infer"
    response = httpx.post(url, json={"inputs": inputs}, timeout=30)
    assert response.status_code == 400
    assert "the request has 2000 inputs; at most 1024 are allowed (limits.max_inputs)" in response.json()["error"]

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{examples_server.grpc_port}")
    tensors = []
    for n in range(2000):
        tensor = grpcclient.InferInput(f"i{n}", [1], "FP32")
        tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
        tensors.append(tensor)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", tensors)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "at most 1024 are allowed (limits.max_inputs)" in str(caught.value.message())
    _iris_ok_over_http(examples_server)


def test_a_million_inputs_are_refused_unparsed(examples_server: ServerProcess) -> None:
    one = b'{"name":"i%07d","datatype":"FP32","shape":[1],"data":[1.0]},'
    body = b'{"inputs":[' + b"".join(one % n for n in range(1_000_000))[:-1] + b"]}"  # 58 MiB
    url = f"http://127.0.0.1:{examples_server.http_port}/v2/models/iris/infer"
    _iris_ok_over_http(examples_server)
    before = _rss(examples_server)
    response = httpx.post(url, content=body, timeout=60)
    assert response.status_code == 400
    message = response.json()["error"]
    assert 'its header holds 1000000 "name" keys' in message
    assert "1024 inputs (limits.max_inputs)" in message and "send at most 1024 inputs" in message
    # Reading the body costs its size; parsing it would cost ~12x (a million dicts, lists and strings).
    assert _rss(examples_server) - before < 2 * len(body)
    _iris_ok_over_http(examples_server)


def test_a_bytes_tensor_whose_last_prefix_overruns_is_refused_over_grpc(examples_server: ServerProcess) -> None:
    count = 2_000_000  # ~10 MB of one-byte elements
    raw = bytearray(b"\x01\x00\x00\x00x" * count)
    raw[-5:-1] = struct.pack("<I", 2)
    # tritonclient would serialize well-formed BYTES; send the raw message through its stub.
    from tritonclient.grpc import service_pb2 as pb

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{examples_server.grpc_port}")
    request = pb.ModelInferRequest(model_name="text_stats")
    request.inputs.add(name="text", datatype="BYTES", shape=[count])
    request.raw_input_contents.append(bytes(raw))
    before = _rss(examples_server)
    with pytest.raises(Exception) as caught:
        client._client_stub.ModelInfer(request, timeout=60)
    error = caught.value
    assert str(error.code()) == "StatusCode.INVALID_ARGUMENT"  # type: ignore[attr-defined]
    assert f"BYTES element {count - 1} declares 2 bytes but only 1 remain" in error.details()  # type: ignore[attr-defined]
    # The message is ~10 MB and is held about three times (grpcio's buffer, the parsed message, the raw
    # contents' bytes): ~30 MB whatever the decoder does. Building the 2 M elements would add ~86 MB more
    # (bytes objects and the object array), ~115 MB in all; 6x the message tells the two apart with margin
    # for the shared server's allocator noise.
    assert _rss(examples_server) - before < 6 * len(raw)

    text = grpcclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"ab", b"c"], dtype=object))
    result = client.infer("text_stats", [text])
    assert list(result.as_numpy("length")) == [2, 1]
