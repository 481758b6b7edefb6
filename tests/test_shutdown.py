"""SIGTERM: readiness turns false, new requests get 503, in-flight requests finish, exit code 0."""

from __future__ import annotations

import concurrent.futures
import signal
from pathlib import Path

import httpx

from tests.model_builders import write_python_model
from tests.runtimes.test_python_runtime import SLOW_MODEL, slow_config
from tests.server_process import ServerProcess, port_is_free
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
