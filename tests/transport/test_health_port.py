"""``http.health_port`` (``transport/http/health_app.py``): the probes' own listener, on a thread of its own.

Through the real server: it answers live and ready as the REST port does (ready only once the models are
loaded, 503 while one is still loading), nothing else; a port already taken stops the server with exit
code 2 naming the setting; with workers, they share it.
"""

from __future__ import annotations

import socket
import subprocess
import textwrap
from pathlib import Path

import httpx

from tests.model_builders import iris_repository, write_python_model
from tests.server_process import ServerProcess, free_port, running_server
from tests.waiting import wait_until

TIMEOUT_S = 10.0

# Loads only once the file "go" exists in its folder (bounded: 60 s), so readiness can be seen to wait.
SLOW_MODEL = """
    import time
    from pathlib import Path

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            gate = Path(context.parameters["folder"]) / "go"
            deadline = time.monotonic() + 60
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.01)

        def infer(self, inputs):
            return {"y": inputs["x"]}
"""

SLOW_CONFIG = """
    name: "slow"
    backend: "python"
    max_batch_size: 0
    input [ {{ name: "x", data_type: TYPE_FP32, dims: [ 1 ] }} ]
    output [ {{ name: "y", data_type: TYPE_FP32, dims: [ 1 ] }} ]
    parameters [ {{ key: "folder", value: {{ string_value: "{folder}" }} }} ]
"""


def get(port: int, path: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT_S)


def test_the_health_port_answers_live_and_ready_as_the_rest_port_does(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    write_python_model(repo / "slow", textwrap.dedent(SLOW_MODEL), textwrap.dedent(SLOW_CONFIG.format(folder=tmp_path)))
    health_port = free_port()
    with running_server(repo, ["--health-port", str(health_port)], wait_ready=False) as server:
        wait_until(lambda: _answers(health_port), what="the health port to answer")
        assert get(health_port, "/v2/health/live").status_code == 200
        not_ready = get(health_port, "/v2/health/ready")
        assert not_ready.status_code == 503 and "not ready" in not_ready.json()["error"]
        assert httpx.get(f"{server.http_url}/v2/health/ready", timeout=TIMEOUT_S).status_code == 503
        (tmp_path / "go").touch()
        wait_until(lambda: get(health_port, "/v2/health/ready").status_code == 200, what="ready once loaded")
        assert httpx.get(f"{server.http_url}/v2/health/ready", timeout=TIMEOUT_S).status_code == 200
        other = get(health_port, "/v2/models/iris")
        assert other.status_code == 404 and "only GET /v2/health/live" in other.json()["error"]
        assert get(health_port, "/v2/health/live", "POST").status_code == 405


def _answers(port: int) -> bool:
    try:
        get(port, "/v2/health/live")
    except httpx.TransportError:
        return False
    return True


def test_a_taken_health_port_stops_the_server_with_exit_2_naming_it(tmp_path: Path) -> None:
    server = ServerProcess(iris_repository(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*server.args, "--health-port", str(port)], capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 2
    assert "pick another port with --health-port (setting http.health_port)" in result.stderr


def test_workers_share_the_health_port(tmp_path: Path) -> None:
    health_port = free_port()
    with running_server(iris_repository(tmp_path), ["--workers", "2", "--health-port", str(health_port)]):
        for _ in range(10):
            with httpx.Client(timeout=TIMEOUT_S) as client:
                assert client.get(f"http://127.0.0.1:{health_port}/v2/health/live").status_code == 200
