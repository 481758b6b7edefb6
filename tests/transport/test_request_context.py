"""What each transport puts in the request context, through the real server: the configured headers and
metadata keys (and no others) reach the prediction log with the transport's name; a gRPC deadline holds
on the server (a request still queued at its deadline never runs); a ModelStreamInfer stream never has
more than ``grpc.max_stream_inflight`` requests in flight."""

from __future__ import annotations

import json
import queue
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.app.test_engine import GATED_CONFIG, GATED_MODEL, lines
from tests.model_builders import iris_repository, write_python_model
from tests.observability.test_metrics import scrape
from tests.server_process import running_server
from tests.waiting import wait_until

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def test_configured_headers_and_metadata_reach_the_prediction_log_and_nothing_else(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    config = tmp_path / "config.yaml"
    config.write_text(
        "server: {context_headers: [X-User-Id]}\n"
        f"prediction_log: {{enabled: true, directory: {json.dumps(str(logs))}, sample_rate: 1.0}}\n"
    )
    with running_server(iris_repository(tmp_path), config=config) as server:
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]}
        response = httpx.post(
            f"{server.http_url}/v2/models/iris/infer",
            json=body,
            headers={"x-user-id": "u-42", "x-request-id": "req-http", "x-secret": "not for the log"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        client = grpcclient.InferenceServerClient(server.grpc_address)
        tensor = grpcclient.InferInput("input-0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([IRIS_ROW], np.float32))
        client.infer("iris", [tensor], headers={"x-user-id": "u-7", "x-request-id": "req-grpc", "x-other": "no"})
        wait_until(
            lambda: (
                scrape(server.http_url).get(
                    ("modelserve_prediction_log_records", (("model", "iris"), ("outcome", "written"))), 0
                )
                == 2
            ),
            what="both requests are written",
        )
    records = [json.loads(line) for line in (logs / "iris" / "predictions.jsonl").read_text().splitlines()]
    by_transport = {record["transport"]: record for record in records}
    assert by_transport["http"]["headers"] == {"x-user-id": "u-42", "x-request-id": "req-http"}
    assert by_transport["http"]["request_id"] == "req-http"
    assert by_transport["grpc"]["headers"] == {"x-user-id": "u-7", "x-request-id": "req-grpc"}
    assert by_transport["grpc"]["request_id"] == "req-grpc"
    assert all(record["principal"] == "" and record["tenant"] == "" for record in records)


def test_a_grpc_deadline_holds_on_the_server_and_the_expired_request_never_runs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "single", GATED_MODEL, GATED_CONFIG.format(folder=tmp_path))
    with running_server(repo) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        done: queue.Queue[object] = queue.Queue()
        client.async_infer(
            "single", gated_inputs("busy", "release"), callback=lambda result, error: done.put(error or result)
        )
        wait_until(lambda: (tmp_path / "started-busy").exists(), what="the only instance is busy")
        with pytest.raises(InferenceServerException) as late:
            client.infer("single", gated_inputs("late", ""), client_timeout=0.2)
        assert "Deadline" in str(late.value) or "DEADLINE" in str(late.value)
        (tmp_path / "release").touch()
        assert not isinstance(done.get(timeout=30), Exception)
        client.infer("single", gated_inputs("after", ""))
    assert lines(tmp_path / "calls") == ["busy", "after"]  # the server dropped "late" before it ran


def test_a_stream_has_at_most_max_stream_inflight_requests_in_flight(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "single", GATED_MODEL, GATED_CONFIG.format(folder=tmp_path))
    with running_server(repo, ["--config", str(stream_config(tmp_path, 2))]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        answers: queue.Queue[object] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put(error or result))
        try:
            for i in range(10):
                client.async_stream_infer("single", gated_inputs(f"s{i}", "release"), request_id=f"s{i}")
            # The two requests read first run concurrently on one instance: either may take it first.
            wait_until(lambda: list(tmp_path.glob("started-s*")), what="a stream request runs")
            inflight = ("modelserve_inflight_requests", (("model", "single"), ("version", "1")))
            # Two admitted (one running, one queued); the other eight are not read from the stream yet.
            wait_until(lambda: scrape(server.http_url).get(inflight) == 2, what="two requests in flight")
            assert scrape(server.http_url).get(inflight) == 2
            (tmp_path / "release").touch()
            results = [answers.get(timeout=30) for _ in range(10)]
        finally:
            (tmp_path / "release").touch()  # a failed assertion must not leave the model waiting
            client.stop_stream(cancel_requests=True)
    assert not any(isinstance(result, Exception) for result in results)
    assert sorted(lines(tmp_path / "calls")) == sorted(f"s{i}" for i in range(10))


def stream_config(tmp_path: Path, max_inflight: int) -> Path:
    config = tmp_path / "stream.yaml"
    config.write_text(f"grpc: {{max_stream_inflight: {max_inflight}}}\n")
    return config


def gated_inputs(tag: str, wait_for: str) -> list[grpcclient.InferInput]:
    inputs = []
    for name, value in (("tag", tag), ("wait_for", wait_for)):
        tensor = grpcclient.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([value.encode()], dtype=object))
        inputs.append(tensor)
    return inputs
