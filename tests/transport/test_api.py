"""The happy paths of every API both transports offer, through the real server with Triton's clients."""

from __future__ import annotations

import gzip
import queue
from functools import partial

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

IRIS_ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


@pytest.fixture(params=["http", "grpc"])
def client_module(request):  # type: ignore[no-untyped-def]
    return httpclient if request.param == "http" else grpcclient


def _client(module, server):  # type: ignore[no-untyped-def]
    address = server.http_address if module is httpclient else server.grpc_address
    return module.InferenceServerClient(address)


def _iris_input(module, rows=IRIS_ROWS, binary=True):  # type: ignore[no-untyped-def]
    inp = module.InferInput("input-0", list(rows.shape), "FP32")
    if module is httpclient:
        inp.set_data_from_numpy(rows, binary_data=binary)
    else:
        inp.set_data_from_numpy(rows)
    return inp


def test_health_and_server_metadata(examples_server, client_module) -> None:  # type: ignore[no-untyped-def]
    client = _client(client_module, examples_server)
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    if client_module is grpcclient:
        metadata = {"name": metadata.name, "extensions": list(metadata.extensions)}
    assert metadata["name"] == "modelserve"
    assert {"binary_tensor_data", "model_repository", "statistics", "model_configuration"} <= set(
        metadata["extensions"]
    )


def test_metadata_and_config_follow_tritons_batch_dimension_rule(examples_server, client_module) -> None:  # type: ignore[no-untyped-def]
    client = _client(client_module, examples_server)
    if client_module is httpclient:
        metadata = client.get_model_metadata("iris")
        config = client.get_model_config("iris")
    else:
        metadata = client.get_model_metadata("iris", as_json=True)
        config = client.get_model_config("iris", as_json=True)["config"]
    assert metadata["inputs"][0]["name"] == "input-0"
    assert [int(d) for d in metadata["inputs"][0]["shape"]] == [-1, 4]
    assert [int(d) for d in metadata["outputs"][0]["shape"]] == [-1, 1]
    assert int(config["max_batch_size"]) == 64
    assert [int(d) for d in config["input"][0]["dims"]] == [4]
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
    assert not client.is_model_ready("iris", "7")


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_the_model_in_every_runtime(examples_server, client_module, binary) -> None:  # type: ignore[no-untyped-def]
    client = _client(client_module, examples_server)
    results = {}
    for model in ("iris", "iris_sklearn"):
        outputs = [
            client_module.InferRequestedOutput("label", binary_data=binary)
            if client_module is httpclient
            else client_module.InferRequestedOutput("label"),
            client_module.InferRequestedOutput("probabilities", binary_data=binary)
            if client_module is httpclient
            else client_module.InferRequestedOutput("probabilities"),
        ]
        result = client.infer(model, [_iris_input(client_module, binary=binary)], outputs=outputs, request_id="r-7")
        response = result.get_response()
        assert (response["id"] if client_module is httpclient else response.id) == "r-7"
        results[model] = (result.as_numpy("label"), result.as_numpy("probabilities"))
    np.testing.assert_array_equal(results["iris"][0].ravel(), [0, 2, 1])
    np.testing.assert_array_equal(results["iris"][0], results["iris_sklearn"][0])
    np.testing.assert_allclose(results["iris"][1], results["iris_sklearn"][1], atol=1e-5)
    np.testing.assert_allclose(results["iris"][1].sum(axis=1), 1.0, atol=1e-5)


def test_only_requested_outputs_are_returned_in_request_order(examples_server, client_module) -> None:  # type: ignore[no-untyped-def]
    client = _client(client_module, examples_server)
    outputs = [client_module.InferRequestedOutput("probabilities")]
    result = client.infer("iris", [_iris_input(client_module)], outputs=outputs)
    response = result.get_response()
    names = (
        [o["name"] for o in response["outputs"]] if client_module is httpclient else [o.name for o in response.outputs]
    )
    assert names == ["probabilities"]


def test_classification_extension(examples_server, client_module) -> None:  # type: ignore[no-untyped-def]
    client = _client(client_module, examples_server)
    outputs = [client_module.InferRequestedOutput("probabilities", class_count=2)]
    result = client.infer("iris", [_iris_input(client_module)], outputs=outputs)
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 2)
    first = top[0, 0].decode() if isinstance(top[0, 0], bytes) else top[0, 0]
    value, index = first.split(":")
    assert index == "0" and float(value) > 0.9


def test_statistics_count_requests_and_samples(tmp_path, examples_server, client_module) -> None:  # type: ignore[no-untyped-def]
    client = _client(client_module, examples_server)

    def stats():  # type: ignore[no-untyped-def]
        if client_module is httpclient:
            return client.get_inference_statistics("digits_mlp")["model_stats"][0]
        document = client.get_inference_statistics("digits_mlp", as_json=True)["model_stats"][0]
        return document

    before = stats()
    rows = np.zeros((5, 64), np.float32)
    inp = client_module.InferInput("input-0", [5, 64], "FP32")
    inp.set_data_from_numpy(rows)
    for _ in range(3):
        client.infer("digits_mlp", [inp])
    after = stats()
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 15
    assert int(after["execution_count"]) - int(before.get("execution_count", 0)) == 3
    success_before = int(before["inference_stats"]["success"].get("count", 0))
    assert int(after["inference_stats"]["success"]["count"]) - success_before == 3
    assert after["version"] == "1"
    assert any(int(b["batch_size"]) == 5 for b in after["batch_stats"])
    all_models = httpx.get(f"{examples_server.http_url}/v2/models/stats").json()["model_stats"]
    assert {s["name"] for s in all_models} == {"iris", "iris_sklearn", "digits_mlp", "text_stats"}


def test_repository_index_lists_every_version_ready(examples_server) -> None:  # type: ignore[no-untyped-def]
    index = httpclient.InferenceServerClient(examples_server.http_address).get_model_repository_index()
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("digits_mlp", "1", "READY"),
        ("iris", "1", "READY"),
        ("iris_sklearn", "1", "READY"),
        ("text_stats", "1", "READY"),
    ]


def test_grpc_stream_answers_every_request_and_reports_errors_in_band(examples_server) -> None:  # type: ignore[no-untyped-def]
    client = grpcclient.InferenceServerClient(examples_server.grpc_address)
    answers: queue.Queue = queue.Queue()

    def callback(store, result, error):  # type: ignore[no-untyped-def]
        store.put((result, error))

    client.start_stream(callback=partial(callback, answers))
    try:
        for i in range(20):
            client.async_stream_infer("iris", [_iris_input(grpcclient)], request_id=str(i))
        bad = grpcclient.InferInput("input-0", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        client.async_stream_infer("iris", [bad], request_id="bad")
        got = [answers.get(timeout=20) for _ in range(21)]
    finally:
        client.stop_stream()
    ok_ids = sorted(int(r.get_response().id) for r, e in got if e is None)
    assert ok_ids == list(range(20))
    errors = [e for _, e in got if e is not None]
    assert len(errors) == 1 and "expects [-1, 4]" in str(errors[0])


def test_gzip_request_and_response_bodies(examples_server) -> None:  # type: ignore[no-untyped-def]
    body = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
    response = httpx.post(
        f"{examples_server.http_url}/v2/models/iris/infer",
        content=gzip.compress(body),
        headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [0]
