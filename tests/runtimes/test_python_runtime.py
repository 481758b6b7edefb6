"""The python runtime through the real server: worker processes, their death and replacement."""

from __future__ import annotations

import concurrent.futures
import os
import signal
from pathlib import Path

import httpx
import numpy as np
import psutil
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.model_builders import write_python_model
from tests.server_process import running_server
from tests.waiting import wait_until

SLOW_MODEL = """
    import os
    import time
    from pathlib import Path

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            self.marker = Path(context.parameters["marker"])

        def infer(self, inputs):
            seconds = float(inputs["seconds"][0])
            if seconds > 0:
                # Tell the test which worker is busy, then take long enough to be killed mid-request.
                self.marker.write_text(str(os.getpid()))
                time.sleep(seconds)
            if seconds < 0:
                raise ValueError("negative seconds are not allowed")
            return {"pid": np.array([os.getpid()], dtype=np.int64)}
"""


def slow_config(tmp_path: Path, count: int = 1) -> str:
    return f"""
        backend: "python"
        input [ {{ name: "seconds" data_type: TYPE_FP32 dims: [ 1 ] }} ]
        output [ {{ name: "pid" data_type: TYPE_INT64 dims: [ 1 ] }} ]
        instance_group [ {{ count: {count} kind: KIND_CPU }} ]
        parameters {{ key: "marker" value: {{ string_value: "{tmp_path / "busy.pid"}" }} }}
    """


def _call(url: str, seconds: float) -> httpx.Response:
    body = {"inputs": [{"name": "seconds", "shape": [1], "datatype": "FP32", "data": [seconds]}]}
    return httpx.post(f"{url}/v2/models/slow/infer", json=body, timeout=30)


def _wait_for(path: Path, timeout_s: float = 10.0) -> str:
    return wait_until(
        lambda: path.exists() and path.read_text(), timeout_s=timeout_s, what=f"{path.name} to be written"
    )


def test_text_stats_example_over_both_protocols() -> None:
    # Its own server, not the session's ``examples_server``: one that outlives this module would still be
    # a child of the test process when tests/app checks that leaving an engine reaps every child.
    text = np.array([b"hello", "wörld".encode(), b""], dtype=object)
    with running_server() as server:
        for module, address in ((httpclient, server.http_address), (grpcclient, server.grpc_address)):
            client = module.InferenceServerClient(address)
            inp = module.InferInput("text", [3], "BYTES")
            inp.set_data_from_numpy(text)
            result = client.infer("text_stats", [inp])
            assert list(result.as_numpy("upper")) == [b"HELLO", "WÖRLD".encode(), b""]
            assert list(result.as_numpy("length")) == [5, 6, 0]


def test_a_killed_worker_fails_only_its_request_and_is_replaced(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "slow", SLOW_MODEL, slow_config(tmp_path, count=2))
    with running_server(repo) as server:
        server_proc = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        workers_before = {p.pid for p in server_proc.children()}
        assert len(workers_before) == 2
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            doomed = pool.submit(_call, server.http_url, 20.0)
            victim = int(_wait_for(tmp_path / "busy.pid"))
            # The other instance keeps serving while one is busy.
            assert _call(server.http_url, 0).status_code == 200
            os.kill(victim, signal.SIGKILL)
            response = doomed.result(timeout=20)
        assert response.status_code == 503
        assert "worker process died (killed by signal 9)" in response.json()["error"]
        # The next requests succeed, and the dead worker was replaced by a new process.
        pids = {_call(server.http_url, 0).json()["outputs"][0]["data"][0] for _ in range(6)}
        assert victim not in pids
        # The replacement is started by the runtime's supervisor, off the request path: wait for it.
        wait_until(
            lambda: (after := {p.pid for p in server_proc.children()}) and len(after) == 2 and victim not in after,
            what="the killed worker to be replaced",
        )
        assert httpx.get(f"{server.http_url}/v2/models/slow/ready").status_code == 200


def test_a_raising_model_fails_its_request_and_the_next_succeeds(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "slow", SLOW_MODEL, slow_config(tmp_path))
    with running_server(repo) as server:
        response = _call(server.http_url, -1)
        assert response.status_code == 500
        assert "ValueError: negative seconds are not allowed" in response.json()["error"]
        assert "Traceback" not in response.json()["error"]
        assert _call(server.http_url, 0).status_code == 200


def test_shutdown_reaps_worker_processes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "slow", SLOW_MODEL, slow_config(tmp_path, count=3))
    with running_server(repo) as server:
        workers = psutil.Process(server.process.pid).children()  # type: ignore[union-attr]
        assert len(workers) == 3
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
