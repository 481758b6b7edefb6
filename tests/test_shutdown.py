"""SIGTERM: readiness turns false, new requests get 503, in-flight requests finish, exit code 0; past
``server.drain_timeout_s`` what still runs or waits is answered 503 / UNAVAILABLE, never 500."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.app.test_engine_shutdown import BLOCKING_MODEL, DIRECT_CONFIG, SHUTTING_DOWN
from tests.model_builders import write_python_model
from tests.runtimes.test_python_runtime import SLOW_MODEL, slow_config
from tests.server_process import REPO_ROOT, ServerProcess, port_is_free
from tests.waiting import wait_until


def _call(url: str, seconds: float) -> httpx.Response:
    body = {"inputs": [{"name": "seconds", "shape": [1], "datatype": "FP32", "data": [seconds]}]}
    return httpx.post(f"{url}/v2/models/slow/infer", json=body, timeout=30)


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "slow", SLOW_MODEL, slow_config(tmp_path))
    server = ServerProcess(repo)
    server.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            in_flight = pool.submit(_call, server.http_url, 1.5)
            wait_until((tmp_path / "busy.pid").exists, what="the slow request to start")
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)

            # Bounded wait for the drain to begin: readiness turns false (503), liveness stays.
            def drain_began() -> int | None:
                status = httpx.get(f"{server.http_url}/v2/health/ready", timeout=1).status_code
                return status if status != 200 else None

            ready = wait_until(drain_began, timeout_s=5, interval_s=0.01, what="readiness to turn false")
            assert ready == 503
            refused = _call(server.http_url, 0)
            assert refused.status_code == 503
            assert "shutting down" in refused.json()["error"]
            finished = in_flight.result(timeout=20)
            assert finished.status_code == 200
        assert server.process.wait(timeout=20) == 0
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)
    assert port_is_free(server.http_port) and port_is_free(server.grpc_port)


class _ServerWithLog(ServerProcess):
    """The server with its stderr (log lines, and its workers' stderr) written to ``log_path``."""

    def __init__(self, repository: Path, config: Path, log_path: Path) -> None:
        super().__init__(repository, config=config)
        self.log_path = log_path

    def start(self, *, wait_ready: bool = True, timeout_s: float = 60.0) -> None:
        with self.log_path.open("wb") as log:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.process = subprocess.Popen(self.args, env=env, cwd=REPO_ROOT, stderr=log)
        self.wait_until("ready" if wait_ready else "live", timeout_s)


def _rest(url: str, tag: str) -> tuple[int, str]:
    body = {"inputs": [{"name": "tag", "shape": [1], "datatype": "BYTES", "data": [tag]}]}
    response = httpx.post(f"{url}/v2/models/blocking/infer", json=body, timeout=30)
    return response.status_code, response.json().get("error", "")


def _grpc(address: str, tag: str) -> tuple[str, str]:
    tensor = grpcclient.InferInput("tag", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([tag.encode()], dtype=object))
    with grpcclient.InferenceServerClient(address) as client:
        try:
            client.infer("blocking", [tensor], client_timeout=30)
        except InferenceServerException as exc:
            return str(exc.status()), str(exc.message())
    return "OK", ""


def _pending(url: str) -> int:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith('nv_inference_pending_request_count{model="blocking"'):
            return int(float(line.split()[-1]))
    return 0


def test_sigterm_past_the_drain_timeout_answers_503_and_unavailable_and_exits_zero(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "blocking", BLOCKING_MODEL, DIRECT_CONFIG.format(count=2, folder=tmp_path))
    config = tmp_path / "modelserve.yaml"
    config.write_text("server:\n  drain_timeout_s: 0.5\n")
    server = _ServerWithLog(repo, config, tmp_path / "server.log")
    server.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            # Both instances busy, one request from each protocol; then one of each queued behind them.
            rest_running = pool.submit(_rest, server.http_url, "rest-running")
            grpc_running = pool.submit(_grpc, server.grpc_address, "grpc-running")
            for tag in ("rest-running", "grpc-running"):
                wait_until((tmp_path / f"started-{tag}").exists, what=f"the {tag} request to start")
            rest_queued = pool.submit(_rest, server.http_url, "rest-queued")
            grpc_queued = pool.submit(_grpc, server.grpc_address, "grpc-queued")
            wait_until(lambda: _pending(server.http_url) == 2, what="two requests to queue")
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)

            for answer in (rest_running, rest_queued):
                status, error = answer.result(timeout=30)
                assert status == 503, (status, error)
                assert "model 'blocking' version 1 was unloaded" in error and error.endswith(SHUTTING_DOWN)
            for answer in (grpc_running, grpc_queued):
                code, message = answer.result(timeout=30)
                assert code == "StatusCode.UNAVAILABLE", (code, message)
                assert "model 'blocking' version 1 was unloaded" in message and message.endswith(SHUTTING_DOWN)
        assert server.process.wait(timeout=30) == 0
    finally:
        (tmp_path / "release").touch()  # lets a model that was never stopped finish at once
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)
    log = server.log_path.read_text()
    assert "Traceback" not in log, log
    assert not list(tmp_path.glob("started-*-queued")), "a queued request ran on the unloaded model"
    assert port_is_free(server.http_port) and port_is_free(server.grpc_port)
