"""Limits through the real server: a full queue and the global in-flight cap answer 503 at once,
naming the limit; nothing waits without bound; the server serves normally afterwards."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.model_builders import write_python_model
from tests.runtimes.test_python_runtime import SLOW_MODEL, slow_config
from tests.server_process import running_server
from tests.waiting import wait_until


def _call(url: str, seconds: float) -> httpx.Response:
    body = {"inputs": [{"name": "seconds", "shape": [1], "datatype": "FP32", "data": [seconds]}]}
    return httpx.post(f"{url}/v2/models/slow/infer", json=body, timeout=30)


def _wait_busy(marker: Path) -> None:
    wait_until(marker.exists, what="the slow request to start")


def test_full_queue_is_rejected_at_once_with_the_limit_named(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "slow", SLOW_MODEL, slow_config(tmp_path))
    with (
        running_server(repo, ["--max-queue-size", "0"]) as server,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
    ):
        busy = pool.submit(_call, server.http_url, 3.0)
        _wait_busy(tmp_path / "busy.pid")
        rejected = _call(server.http_url, 0)
        assert rejected.status_code == 503
        assert not busy.done(), "a full queue must refuse at once, not after the busy request"
        error = rejected.json()["error"]
        assert "model 'slow' version 1: queue full" in error
        assert "scheduling.max_queue_size=0" in error
        assert rejected.headers["retry-after"] == "1"
        assert busy.result(timeout=20).status_code == 200
        assert _call(server.http_url, 0).status_code == 200


def test_requests_within_the_queue_bound_wait_and_succeed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "slow", SLOW_MODEL, slow_config(tmp_path))
    with (
        running_server(repo, ["--max-queue-size", "2"]) as server,
        concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool,
    ):
        busy = pool.submit(_call, server.http_url, 1.0)
        _wait_busy(tmp_path / "busy.pid")
        queued = [pool.submit(_call, server.http_url, 0) for _ in range(2)]
        assert busy.result(timeout=20).status_code == 200
        assert [f.result(timeout=20).status_code for f in queued] == [200, 200]
        stats = httpx.get(f"{server.http_url}/v2/models/slow/stats").json()["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] == 3
        assert stats["inference_stats"]["queue"]["count"] == 3


def test_global_inflight_limit_over_grpc(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "slow", SLOW_MODEL, slow_config(tmp_path))
    with (
        running_server(repo, ["--max-inflight-requests", "1"]) as server,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
    ):
        busy = pool.submit(_call, server.http_url, 1.0)
        _wait_busy(tmp_path / "busy.pid")
        client = grpcclient.InferenceServerClient(server.grpc_address)
        inp = grpcclient.InferInput("seconds", [1], "FP32")
        import numpy as np

        inp.set_data_from_numpy(np.zeros(1, np.float32))
        try:
            client.infer("slow", [inp])
        except InferenceServerException as exc:
            assert exc.status() == "StatusCode.UNAVAILABLE"
            assert "server.max_inflight_requests=1" in exc.message()
        else:
            raise AssertionError("the request over the in-flight limit was admitted")
        assert busy.result(timeout=20).status_code == 200
        assert client.infer("slow", [inp]).as_numpy("pid") is not None
