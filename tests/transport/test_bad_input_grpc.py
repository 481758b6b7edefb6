"""Bad gRPC requests through the real server: each gets a client-error status (never INTERNAL/UNKNOWN) whose
details name what was wrong, leak no traceback or path, and the next good request still succeeds."""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.server_process import EXAMPLES, REPO_ROOT, ServerProcess, running_server

_LEAKS = ("Traceback", 'File "', "site-packages", "/work/", str(REPO_ROOT), "/usr/", "/home/", "/tmp/")
_CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
}
_MIB = 1 << 20
_SMALL_LIMIT = 1 << 20

ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)

Stub = Any


# -- helpers ------------------------------------------------------------------------------------------


def _request(
    model: str = "iris",
    *,
    version: str = "",
    datatype: str = "FP32",
    shape: Sequence[int] = (1, 4),
    raw: Sequence[bytes] | None = (ROW.tobytes(),),
    fp32_contents: Sequence[float] | None = None,
    outputs: Sequence[str] = (),
    name: str = "input-0",
) -> Any:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if fp32_contents is not None:
        tensor.contents.fp32_contents.extend(fp32_contents)
    if raw is not None:
        request.raw_input_contents.extend(raw)
    for output in outputs:
        request.outputs.add(name=output)
    return request


def _add_input(request: Any, name: str, datatype: str, shape: Sequence[int], raw: bytes | None = None) -> Any:
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def assert_clean_details(details: str, *fragments: str) -> None:
    assert details
    for fragment in fragments:
        assert fragment in details, f"{fragment!r} not in {details!r}"
    for leak in _LEAKS:
        assert leak not in details, f"status details leak {leak!r}: {details!r}"


def assert_rpc_error(call: Callable[[], Any], code: grpc.StatusCode | set[grpc.StatusCode], *fragments: str) -> str:
    codes = code if isinstance(code, set) else {code}
    assert codes <= _CLIENT_ERRORS
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() in codes, f"{error.code()}: {error.details()}"
    details = error.details()
    assert_clean_details(details, *fragments)
    return str(details)


def assert_good_request_works(stub: Stub) -> None:
    response = stub.ModelInfer(_request(), timeout=10)
    assert [o.name for o in response.outputs] == ["label", "probabilities"]
    assert np.frombuffer(response.raw_output_contents[0], dtype=np.int64).tolist() == [0]
    assert len(response.raw_output_contents[1]) == 3 * 4


def _rss(server: ServerProcess) -> int:
    assert server.process is not None
    return int(psutil.Process(server.process.pid).memory_info().rss)


@pytest.fixture
def stub(examples_server: ServerProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(examples_server.grpc_address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


# -- ModelInfer -----------------------------------------------------------------------------------------


def _two_inputs_one_raw() -> Any:
    return _add_input(_request(), "input-1", "FP32", [1, 4])


def _raw_plus_contents() -> Any:
    request = _request()
    _add_input(request, "input-1", "FP32", [1, 4]).inputs[1].contents.fp32_contents.extend([1, 2, 3, 4])
    return request


def _with_parameter(key: str, **value: Any) -> Any:
    request = _request()
    request.parameters[key].CopyFrom(pb.InferParameter(**value))
    return request


def _classification(**value: Any) -> Any:
    request = _request(outputs=["probabilities"])
    request.outputs[0].parameters["classification"].CopyFrom(pb.InferParameter(**value))
    return request


INVALID = grpc.StatusCode.INVALID_ARGUMENT
_CASES: list[tuple[str, Callable[[], Any], grpc.StatusCode | set[grpc.StatusCode], tuple[str, ...]]] = [
    ("unknown-model", lambda: _request("no_such_model"), grpc.StatusCode.NOT_FOUND, ("no_such_model",)),
    ("unknown-version", lambda: _request(version="7"), grpc.StatusCode.NOT_FOUND, ("version 7", "['1']")),
    (
        "wrong-datatype",
        lambda: _request(datatype="FP64", raw=[ROW.astype(np.float64).tobytes()]),
        INVALID,
        ("input-0", "'FP64'", "expects 'FP32'"),
    ),
    (
        "wrong-shape",
        lambda: _request(shape=(1, 5), raw=[bytes(20)]),
        INVALID,
        ("input-0", "[1, 5]", "expects [-1, 4]"),
    ),
    (
        "batch-over-max",
        lambda: _request(shape=(65, 4), raw=[bytes(65 * 16)]),
        INVALID,
        ("batch size 65", "1..64"),
    ),
    (
        "contents-count-mismatch",
        lambda: _request(raw=None, fp32_contents=[1.0, 2.0, 3.0]),
        INVALID,
        ("input-0", "fp32_contents has 3 elements", "needs 4"),
    ),
    (
        "raw-wrong-size",
        lambda: _request(raw=[ROW.tobytes()[:8]]),
        INVALID,
        ("input-0", "8 bytes", "needs 16 bytes"),
    ),
    (
        "contents-and-raw",
        lambda: _request(fp32_contents=[1.0, 2.0, 3.0, 4.0]),
        INVALID,
        ("input-0", "contents", "raw_input_contents"),
    ),
    ("contents-and-raw-on-another-input", _raw_plus_contents, INVALID, ("input-1", "raw_input_contents")),
    ("missing-raw-entry", _two_inputs_one_raw, INVALID, ("2 inputs", "1 raw_input_contents")),
    (
        "extra-raw-entry",
        lambda: _request(raw=[ROW.tobytes(), ROW.tobytes()]),
        INVALID,
        ("2 raw_input_contents for 1 inputs",),
    ),
    ("missing-input", lambda: pb.ModelInferRequest(model_name="iris"), INVALID, ("'input-0'", "does not carry")),
    (
        "unknown-input",
        lambda: _add_input(_request(), "input-9", "FP32", [1, 4], ROW.tobytes()),
        INVALID,
        ("unexpected inference input 'input-9'",),
    ),
    (
        "duplicate-input",
        lambda: _add_input(_request(), "input-0", "FP32", [1, 4], ROW.tobytes()),
        INVALID,
        ("input-0", "twice"),
    ),
    (
        "unknown-output",
        lambda: _request(outputs=["bogus"]),
        INVALID,
        ("unexpected inference output 'bogus'", "'label', 'probabilities'"),
    ),
    ("negative-dims", lambda: _request(shape=(-1, 4)), INVALID, ("input-0", "negative dimension")),
    ("unknown-datatype", lambda: _request(datatype="FLOAT"), INVALID, ("'FLOAT'", "FP32")),
    (
        "fp16-in-contents",
        lambda: _request(datatype="FP16", raw=None, fp32_contents=[1, 2, 3, 4]),
        INVALID,
        ("input-0", "FP16", "raw_input_contents"),
    ),
    (
        "huge-shape",
        lambda: _request(shape=(2**40,)),
        {INVALID},
        ("input-0", str(2**40), "bytes but shape"),
    ),
    (
        "huge-shape-2d",
        lambda: _request(shape=(2**32, 2**32)),
        {INVALID},
        ("input-0", str(2**32), "bytes but shape"),
    ),
    (
        "zero-size-huge-dims",
        lambda: _request(shape=(0, 2**62), raw=[b""]),
        {INVALID, grpc.StatusCode.RESOURCE_EXHAUSTED},
        ("input-0", str(2**62)),
    ),
    (
        "triton-parameter",
        lambda: _with_parameter("triton_x", bool_param=True),
        INVALID,
        ("triton_x", "reserved"),
    ),
    ("parameter-without-value", lambda: _with_parameter("custom"), INVALID, ("'custom'", "no value")),
    (
        "negative-priority",
        lambda: _with_parameter("priority", int64_param=-1),
        INVALID,
        ("priority", "non-negative"),
    ),
    (
        "classification-string",
        lambda: _classification(string_param="2"),
        INVALID,
        ("probabilities", "classification", "positive integer"),
    ),
    (
        "classification-double",
        lambda: _classification(double_param=1.5),
        INVALID,
        ("probabilities", "classification", "positive integer"),
    ),
    (
        "too-many-outputs",
        lambda: _request(outputs=["label"] * 100_000),
        {INVALID, grpc.StatusCode.RESOURCE_EXHAUSTED},
        ("100000 outputs",),
    ),
]


@pytest.mark.parametrize(
    ("make_request", "code", "fragments"), [pytest.param(*case[1:], id=case[0]) for case in _CASES]
)
def test_bad_infer_request_is_a_client_error(
    stub: Stub,
    make_request: Callable[[], Any],
    code: grpc.StatusCode | set[grpc.StatusCode],
    fragments: tuple[str, ...],
) -> None:
    request = make_request()
    assert_rpc_error(lambda: stub.ModelInfer(request, timeout=10), code, *fragments)
    assert_good_request_works(stub)


_TEXT_CASES = [
    ("prefix-past-end", [1], struct.pack("<I", 100) + b"abc", ("input 'text'", "declares 100 bytes", "3 remain")),
    ("prefix-cut", [2], struct.pack("<I", 2) + b"ab\x01\x00", ("input 'text'", "ends after 1 of 2 elements")),
    ("left-over", [1], struct.pack("<I", 2) + b"abXY", ("input 'text'", "2 bytes left over")),
]


@pytest.mark.parametrize(("shape", "raw", "fragments"), [pytest.param(*c[1:], id=c[0]) for c in _TEXT_CASES])
def test_bad_bytes_raw_input_is_invalid_argument(
    stub: Stub, shape: list[int], raw: bytes, fragments: tuple[str, ...]
) -> None:
    request = _request("text_stats", datatype="BYTES", shape=shape, raw=[raw], name="text")
    assert_rpc_error(lambda: stub.ModelInfer(request, timeout=10), INVALID, *fragments)
    assert_good_request_works(stub)


def test_huge_declared_shapes_allocate_nothing(examples_server: ServerProcess, stub: Stub) -> None:
    """Shapes of 2^40 elements and a BYTES count of 2^26 with a 4-byte buffer: refused at once, RSS flat."""
    requests = [
        _request(shape=(2**40,)),
        _request(shape=(2**32, 2**32)),
        _request("text_stats", datatype="BYTES", shape=[2**26], raw=[struct.pack("<I", 0)], name="text"),
    ]
    before = _rss(examples_server)
    started = time.monotonic()
    for request in requests:
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
        assert caught.value.code() in (INVALID, grpc.StatusCode.RESOURCE_EXHAUSTED), caught.value.details()
    assert time.monotonic() - started < 2.0
    assert _rss(examples_server) - before < 50 * _MIB
    assert_good_request_works(stub)


# -- model names ------------------------------------------------------------------------------------------

_BAD_NAMES = ["..", "../iris", "a/b", "iris\x00", "\x00", ".hidden", "..\\..\\etc", "x" * 200, ""]


@pytest.mark.parametrize("name", _BAD_NAMES, ids=[ascii(n)[:20] for n in _BAD_NAMES])
def test_bad_model_names_are_client_errors_on_every_rpc(stub: Stub, name: str) -> None:
    expected = {INVALID, grpc.StatusCode.NOT_FOUND}
    calls: list[Callable[[], Any]] = [
        lambda: stub.ModelInfer(_request(name), timeout=10),
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=10),
        lambda: stub.ModelConfig(pb.ModelConfigRequest(name=name), timeout=10),
        lambda: stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10),
        lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name), timeout=10),
        lambda: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=name), timeout=10),
    ]
    for call in calls:
        details = assert_rpc_error(call, expected)
        assert "invalid model name" in details or "unknown model" in details, details
    assert_good_request_works(stub)


@pytest.mark.parametrize("rpc", ["RepositoryModelLoad", "RepositoryModelUnload"])
def test_load_unload_of_a_valid_name_names_the_control_mode(stub: Stub, rpc: str) -> None:
    message = getattr(pb, f"{rpc}Request")(model_name="iris")
    assert_rpc_error(
        lambda: getattr(stub, rpc)(message, timeout=10), grpc.StatusCode.PERMISSION_DENIED, "--model-control-mode"
    )
    assert_good_request_works(stub)


def test_bad_version_is_a_client_error(stub: Stub) -> None:
    for version in ("..", "-1", "1\x00", "a/b"):
        assert_rpc_error(
            lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="iris", version=version), timeout=10),
            INVALID,
            "invalid model version",
        )
    # A name-shaped version is an alias; an unknown one is NOT_FOUND and lists the aliases there are.
    assert_rpc_error(
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="iris", version="latest"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "no version or alias 'latest'",
    )
    assert_rpc_error(
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="iris", version="7"), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "version 7 is not found",
    )
    assert_good_request_works(stub)


# -- streaming and the tritonclient client ------------------------------------------------------------------


def test_stream_reports_a_bad_request_and_stays_open(stub: Stub) -> None:
    bad = _request(datatype="FP64", raw=[ROW.astype(np.float64).tobytes()])
    bad.id = "bad"
    good = _request()
    good.id = "good"
    replies = list(stub.ModelStreamInfer(iter([bad, good]), timeout=10))
    assert len(replies) == 2
    by_id = {r.infer_response.id: r for r in replies}
    assert_clean_details(by_id["bad"].error_message, "input-0", "FP64", "expects 'FP32'")
    assert by_id["good"].error_message == ""
    assert np.frombuffer(by_id["good"].infer_response.raw_output_contents[0], dtype=np.int64).tolist() == [0]


def test_tritonclient_grpc_sees_not_found_then_succeeds(examples_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(examples_server.grpc_address)
    try:
        infer_input = grpcclient.InferInput("input-0", [1, 4], "FP32")
        infer_input.set_data_from_numpy(ROW)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("no_such_model", [infer_input])
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        assert_clean_details(caught.value.message(), "no_such_model")
        wrong = grpcclient.InferInput("input-0", [1, 4], "FP64")
        wrong.set_data_from_numpy(ROW.astype(np.float64))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("iris", [wrong])
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert_clean_details(caught.value.message(), "FP64", "expects 'FP32'")
        result = client.infer("iris", [infer_input])
        assert result.as_numpy("label").reshape(-1).tolist() == [0]
    finally:
        client.close()


# -- message size -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """iris alone, with a 1 MiB request limit."""
    repository = tmp_path_factory.mktemp("grpc_small_limit_repo")
    shutil.copytree(EXAMPLES / "iris", repository / "iris")
    with running_server(repository, ["--max-request-bytes", str(_SMALL_LIMIT)]) as server:
        yield server


def test_message_over_max_request_bytes_is_resource_exhausted(small_server: ServerProcess) -> None:
    rows = 2 * _SMALL_LIMIT // 16  # 2 MiB of FP32 rows
    request = _request(shape=(rows, 4), raw=[bytes(rows * 16)])
    with grpc.insecure_channel(small_server.grpc_address) as channel:
        small_stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert_rpc_error(lambda: small_stub.ModelInfer(request, timeout=10), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert_good_request_works(small_stub)
