"""``server.workers`` (``app/workers.py``): a supervisor and worker processes sharing the REST and gRPC ports.

Through the real server with ``--workers 2`` (iris only): both workers take connections, a killed worker
is replaced while the other keeps serving every new connection, SIGTERM stops them all (exit 0, ports
free), and workers stop by themselves when their supervisor is killed. The CPU count for ``auto`` is read
from a fake cgroup folder.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient

from modelserve.app.workers import available_cpus
from tests.model_builders import iris_repository
from tests.server_process import ServerProcess, port_is_free, running_server
from tests.waiting import wait_until

TIMEOUT_S = 10.0
IRIS_BODY = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


def workers_of(server: ServerProcess) -> list[psutil.Process]:
    """The supervisor's worker processes (multiprocessing's resource tracker is its child too)."""
    assert server.process is not None
    children = psutil.Process(server.process.pid).children()
    return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


def connections_on(process: psutil.Process, port: int) -> int:
    return sum(
        1 for c in process.net_connections(kind="tcp") if c.laddr and c.laddr.port == port and c.status == "ESTABLISHED"
    )


def infer_on_a_new_connection(server: ServerProcess) -> int:
    with httpx.Client(timeout=TIMEOUT_S) as client:
        return client.post(f"{server.http_url}/v2/models/iris/infer", json=IRIS_BODY).status_code


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = iris_repository(tmp_path_factory.mktemp("workers"))
    with running_server(repo, ["--workers", "2"]) as server:
        wait_until(lambda: len(workers_of(server)) == 2, what="two workers")
        yield server


def test_both_workers_take_connections_on_both_transports(served: ServerProcess) -> None:
    workers = workers_of(served)
    assert len(workers) == 2
    for worker in workers:
        wait_until(lambda w=worker: w.status() != psutil.STATUS_ZOMBIE, what="a running worker")
    clients = [httpx.Client(timeout=TIMEOUT_S) for _ in range(24)]
    try:
        for client in clients:
            assert client.post(f"{served.http_url}/v2/models/iris/infer", json=IRIS_BODY).status_code == 200
        # 24 connections hashed over two listening workers: each has some (all on one: 2 in 2^24).
        assert all(connections_on(worker, served.http_port) > 0 for worker in workers), "one worker got none"
    finally:
        for client in clients:
            client.close()
    grpc_client = grpcclient.InferenceServerClient(served.grpc_address)
    try:
        inputs = [grpcclient.InferInput("input-0", [1, 4], "FP32")]
        inputs[0].set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32))
        assert grpc_client.infer("iris", inputs, client_timeout=TIMEOUT_S).as_numpy("label") is not None
    finally:
        grpc_client.close()


def test_a_killed_worker_is_replaced_and_the_other_serves_meanwhile(served: ServerProcess) -> None:
    before = workers_of(served)
    victim, survivor = before
    victim.send_signal(signal.SIGKILL)
    victim.wait(TIMEOUT_S)
    # Until the replacement listens (only once its models are loaded), every new connection goes to the
    # survivor: none fails, none is refused.
    statuses = [infer_on_a_new_connection(served) for _ in range(40)]
    assert statuses == [200] * 40
    wait_until(lambda: len(workers_of(served)) == 2, timeout_s=30, what="a replacement worker")
    replacement = next(w for w in workers_of(served) if w.pid != survivor.pid)
    assert replacement.pid != victim.pid and survivor.is_running()
    wait_until(
        lambda: any(c.status == "LISTEN" and c.laddr.port == served.http_port for c in replacement.net_connections()),
        timeout_s=30,
        what="the replacement to listen",
    )
    assert [infer_on_a_new_connection(served) for _ in range(10)] == [200] * 10


def test_sigterm_stops_every_worker_with_exit_0(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    with running_server(repo, ["--workers", "2"]) as server:  # running_server asserts exit 0, ports free
        wait_until(lambda: len(workers_of(server)) == 2, what="two workers")
        workers = workers_of(server)
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    server = ServerProcess(iris_repository(tmp_path), ["--workers", "2"])
    server.start()
    try:
        wait_until(lambda: len(workers_of(server)) == 2, what="two workers")
        workers = workers_of(server)
        assert server.process is not None
        server.process.kill()
        server.process.wait(TIMEOUT_S)
        _gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers {[p.pid for p in alive]} outlived their supervisor"
        wait_until(lambda: port_is_free(server.http_port) and port_is_free(server.grpc_port), what="ports free")
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()


def test_a_port_in_use_stops_the_supervisor_with_exit_2_naming_it(tmp_path: Path) -> None:
    server = ServerProcess(iris_repository(tmp_path), ["--workers", "2"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.http_port))
        taken.listen()
        result = subprocess.run(server.args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert f"cannot bind REST (http.port) on 127.0.0.1:{server.http_port}" in result.stderr


def test_auto_counts_the_cpus_the_cgroup_quota_allows(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(2, len(psutil.Process().cpu_affinity() or [1]))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == len(psutil.Process().cpu_affinity() or [1])
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1, "half a CPU is still one worker"
