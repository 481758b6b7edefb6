"""(Long on purpose: one flat battery of every bad-input case the issue lists, each a few lines; splitting
it would scatter the shared helpers and module-scoped servers.)

Bad REST requests through the real server: each gets a 4xx (never a 5xx) with a JSON ``{"error"}`` that
names what was wrong, leaks no traceback or path, and the next good request on the same server succeeds.

Every client socket closes with SO_LINGER 0 (RST), so no server-side TIME_WAIT outlives a test: the server
fixtures check that their ports are free again after shutdown.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from onnx import TensorProto

from tests.model_builders import write_onnx_add
from tests.server_process import EXAMPLES, REPO_ROOT, ServerProcess, running_server

_RST_ON_CLOSE = (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
_LEAKS = ("Traceback", 'File "', "site-packages", "/work/", str(REPO_ROOT), "/usr/", "/home/", "/tmp/")
_SMALL_LIMIT = 1 << 20  # --max-request-bytes of the dedicated server
_MIB = 1 << 20

GOOD_ROW = [5.1, 3.5, 1.4, 0.2]
GOOD = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": GOOD_ROW}]}
IRIS = "/v2/models/iris/infer"
TEXT = "/v2/models/text_stats/infer"


# -- helpers ------------------------------------------------------------------------------------------


def _client(server: ServerProcess) -> httpx.Client:
    transport = httpx.HTTPTransport(socket_options=[_RST_ON_CLOSE])
    return httpx.Client(base_url=server.http_url, timeout=10.0, transport=transport)


def assert_clean_error(status: int, body: bytes, allowed: Sequence[int], *fragments: str) -> str:
    """A 4xx (or 501) status among ``allowed``, a ``{"error": str}`` body holding every fragment, and no leaks."""
    assert status in allowed, f"status {status}, expected one of {allowed}: {body[:300]!r}"
    assert status < 500 or status == 501, "a 5xx other than 501 (not implemented) is a server fault"
    document = json.loads(body)
    assert isinstance(document, dict) and set(document) == {"error"}, document
    message = document["error"]
    assert isinstance(message, str) and message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    for leak in _LEAKS:
        assert leak not in message, f"error message leaks {leak!r}: {message!r}"
    return message


def check_error(response: httpx.Response, allowed: int | Sequence[int], *fragments: str) -> str:
    codes = [allowed] if isinstance(allowed, int) else list(allowed)
    assert response.headers["content-type"] == "application/json"
    return assert_clean_error(response.status_code, response.content, codes, *fragments)


def assert_good_request_works(server: ServerProcess) -> None:
    """A fresh connection: the server still answers a good request correctly."""
    with _client(server) as client:
        response = client.post(IRIS, json=GOOD)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["label"]["data"] == [0]
    assert outputs["probabilities"]["shape"] == [1, 3]


def _rss(server: ServerProcess) -> int:
    assert server.process is not None
    return int(psutil.Process(server.process.pid).memory_info().rss)


def _read_response(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        assert time.monotonic() < deadline and len(data) < 65536, "no response head"
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"connection closed before a response head: {data!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        assert time.monotonic() < deadline, "response body incomplete"
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return status, headers, body[:length]


def raw_request(port: int, head: str, body: bytes = b"", timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send exact bytes (no client-side path normalisation); returns (status, headers, body)."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.setsockopt(*_RST_ON_CLOSE)
        sock.sendall(head.encode("latin-1") + body)
        return _read_response(sock, deadline)


def _binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    encoded = json.dumps(header).encode()
    return encoded + b"".join(blobs), {"Inference-Header-Content-Length": str(len(encoded))}


def _input(name: str, shape: list[int], datatype: str, data: Any = None, **parameters: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
    if data is not None:
        tensor["data"] = data
    if parameters:
        tensor["parameters"] = parameters
    return tensor


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture
def client(examples_server: ServerProcess) -> Iterator[httpx.Client]:
    with _client(examples_server) as c:
        yield c


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """iris plus an FP16 model, with a 1 MiB request limit."""
    repository = tmp_path_factory.mktemp("small_limit_repo")
    shutil.copytree(EXAMPLES / "iris", repository / "iris")
    write_onnx_add(repository / "add_fp16" / "1" / "model.onnx", width=3, elem=TensorProto.FLOAT16)
    (repository / "add_fp16" / "config.pbtxt").write_text(
        'name: "add_fp16"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "x" data_type: TYPE_FP16 dims: [ 3 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP16 dims: [ 3 ] } ]\n'
    )
    with running_server(Path(repository), ["--max-request-bytes", str(_SMALL_LIMIT)]) as server:
        yield server


# -- JSON requests that do not match the model ----------------------------------------------------------

_JSON_CASES: list[tuple[str, str, dict[str, Any], int | tuple[int, ...], tuple[str, ...]]] = [
    ("unknown-model", "/v2/models/no_such_model/infer", GOOD, 404, ("no_such_model", "repository/index")),
    ("unknown-version", "/v2/models/iris/versions/7/infer", GOOD, 404, ("version 7", "loaded versions: ['1']")),
    (
        "wrong-datatype",
        IRIS,
        {"inputs": [_input("input-0", [1, 4], "FP64", GOOD_ROW)]},
        400,
        ("input-0", "'FP64'", "expects 'FP32'"),
    ),
    (
        "wrong-shape",
        IRIS,
        {"inputs": [_input("input-0", [1, 5], "FP32", [*GOOD_ROW, 1.0])]},
        400,
        ("input-0", "[1, 5]", "expects [-1, 4]"),
    ),
    (
        "batch-over-max",
        IRIS,
        {"inputs": [_input("input-0", [65, 4], "FP32", GOOD_ROW * 65)]},
        400,
        ("input-0", "batch size 65", "1..64", "max_batch_size"),
    ),
    (
        "data-count-mismatch",
        IRIS,
        {"inputs": [_input("input-0", [1, 4], "FP32", GOOD_ROW[:3])]},
        400,
        ("input-0", "3 elements", "[1, 4] needs 4"),
    ),
    ("missing-input", IRIS, {"inputs": []}, 400, ("'input-0'", "does not carry")),
    ("no-inputs-key", IRIS, {"outputs": [{"name": "label"}]}, 400, ("'inputs' list",)),
    (
        "unknown-output",
        IRIS,
        {**GOOD, "outputs": [{"name": "bogus"}]},
        400,
        ("unexpected inference output 'bogus'", "'label', 'probabilities'"),
    ),
    ("duplicate-input", IRIS, {"inputs": GOOD["inputs"] * 2}, 400, ("input-0", "appears twice")),
    (
        "duplicate-output",
        IRIS,
        {**GOOD, "outputs": [{"name": "label"}, {"name": "label"}]},
        400,
        ("'label'", "twice"),
    ),
    (
        "negative-dims",
        IRIS,
        {"inputs": [_input("input-0", [-1, 4], "FP32", GOOD_ROW)]},
        400,
        ("input-0", "negative dimension", ">= 0"),
    ),
    (
        "unknown-datatype",
        IRIS,
        {"inputs": [_input("input-0", [1, 4], "FLOAT", GOOD_ROW)]},
        400,
        ("'FLOAT'", "FP32"),
    ),
    (
        "bf16-json",
        IRIS,
        {"inputs": [_input("input-0", [1, 4], "BF16", GOOD_ROW)]},
        400,
        ("input-0", "BF16", "binary"),
    ),
    (
        "string-in-fp32",
        IRIS,
        {"inputs": [_input("input-0", [1, 4], "FP32", ["a", "b", "c", "d"])]},
        400,
        ("input-0", "only numbers"),
    ),
    (
        "triton-parameter",
        IRIS,
        {**GOOD, "parameters": {"triton_enable_x": True}},
        400,
        ("triton_enable_x", "reserved"),
    ),
    (
        "object-parameter",
        IRIS,
        {**GOOD, "parameters": {"custom": {"nested": 1}}},
        400,
        ("'custom'", "string, number or boolean"),
    ),
    (
        "array-parameter",
        IRIS,
        {**GOOD, "parameters": {"custom": [1, 2]}},
        400,
        ("'custom'", "string, number or boolean"),
    ),
    ("non-string-id", IRIS, {**GOOD, "id": 7}, 400, ("'id'", "string")),
    (
        "classification-float",
        IRIS,
        {**GOOD, "outputs": [{"name": "probabilities", "parameters": {"classification": 1.5}}]},
        400,
        ("probabilities", "classification", "positive integer"),
    ),
    (
        "classification-string",
        IRIS,
        {**GOOD, "outputs": [{"name": "probabilities", "parameters": {"classification": "2"}}]},
        400,
        ("probabilities", "classification", "positive integer"),
    ),
    (
        "classification-zero",
        IRIS,
        {**GOOD, "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}]},
        400,
        ("probabilities", "classification", "positive integer"),
    ),
    (
        "classification-of-bytes",
        TEXT,
        {
            "inputs": [_input("text", [1], "BYTES", ["ab"])],
            "outputs": [{"name": "upper", "parameters": {"classification": 1}}],
        },
        400,
        ("'upper'", "not numeric"),
    ),
    (
        "too-many-outputs",
        IRIS,
        {**GOOD, "outputs": [{"name": "label"}] * 100_000},
        (400, 413),
        ("100000 outputs", "at most"),
    ),
]


@pytest.mark.parametrize(
    ("path", "document", "status", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in _JSON_CASES],
)
def test_bad_json_request_is_a_clear_4xx(
    examples_server: ServerProcess,
    client: httpx.Client,
    path: str,
    document: dict[str, Any],
    status: int | tuple[int, ...],
    fragments: tuple[str, ...],
) -> None:
    check_error(client.post(path, json=document), status, *fragments)
    assert_good_request_works(examples_server)


def test_data_nested_beyond_the_depth_cap(examples_server: ServerProcess, client: httpx.Client) -> None:
    """Valid JSON nested deeper than limits.max_json_depth (64) but within the parser's reach."""
    data: Any = GOOD_ROW
    for _ in range(200):
        data = [data]
    document = {"inputs": [_input("input-0", [1, 4], "FP32", data)]}
    check_error(client.post(IRIS, json=document), 400, "input-0", "nested deeper than")
    assert_good_request_works(examples_server)


def test_data_nested_100000_deep_is_refused(examples_server: ServerProcess, client: httpx.Client) -> None:
    depth = 100_000
    body = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":' + b"[" * depth + b"1.0"
    body += b"]" * depth + b"}]}"
    started = time.monotonic()
    check_error(client.post(IRIS, content=body), 400, "not valid JSON")
    assert time.monotonic() - started < 3.0
    assert_good_request_works(examples_server)


@pytest.mark.parametrize("path", ["/v2/models/no_such_model", "/v2/models/iris/versions/7"], ids=["model", "version"])
def test_unknown_model_metadata_is_404(examples_server: ServerProcess, client: httpx.Client, path: str) -> None:
    check_error(client.get(path), 404)
    check_error(client.get(path + "/config"), 404)
    assert_good_request_works(examples_server)


# -- huge declared shapes: refused before any allocation ----------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [[2**40], [2**32, 2**32], [1, 2**40], [2**62, 2**62, 2**62]],
    ids=["2^40", "2^32x2^32", "1x2^40", "2^62^3"],
)
def test_huge_declared_shape_is_refused_without_allocating(
    examples_server: ServerProcess, client: httpx.Client, shape: list[int]
) -> None:
    before = _rss(examples_server)
    started = time.monotonic()
    response = client.post(IRIS, json={"inputs": [_input("input-0", shape, "FP32", GOOD_ROW)]})
    assert time.monotonic() - started < 2.0
    # 4 values sent cannot fill the shape: a 400 (a mismatch), never a 413 (over a limit, retryable).
    check_error(response, 400, "input-0", str(shape[-1]), "must match the data")
    assert _rss(examples_server) - before < 50 * _MIB
    assert_good_request_works(examples_server)


@pytest.mark.parametrize(
    "shape", [[0, 2**62], [0, 2**31, 2**31, 2**31], [2**40, 0]], ids=["0x2^62", "0x2^93", "2^40x0"]
)
def test_zero_sized_shape_with_huge_dims_is_refused(
    examples_server: ServerProcess, client: httpx.Client, shape: list[int]
) -> None:
    """Zero elements, but dimensions numpy cannot index: a clear 4xx, not numpy's ValueError as a 500."""
    response = client.post(IRIS, json={"inputs": [_input("input-0", shape, "FP32", [])]})
    check_error(response, (400, 413), "input-0", str(shape))
    header = {"inputs": [_input("input-0", shape, "FP32", binary_data_size=0)]}
    body, headers = _binary_body(header)
    check_error(client.post(IRIS, content=body, headers=headers), (400, 413), "input-0", str(shape))
    assert_good_request_works(examples_server)


def test_bytes_input_declaring_many_elements_is_refused_without_allocating(
    examples_server: ServerProcess, client: httpx.Client
) -> None:
    """A BYTES shape of 2^26 elements with a 4-byte blob: refused from the blob size, not after allocating
    an object array of 2^26 entries."""
    count = 2**26
    body, headers = _binary_body(
        {"inputs": [_input("text", [count], "BYTES", binary_data_size=4)]}, struct.pack("<I", 0)
    )
    before = _rss(examples_server)
    started = time.monotonic()
    response = client.post(TEXT, content=body, headers=headers)
    assert time.monotonic() - started < 1.0
    check_error(response, 400, "input 'text'", str(count), "4 bytes")
    assert _rss(examples_server) - before < 50 * _MIB
    assert_good_request_works(examples_server)


# -- malformed bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"inputs": [', "application/json"),
        (b'{"inputs": [}', None),
        (b"", None),
        (b'<?xml version="1.0"?><request><inputs name="input-0"/></request>', "application/xml"),
        (b"\xff\xfe\x00garbage", "application/octet-stream"),
        (b'[{"name": "input-0"}]', "application/json"),
    ],
    ids=["truncated", "broken", "empty", "xml", "binary-garbage", "array"],
)
def test_malformed_body_is_400(
    examples_server: ServerProcess, client: httpx.Client, body: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    message = check_error(client.post(IRIS, content=body, headers=headers), 400)
    assert "JSON" in message
    assert_good_request_works(examples_server)


@pytest.mark.parametrize(
    "content_type", [None, "application/octet-stream", "text/plain"], ids=["none", "octet", "text"]
)
def test_content_type_decides_nothing(examples_server: ServerProcess, content_type: str | None) -> None:
    """tritonclient.http sends JSON with no Content-Type, the aio client with application/octet-stream."""
    head = f"POST {IRIS} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(json.dumps(GOOD))}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    status, _, body = raw_request(examples_server.http_port, head + "\r\n", json.dumps(GOOD).encode())
    assert status == 200, body
    assert {o["name"]: o["data"] for o in json.loads(body)["outputs"]}["label"] == [0]


# -- binary tensor extension --------------------------------------------------------------------------------

_FP32_HEADER = {"inputs": [_input("input-0", [1, 4], "FP32", binary_data_size=16)]}
_ROW = np.array([GOOD_ROW], dtype=np.float32).tobytes()


def _with_header_length(body: bytes, length: int | str) -> tuple[bytes, dict[str, str]]:
    return body, {"Inference-Header-Content-Length": str(length)}


_HEADER_BYTES = json.dumps(_FP32_HEADER).encode()
_BINARY_CASES: list[tuple[str, str, bytes, dict[str, str], tuple[str, ...]]] = [
    (
        "truncated-blob",
        IRIS,
        *_binary_body(_FP32_HEADER, _ROW[:8]),
        ("input-0", "binary_data_size 16", "8 bytes left"),
    ),
    (
        "header-length-past-body",
        IRIS,
        *_with_header_length(_HEADER_BYTES + _ROW, len(_HEADER_BYTES) + 100),
        ("Inference-Header-Content-Length", str(len(_HEADER_BYTES) + 100), "only"),
    ),
    (
        "header-length-not-a-number",
        IRIS,
        *_with_header_length(_HEADER_BYTES + _ROW, "12abc"),
        ("Inference-Header-Content-Length", "not a number"),
    ),
    (
        "header-length-negative",
        IRIS,
        *_with_header_length(_HEADER_BYTES + _ROW, -5),
        ("Inference-Header-Content-Length", ">= 0"),
    ),
    (
        "header-length-splits-json",
        IRIS,
        *_with_header_length(_HEADER_BYTES + _ROW, 10),
        ("not valid JSON",),
    ),
    (
        "trailing-garbage",
        IRIS,
        *_binary_body(_FP32_HEADER, _ROW, b"garbage"),
        ("7 bytes after", "binary_data_size"),
    ),
    (
        "blob-size-mismatch",
        IRIS,
        *_binary_body({"inputs": [_input("input-0", [1, 4], "FP32", binary_data_size=12)]}, _ROW[:12]),
        ("input-0", "12 bytes", "needs 16 bytes"),
    ),
    (
        "data-and-binary",
        IRIS,
        *_binary_body({"inputs": [_input("input-0", [1, 4], "FP32", GOOD_ROW, binary_data_size=16)]}, _ROW),
        ("input-0", "both 'data' and 'binary_data_size'"),
    ),
    (
        "negative-binary-size",
        IRIS,
        *_binary_body({"inputs": [_input("input-0", [1, 4], "FP32", binary_data_size=-16)]}, _ROW),
        ("input-0", "binary_data_size", "non-negative"),
    ),
    (
        "bytes-prefix-past-end",
        TEXT,
        *_binary_body({"inputs": [_input("text", [1], "BYTES", binary_data_size=7)]}, struct.pack("<I", 100), b"abc"),
        ("input 'text'", "declares 100 bytes", "only 3 remain"),
    ),
    (
        "bytes-prefix-cut",
        TEXT,
        *_binary_body(
            {"inputs": [_input("text", [2], "BYTES", binary_data_size=9)]}, struct.pack("<I", 2), b"ab", b"\x01\x00\x00"
        ),
        ("input 'text'", "ends after 1 of 2 elements", "length prefix"),
    ),
    (
        "bytes-left-over",
        TEXT,
        *_binary_body({"inputs": [_input("text", [1], "BYTES", binary_data_size=8)]}, struct.pack("<I", 2), b"abXY"),
        ("input 'text'", "2 bytes left over"),
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in _BINARY_CASES],
)
def test_bad_binary_body_is_400(
    examples_server: ServerProcess,
    client: httpx.Client,
    path: str,
    body: bytes,
    headers: dict[str, str],
    fragments: tuple[str, ...],
) -> None:
    check_error(client.post(path, content=body, headers=headers), 400, *fragments)
    assert_good_request_works(examples_server)


# -- model names in URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v2/repository/models/../load", (400, 404)),
        ("POST", "/v2/repository/models/%2e%2e/load", (400,)),
        ("POST", "/v2/repository/models/%2E%2E/unload", (400,)),
        ("POST", "/v2/repository/models/a/b/load", (404,)),
        ("POST", "/v2/repository/models/a%2fb/load", (400, 404)),
        ("POST", "/v2/repository/models/..%2f..%2fetc/load", (400, 404)),
        ("POST", "/v2/repository/models/iris%00/load", (400,)),
        ("POST", "/v2/repository/models/%00/unload", (400,)),
        ("POST", "/v2/repository/models/.hidden/load", (400,)),
        ("POST", "/v2/models/../infer", (400, 404)),
        ("POST", "/v2/models/%2e%2e/infer", (400,)),
        ("POST", "/v2/models/a%2fb/infer", (400, 404)),
        ("POST", "/v2/models/iris%00/infer", (400,)),
        ("POST", "/v2/models/..%2f..%2fetc%2fpasswd/infer", (400, 404)),
        ("GET", "/v2/models/%2e%2e", (400,)),
        ("GET", "/v2/models/%2e%2e/config", (400,)),
        ("GET", "/v2/models/iris%00", (400,)),
        ("GET", "/v2/models/iris%00/ready", (400,)),
        ("GET", "/v2/models/..%2f..%2fetc%2fpasswd", (400, 404)),
        ("GET", "/v2/models/iris/versions/..", (400,)),
        ("GET", "/v2/models/iris/versions/%2e%2e/stats", (400,)),
        ("GET", "/v2/models/iris/versions/1%00", (400,)),
    ],
)
def test_bad_model_name_in_url_is_4xx(
    examples_server: ServerProcess, method: str, path: str, allowed: tuple[int, ...]
) -> None:
    body = json.dumps(GOOD).encode() if path.endswith("infer") else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    status, headers, response = raw_request(examples_server.http_port, head, body)
    assert headers["content-type"] == "application/json"
    message = assert_clean_error(status, response, allowed)
    if status == 400:
        assert "invalid model" in message, message
    assert_good_request_works(examples_server)


@pytest.mark.parametrize("action", ["load", "unload"])
def test_load_unload_of_a_valid_name_names_the_control_mode(
    examples_server: ServerProcess, client: httpx.Client, action: str
) -> None:
    check_error(client.post(f"/v2/repository/models/iris/{action}"), 403, "--model-control-mode")
    assert_good_request_works(examples_server)


# -- request size and compression -----------------------------------------------------------------------------


def _bomb(uncompressed: int, wbits: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    zeros = bytes(4 * _MIB)
    out = [compressor.compress(zeros) for _ in range(uncompressed // len(zeros))]
    return b"".join([*out, compressor.flush()])


def test_body_over_max_request_bytes_is_413(small_server: ServerProcess) -> None:
    with _client(small_server) as c:
        check_error(c.post(IRIS, content=b" " * (2 * _MIB)), 413, str(_SMALL_LIMIT), "max_request_bytes")
    assert_good_request_works(small_server)


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 16 + zlib.MAX_WBITS), ("deflate", zlib.MAX_WBITS)])
def test_compression_bomb_is_413_quickly_with_bounded_memory(
    small_server: ServerProcess, encoding: str, wbits: int
) -> None:
    bomb = _bomb(200 * _MIB, wbits)
    assert len(bomb) < _SMALL_LIMIT  # the compressed body itself is within the limit
    before = _rss(small_server)
    started = time.monotonic()
    with _client(small_server) as c:
        response = c.post(IRIS, content=bomb, headers={"Content-Encoding": encoding})
    assert time.monotonic() - started < 2.0
    check_error(response, 413, "max_request_bytes")
    assert _rss(small_server) - before < 50 * _MIB
    assert_good_request_works(small_server)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("GZIP", gzip.compress), ("identity", lambda b: b)],
)
def test_compressed_request_body_is_accepted(
    examples_server: ServerProcess, client: httpx.Client, encoding: str, compress: Any
) -> None:
    plain = client.post(IRIS, json=GOOD)
    assert plain.status_code == 200
    response = client.post(IRIS, content=compress(json.dumps(GOOD).encode()), headers={"Content-Encoding": encoding})
    assert response.status_code == 200, response.text
    assert response.json() == plain.json()


def test_compressed_binary_request_splits_after_decompressing(client: httpx.Client) -> None:
    body, headers = _binary_body(_FP32_HEADER, _ROW)
    response = client.post(IRIS, content=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert {o["name"]: o["data"] for o in response.json()["outputs"]}["label"] == [0]


_PLAIN = json.dumps(GOOD).encode()


@pytest.mark.parametrize(
    ("encoding", "body", "fragments"),
    [
        ("gzip", gzip.compress(_PLAIN)[:-12], ("truncated",)),
        ("gzip", b"this is not gzip at all", ("not valid gzip",)),
        ("deflate", gzip.compress(_PLAIN), ("not valid deflate",)),
        ("gzip", gzip.compress(_PLAIN) + b"junk", ("after the end of the gzip",)),
        ("deflate", zlib.compress(_PLAIN) + b"junk", ("after the end of the deflate",)),
    ],
    ids=["truncated", "garbage", "gzip-as-deflate", "gzip-trailing", "deflate-trailing"],
)
def test_corrupt_compressed_body_is_400(
    examples_server: ServerProcess, client: httpx.Client, encoding: str, body: bytes, fragments: tuple[str, ...]
) -> None:
    check_error(client.post(IRIS, content=body, headers={"Content-Encoding": encoding}), 400, *fragments)
    assert_good_request_works(examples_server)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
def test_unknown_content_encoding_is_refused_with_accept_encoding(
    examples_server: ServerProcess, client: httpx.Client, encoding: str
) -> None:
    response = client.post(IRIS, content=_PLAIN, headers={"Content-Encoding": encoding})
    check_error(response, (415, 501), encoding, "gzip", "deflate")
    assert "gzip" in response.headers["accept-encoding"]
    assert_good_request_works(examples_server)


def test_million_one_byte_chunks_are_handled_and_the_server_survives(examples_server: ServerProcess) -> None:
    chunk = b"1\r\nA\r\n"
    writes, per_write = 10, 100_000  # one million chunks in ten large writes
    deadline = time.monotonic() + 15.0
    with socket.create_connection(("127.0.0.1", examples_server.http_port), timeout=15.0) as sock:
        sock.setsockopt(*_RST_ON_CLOSE)
        sock.sendall(f"POST {IRIS} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(writes):
                sock.sendall(chunk * per_write)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early: the response is already waiting
        status, _, body = _read_response(sock, deadline)
    assert time.monotonic() < deadline
    # Handled (1 MB of "A" is not JSON: 400) or refused for its piece count (413); never a 5xx.
    assert_clean_error(status, body, (400, 413))
    assert_good_request_works(examples_server)


# -- FP16 in JSON --------------------------------------------------------------------------------------------


def test_fp16_in_json_is_accepted_as_numbers(small_server: ServerProcess) -> None:
    """The server takes FP16 JSON numbers (a superset of Triton, which refuses them) and answers in JSON."""
    document = {"inputs": [_input("x", [1, 3], "FP16", [1.0, 2.5, 3])]}
    with _client(small_server) as c:
        response = c.post("/v2/models/add_fp16/infer", json=document)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output == {"name": "y", "datatype": "FP16", "shape": [1, 3], "data": [2.0, 5.0, 6.0]}


def test_fp16_non_number_in_json_is_400(small_server: ServerProcess) -> None:
    document = {"inputs": [_input("x", [1, 3], "FP16", [1.0, "x", 3])]}
    with _client(small_server) as c:
        check_error(c.post("/v2/models/add_fp16/infer", json=document), 400, "input 'x'", "numbers")
    assert_good_request_works(small_server)


# -- response compression and tritonclient ----------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "decompress"), [("gzip", gzip.decompress), ("deflate", zlib.decompress)])
def test_accept_encoding_compresses_the_infer_response(client: httpx.Client, encoding: str, decompress: Any) -> None:
    rows = 16
    document = {"inputs": [_input("input-0", [rows, 4], "FP32", GOOD_ROW * rows)]}
    plain = client.post(IRIS, json=document, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    with client.stream("POST", IRIS, json=document, headers={"Accept-Encoding": encoding}) as response:
        raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert response.headers["content-encoding"] == encoding
    assert json.loads(decompress(raw)) == plain.json()
    assert len(raw) < len(plain.content)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_http_request_compression(examples_server: ServerProcess, algorithm: str) -> None:
    import tritonclient.http as httpclient

    x = np.array([GOOD_ROW, [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    client = httpclient.InferenceServerClient(examples_server.http_address)
    try:
        results = []
        for binary in (True, False):
            infer_input = httpclient.InferInput("input-0", list(x.shape), "FP32")
            infer_input.set_data_from_numpy(x, binary_data=binary)
            result = client.infer(
                "iris",
                [infer_input],
                request_compression_algorithm=algorithm,
                response_compression_algorithm=algorithm,
            )
            results.append(result)
    finally:
        client.close()
    for result in results:
        assert result.as_numpy("label").reshape(-1).tolist() == [0, 2]
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (2, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_error_bodies_never_carry_a_path_even_for_unknown_routes(client: httpx.Client) -> None:
    for path in ("/v2/nowhere", "/v3/models", "/v2/models/iris/infer/extra"):
        check_error(client.get(path), (404, 405))
    response = client.get(IRIS)
    check_error(response, 405, "POST")
    assert response.headers["allow"] == "POST"
