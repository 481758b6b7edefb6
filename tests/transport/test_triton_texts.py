"""What Triton's clients check, through the real server with tritonclient HTTP and gRPC.

Triton's example clients match on the first words of an error ("Request for unknown model", "failed to
load") and on ``name == "triton"`` in server metadata; a model that is unknown, unloaded or loading is
*not ready* (REST 400, gRPC ``ready: false``), never an error status; a request that names a served model
but carries a bad tensor counts as a failed request of that model in the statistics and in
``nv_inference_request_failure``; server readiness that is false because a model failed says which one.
Every error case is followed by a good request that still succeeds.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from tests.model_builders import write_python_model
from tests.server_process import ServerProcess, free_port, running_server
from tests.transport.test_health_port import SLOW_CONFIG, SLOW_MODEL
from tests.triton_repository import triton_example_repository
from tests.waiting import wait_until

TIMEOUT_S = 10.0
Client = httpclient.InferenceServerClient | grpcclient.InferenceServerClient


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = triton_example_repository(tmp_path_factory.mktemp("triton") / "models")
    args = ["--model-control-mode", "explicit", "--load-model", "simple", "--server-name", "triton"]
    with running_server(repo, args) as running:
        yield running


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, server: ServerProcess) -> Client:
    if request.param == "http":
        return httpclient.InferenceServerClient(server.http_address, network_timeout=TIMEOUT_S)
    return grpcclient.InferenceServerClient(server.grpc_address)


def _module(client: Client) -> Any:
    return httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient


def _inputs(
    client: Client,
    *,
    shape: tuple[int, ...] = (1, 16),
    datatype: str = "INT32",
    names: tuple[str, ...] = ("INPUT0", "INPUT1"),
) -> list[Any]:
    module = _module(client)
    dtype = {"INT32": np.int32, "FP32": np.float32}[datatype]
    inputs = []
    for name in names:
        tensor = module.InferInput(name, list(shape), datatype)
        tensor.set_data_from_numpy(np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape))
        inputs.append(tensor)
    return inputs


def _error_of(call: Callable[[], object]) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return str(raised.value.message())


def _assert_simple_works(client: Client) -> None:
    result = client.infer("simple", _inputs(client))
    row = np.arange(16, dtype=np.int32)
    assert (result.as_numpy("OUTPUT0") == row * 2).all() and not result.as_numpy("OUTPUT1").any()


# -- server identity -------------------------------------------------------------------------------------


def test_server_name_is_what_metadata_reports(client: Client) -> None:
    metadata = client.get_server_metadata()
    name = metadata["name"] if isinstance(metadata, dict) else metadata.name
    assert name == "triton"


def test_the_default_server_name_is_modelserve(tmp_path: Path) -> None:
    with running_server(triton_example_repository(tmp_path / "models")) as default:
        assert httpx.get(f"{default.http_url}/v2", timeout=TIMEOUT_S).json()["name"] == "modelserve"


# -- unknown model and version -----------------------------------------------------------------------------


def test_an_unknown_model_answers_with_tritons_words(client: Client) -> None:
    for call in (
        lambda: client.infer("wrong_model_name", _inputs(client)),
        lambda: client.get_model_metadata("wrong_model_name"),
        lambda: client.get_model_config("wrong_model_name"),
    ):
        message = _error_of(call)
        assert message.startswith("Request for unknown model: 'wrong_model_name' is not found. "), message
        assert "GET /v2/repository/index lists the models" in message
    _assert_simple_works(client)


def test_an_unknown_version_answers_with_tritons_words(client: Client) -> None:
    message = _error_of(lambda: client.infer("simple", _inputs(client), model_version="3"))
    assert message.startswith("Request for unknown model: 'simple' version 3 is not found. "), message
    assert "loaded versions: ['1']" in message
    _assert_simple_works(client)


def test_a_model_that_is_not_loaded_has_no_available_versions(client: Client) -> None:
    message = _error_of(lambda: client.get_model_metadata("simple_int8"))
    assert message.startswith("Request for unknown model: 'simple_int8' has no available versions. "), message
    assert "POST /v2/repository/models/simple_int8/load" in message  # explicit mode: the load API is the way


def test_loading_an_unknown_name_fails_to_load(client: Client) -> None:
    message = _error_of(lambda: client.load_model("wrong_model_name"))
    assert message.startswith("failed to load 'wrong_model_name', failed to poll from model repository"), message
    assert "No folder 'wrong_model_name' in the model repository" in message
    _assert_simple_works(client)


# -- model readiness --------------------------------------------------------------------------------------


def test_unknown_models_and_versions_are_not_ready_and_not_errors(server: ServerProcess, client: Client) -> None:
    assert client.is_model_ready("simple") and client.is_model_ready("simple", "1")
    # Unknown, known but never loaded, an unknown version: false, never an exception (gRPC: not NOT_FOUND).
    assert not client.is_model_ready("wrong_model_name")
    assert not client.is_model_ready("simple_int8")
    assert not client.is_model_ready("simple", "3")
    _assert_simple_works(client)


def test_rest_model_ready_answers_400_with_the_reason(server: ServerProcess) -> None:
    def ready(path: str) -> httpx.Response:
        return httpx.get(f"{server.http_url}/v2/models/{path}/ready", timeout=TIMEOUT_S)

    assert ready("simple").status_code == 200
    unknown = ready("wrong_model_name")
    assert unknown.status_code == 400
    assert unknown.json()["error"].startswith("Request for unknown model: 'wrong_model_name' is not found")
    not_loaded = ready("simple_int8")
    assert not_loaded.status_code == 400
    assert not_loaded.json()["error"].startswith("Model version not ready. Model 'simple_int8' is not ready")
    assert "UNKNOWN" in not_loaded.json()["error"]
    no_version = ready("simple/versions/3")
    assert no_version.status_code == 400 and "Model 'simple' version 3 is not ready" in no_version.json()["error"]
    malformed = ready(".hidden")  # a name that cannot be a model is the client's error, not "not ready"
    assert malformed.status_code == 400 and "invalid model name" in malformed.json()["error"]


def test_an_unloaded_model_is_not_ready_and_the_server_stays_ready(tmp_path: Path) -> None:
    repo = triton_example_repository(tmp_path / "models")
    with running_server(repo, ["--model-control-mode", "explicit", "--load-model", "simple"]) as server:
        http = httpclient.InferenceServerClient(server.http_address, network_timeout=TIMEOUT_S)
        grpc_client = grpcclient.InferenceServerClient(server.grpc_address)
        http.unload_model("simple")
        wait_until(lambda: not http.is_model_ready("simple"), what="simple to be unloaded")
        assert not grpc_client.is_model_ready("simple") and not grpc_client.is_model_ready("simple", "1")
        answer = httpx.get(f"{server.http_url}/v2/models/simple/ready", timeout=TIMEOUT_S)
        assert answer.status_code == 400 and "UNLOADED" in answer.json()["error"]
        # Unloaded on purpose is not a reason for the server to be unready (Triton's strict readiness too).
        assert http.is_server_ready() and grpc_client.is_server_ready()
        grpc_client.load_model("simple")
        assert http.is_model_ready("simple") and grpc_client.is_model_ready("simple")


def test_a_loading_model_is_not_ready(tmp_path: Path) -> None:
    repo = triton_example_repository(tmp_path / "models")
    write_python_model(repo / "slow", textwrap.dedent(SLOW_MODEL), textwrap.dedent(SLOW_CONFIG.format(folder=tmp_path)))
    args = ["--model-control-mode", "explicit", "--load-model", "simple", "--load-model", "slow"]
    with running_server(repo, args, wait_ready=False) as server:
        grpc_client = grpcclient.InferenceServerClient(server.grpc_address)
        wait_until(lambda: _index_state(server, "slow") == "LOADING", what="slow to be loading")
        answer = httpx.get(f"{server.http_url}/v2/models/slow/ready", timeout=TIMEOUT_S)
        assert answer.status_code == 400
        assert answer.json()["error"].startswith("Model version not ready. Model 'slow' is not ready")
        assert "LOADING" in answer.json()["error"]
        assert not grpc_client.is_model_ready("slow")
        server_ready = httpx.get(f"{server.http_url}/v2/health/ready", timeout=TIMEOUT_S)
        assert server_ready.status_code == 503 and "'slow' LOADING" in server_ready.json()["error"]
        (tmp_path / "go").touch()
        wait_until(lambda: grpc_client.is_model_ready("slow"), what="slow to be ready once loaded")
        assert httpx.get(f"{server.http_url}/v2/models/slow/ready", timeout=TIMEOUT_S).status_code == 200


def _index_state(server: ServerProcess, name: str) -> str:
    index = httpx.post(f"{server.http_url}/v2/repository/index", json={}, timeout=TIMEOUT_S).json()
    return next((entry["state"] for entry in index if entry["name"] == name), "")


# -- failures counted as Triton counts them -----------------------------------------------------------------


def _failures(server: ServerProcess) -> tuple[int, float]:
    """(the statistics' fail count, nv_inference_request_failure{reason="OTHER"}) of simple version 1."""
    stats = httpx.get(f"{server.http_url}/v2/models/simple/stats", timeout=TIMEOUT_S).json()
    fail = int(stats["model_stats"][0]["inference_stats"]["fail"]["count"])
    metrics = httpx.get(f"{server.http_url}/metrics", timeout=TIMEOUT_S).text
    found = re.search(
        r'^nv_inference_request_failure\{model="simple",reason="OTHER",version="1"\} (\S+)$', metrics, re.M
    )
    assert found is not None, "nv_inference_request_failure has no OTHER series for simple"
    return fail, float(found.group(1))


def test_bad_tensors_to_a_served_model_count_as_failures(server: ServerProcess, client: Client) -> None:
    cases = [
        (
            lambda: client.infer("simple", _inputs(client, shape=(1, 15))),
            "unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,15]. ",
        ),
        (
            lambda: client.infer("simple", _inputs(client, datatype="FP32")),
            "inference input 'INPUT0' data-type is 'FP32', but model 'simple' expects 'INT32'. ",
        ),
        (
            lambda: client.infer("simple", _inputs(client, names=("INPUT0",))),
            "expected 2 inputs but got 1 inputs for model 'simple'. Got input(s) ['INPUT0'], but missing required "
            "input(s) ['INPUT1']. Please provide all required input(s). ",
        ),
        (
            lambda: client.infer("simple", _inputs(client, names=("INPUT0", "INPUT1", "INPUT9"))),
            "unexpected inference input 'INPUT9' for model 'simple'. ",
        ),
        (
            lambda: client.infer("simple", _inputs(client, shape=(9, 16))),
            "inference request batch-size must be <= 8 for 'simple'. ",
        ),
    ]
    for call, triton_words in cases:
        before = _failures(server)
        message = _error_of(call)
        assert message.startswith(triton_words), message
        assert message[len(triton_words) :], "our hint on how to fix it follows Triton's words"
        fail, metric = _failures(server)
        assert (fail, metric) == (before[0] + 1, before[1] + 1), message
    _assert_simple_works(client)
    assert _failures(server)[0] == fail, "a good request is not a failure"


def test_data_that_disagrees_with_its_shape_counts_as_a_failure(server: ServerProcess) -> None:
    """Refused while the tensors are read (before the model's signature is even looked at): still a failed
    request of the version it names, on both transports."""
    header = json.dumps(
        {
            "inputs": [
                {"name": name, "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 60}}
                for name in ("INPUT0", "INPUT1")
            ]
        }
    ).encode()
    before = _failures(server)
    answer = httpx.post(
        f"{server.http_url}/v2/models/simple/infer",
        content=header + b"\0" * 120,
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=TIMEOUT_S,
    )
    assert answer.status_code == 400 and "binary data is 60 bytes" in answer.json()["error"]
    message = service_pb2.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        message.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        message.raw_input_contents.append(b"\0" * 60)
    grpc_client = grpcclient.InferenceServerClient(server.grpc_address)
    with pytest.raises(grpc.RpcError) as raised:
        grpc_client._client_stub.ModelInfer(message, timeout=TIMEOUT_S)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _failures(server) == (before[0] + 2, before[1] + 2)


# -- server readiness when a model failed ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "explicit"])
def test_server_readiness_names_the_model_that_failed(tmp_path: Path, mode: str) -> None:
    repo = triton_example_repository(tmp_path / "models")
    broken = repo / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text((repo / "simple" / "config.pbtxt").read_text().replace("simple", "broken"))
    health_port = free_port()
    args = ["--health-port", str(health_port), "--model-control-mode", mode]
    if mode == "explicit":
        args += ["--load-model", "*"]
    with running_server(repo, args, wait_ready=False) as server:
        wait_until(lambda: _index_state(server, "broken") == "FAILED", what="broken to fail its load")
        for url in (server.http_url, f"http://127.0.0.1:{health_port}"):
            answer = httpx.get(f"{url}/v2/health/ready", timeout=TIMEOUT_S)
            assert answer.status_code == 503
            message = answer.json()["error"]
            assert "model 'broken' failed to load" in message and "GET /v2/repository/index" in message, message
        http = httpclient.InferenceServerClient(server.http_address, network_timeout=TIMEOUT_S)
        message = _error_of(lambda: http.infer("broken", _inputs(http)))
        assert message.startswith("Request for unknown model: 'broken' has no available versions. "), message
        assert "Model 'broken' failed to load: " in message
        if mode == "none":  # the load API is refused in this mode: the hint says what works instead
            assert "/v2/repository/models" not in message and "restart the server" in message, message
        else:
            assert "POST /v2/repository/models/broken/load" in message
        assert not http.is_model_ready("broken")
        _assert_simple_works(http)
