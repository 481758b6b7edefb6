"""The flows of NVIDIA's example clients, written as our own tests: tritonclient HTTP and gRPC against models
shaped like Triton's examples (tests/triton_repository.py). Sync and async infer on INT32, INT8 and
BYTES tensors, JSON and binary outputs, explicit gRPC contents and the BYTES identity."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2

from tests.server_process import ServerProcess, running_server
from tests.triton_repository import triton_example_repository

MODULES = pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = triton_example_repository(tmp_path_factory.mktemp("triton-repo"))
    with running_server(root) as server:
        yield server


def _client(module: ModuleType, server: ServerProcess) -> Any:
    return module.InferenceServerClient(server.http_address if module is httpclient else server.grpc_address)


def _pair(module: ModuleType, first: np.ndarray, second: np.ndarray, datatype: str) -> list[Any]:
    inputs = [module.InferInput(name, list(first.shape), datatype) for name in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(first)
    inputs[1].set_data_from_numpy(second)
    return inputs


@MODULES
@pytest.mark.parametrize("binary", [True, False], ids=["binary-output", "json-output"])
def test_simple_sums_and_differences(triton_server: ServerProcess, module: ModuleType, binary: bool) -> None:
    first = np.arange(16, dtype=np.int32).reshape(1, 16)
    second = np.ones((1, 16), dtype=np.int32)
    if module is httpclient:
        outputs = [module.InferRequestedOutput(name, binary_data=binary) for name in ("OUTPUT0", "OUTPUT1")]
    else:
        outputs = [module.InferRequestedOutput(name) for name in ("OUTPUT0", "OUTPUT1")]
    result = _client(module, triton_server).infer("simple", _pair(module, first, second, "INT32"), outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), first + second)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), first - second)
    assert result.as_numpy("OUTPUT0").dtype == np.int32


@MODULES
def test_simple_int8_wraps_as_int8_does(triton_server: ServerProcess, module: ModuleType) -> None:
    first = np.full((1, 16), 100, dtype=np.int8)
    second = np.full((1, 16), 100, dtype=np.int8)
    result = _client(module, triton_server).infer("simple_int8", _pair(module, first, second, "INT8"))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), first + second)  # 200 wraps to -56
    assert result.as_numpy("OUTPUT0").dtype == np.int8


def test_async_infer_over_http_answers_every_request(triton_server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_address, concurrency=4)
    first = np.arange(16, dtype=np.int32).reshape(1, 16)
    pending = [
        client.async_infer("simple", _pair(httpclient, first + k, first, "INT32"), request_id=str(k)) for k in range(8)
    ]
    for k, request in enumerate(pending):
        result = request.get_result(timeout=30)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.full((1, 16), k, dtype=np.int32))
        assert result.get_response()["id"] == str(k)
    client.close()


def test_async_infer_over_grpc_calls_back_for_every_request(triton_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_address)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    first = np.arange(16, dtype=np.int32).reshape(1, 16)
    for k in range(8):
        client.async_infer(
            "simple",
            _pair(grpcclient, first + k, first, "INT32"),
            callback=lambda result, error: answers.put((result, error)),
            request_id=str(k),
        )
    seen = set()
    for _ in range(8):
        result, error = answers.get(timeout=30)
        assert error is None
        k = int(result.get_response().id)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.full((1, 16), k, dtype=np.int32))
        seen.add(k)
    assert seen == set(range(8))


@MODULES
def test_simple_string_adds_decimal_strings(triton_server: ServerProcess, module: ModuleType) -> None:
    first = np.array([[str(k).encode() for k in range(16)]], dtype=object)
    second = np.array([[b"1"] * 16], dtype=object)
    result = _client(module, triton_server).infer("simple_string", _pair(module, first, second, "BYTES"))
    assert [int(v) for v in result.as_numpy("OUTPUT0")[0]] == [k + 1 for k in range(16)]
    assert [int(v) for v in result.as_numpy("OUTPUT1")[0]] == [k - 1 for k in range(16)]


@MODULES
def test_simple_identity_returns_bytes_unchanged(triton_server: ServerProcess, module: ModuleType) -> None:
    data = np.array([["\u00e9t\u00e9".encode(), b"", b"\x00binary\xff"]], dtype=object)
    if module is httpclient:  # non-UTF-8 bytes travel only in the binary form over REST
        data = data[:, :2]
    inp = module.InferInput("INPUT0", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    result = _client(module, triton_server).infer("simple_identity", [inp])
    assert result.as_numpy("OUTPUT0").tolist() == data.tolist()


def test_grpc_explicit_contents_are_read_like_raw_contents(triton_server: ServerProcess) -> None:
    """Inputs in ``InferTensorContents`` (int_contents, bytes_contents) instead of raw_input_contents."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_address)  # holds the channel open
    stub = client._client_stub
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents.extend(range(16))
    response = stub.ModelInfer(request, timeout=30)
    sums = np.frombuffer(response.raw_output_contents[0], dtype=np.int32)
    np.testing.assert_array_equal(sums, np.arange(16) * 2)

    request = service_pb2.ModelInferRequest(model_name="simple_string")
    for name, value in (("INPUT0", b"7"), ("INPUT1", b"2")):
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[1, 16])
        tensor.contents.bytes_contents.extend([value] * 16)
    response = stub.ModelInfer(request, timeout=30)
    assert [output.name for output in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    first = response.raw_output_contents[0]
    assert first[4:5] == b"9"  # length prefix, then the sum's text
