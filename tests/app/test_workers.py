"""``server.workers`` (``app/workers.py``): a supervisor and worker processes sharing the REST and gRPC ports.

Through the real server with ``--workers 2`` (iris only): both workers take connections, a killed worker
is replaced while the other keeps serving every new connection, SIGTERM stops them all (exit 0, ports
free), and workers stop by themselves when their supervisor is killed. The CPU count for ``auto`` is read
from a fake cgroup folder.
"""

from __future__ import annotations

import json
import shutil
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


def listening(process: psutil.Process, port: int) -> bool:
    return any(c.status == "LISTEN" and c.laddr.port == port for c in process.net_connections(kind="tcp"))


def wait_for_workers(server: ServerProcess) -> list[psutil.Process]:
    """Two workers, both listening on both ports (worker 1 listens once its models are loaded)."""
    wait_until(lambda: len(workers_of(server)) == 2, timeout_s=30, what="two workers")
    workers = workers_of(server)
    for worker in workers:
        for port in (server.http_port, server.grpc_port):
            wait_until(lambda w=worker, p=port: listening(w, p), timeout_s=30, what=f"worker {worker.pid} on {port}")
    return workers


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
        wait_for_workers(server)
        yield server


def test_both_workers_take_connections_on_both_transports(served: ServerProcess) -> None:
    workers = wait_for_workers(served)
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


def test_each_worker_runs_on_a_cpu_of_its_own(served: ServerProcess) -> None:
    available = psutil.Process().cpu_affinity() or []
    pinned = [worker.cpu_affinity() for worker in wait_for_workers(served)]
    assert all(len(cpus) == 1 for cpus in pinned), pinned
    expected = [[available[i % len(available)]] for i in range(2)]
    assert sorted(pinned) == sorted(expected), f"pinned to {pinned}, this process may use {available}"


def test_a_killed_worker_is_replaced_and_the_other_serves_meanwhile(served: ServerProcess) -> None:
    before = workers_of(served)
    victim, survivor = before
    victim.send_signal(signal.SIGKILL)
    victim.wait(TIMEOUT_S)
    # Until the replacement listens (only once its models are loaded), every new connection goes to the
    # survivor: none fails, none is refused.
    statuses = [infer_on_a_new_connection(served) for _ in range(40)]
    assert statuses == [200] * 40
    replacement = next(w for w in wait_for_workers(served) if w.pid != survivor.pid)
    assert replacement.pid != victim.pid and survivor.is_running()
    assert [infer_on_a_new_connection(served) for _ in range(10)] == [200] * 10


def test_sigterm_stops_every_worker_with_exit_0(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    with running_server(repo, ["--workers", "2"]) as server:  # running_server asserts exit 0, ports free
        workers = wait_for_workers(server)
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    server = ServerProcess(iris_repository(tmp_path), ["--workers", "2"])
    server.start()
    try:
        workers = wait_for_workers(server)
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
    assert f"cannot listen for REST on 127.0.0.1:{server.http_port}" in result.stderr
    assert "--http-port" in result.stderr


def test_auto_counts_the_cpus_the_cgroup_quota_allows(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(2, len(psutil.Process().cpu_affinity() or [1]))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == len(psutil.Process().cpu_affinity() or [1])
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1, "half a CPU is still one worker"


# -- one server, whatever worker answers: statistics, metrics, lifecycle -------------------------------

EXPLICIT = ["--workers", "2", "--model-control-mode", "explicit", "--load-model", "iris"]


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = iris_repository(tmp_path_factory.mktemp("workers-explicit"))
    shutil.copytree(repo / "iris", repo / "iris_copy")
    config = repo / "iris_copy" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "iris"', 'name: "iris_copy"'))
    with running_server(repo, EXPLICIT) as server:
        wait_for_workers(server)
        yield server


def fresh_get(server: ServerProcess, path: str) -> httpx.Response:
    with httpx.Client(timeout=TIMEOUT_S) as client:  # a new connection: any worker may answer
        return client.get(f"{server.http_url}{path}")


def iris_success_count(server: ServerProcess, model: str) -> float:
    """Triton's counter, by its exact name (the merged scrape must not rename it)."""
    prefix = f'nv_inference_request_success{{model="{model}",version="1"}} '
    lines = [line for line in fresh_get(server, "/metrics").text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, lines
    return float(lines[0][len(prefix) :])


def test_statistics_and_metrics_count_every_workers_requests(explicit: ServerProcess) -> None:
    before = fresh_get(explicit, "/v2/models/iris/stats").json()["model_stats"][0]["inference_count"]
    sent = 30
    assert [infer_on_a_new_connection(explicit) for _ in range(sent)] == [200] * sent
    # Every read, from whichever worker, counts every request (perf_analyzer diffs these across windows).
    for _ in range(8):
        stats = fresh_get(explicit, "/v2/models/iris/stats").json()["model_stats"][0]
        assert stats["inference_count"] == before + sent
        assert stats["inference_stats"]["success"]["count"] == before + sent
        assert iris_success_count(explicit, "iris") == before + sent
    grpc_client = grpcclient.InferenceServerClient(explicit.grpc_address)
    try:
        grpc_stats = grpc_client.get_inference_statistics("iris", as_json=True, client_timeout=TIMEOUT_S)
        assert int(grpc_stats["model_stats"][0]["inference_count"]) == before + sent
    finally:
        grpc_client.close()
    # Gauges that do not add up are kept per worker; so is each worker's own memory.
    text = fresh_get(explicit, "/metrics").text
    memory = [line for line in text.splitlines() if line.startswith("modelserve_process_resident_memory_bytes{")]
    assert sorted(line.split('worker="')[1][0] for line in memory) == ["0", "1"], memory
    states = [
        line for line in text.splitlines() if line.startswith('modelserve_model_state{model="iris",state="READY"')
    ]
    assert sorted(line.split('worker="')[1][0] for line in states) == ["0", "1"], states


def infer_model_on_a_new_connection(server: ServerProcess, model: str) -> int:
    with httpx.Client(timeout=TIMEOUT_S) as client:
        return client.post(f"{server.http_url}/v2/models/{model}/infer", json=IRIS_BODY).status_code


def test_a_load_or_unload_through_one_worker_applies_to_every_worker(explicit: ServerProcess) -> None:
    loaded = httpx.post(f"{explicit.http_url}/v2/repository/models/iris_copy/load", timeout=30)
    assert loaded.status_code == 200, loaded.text
    assert [infer_model_on_a_new_connection(explicit, "iris_copy") for _ in range(20)] == [200] * 20
    unloaded = httpx.post(f"{explicit.http_url}/v2/repository/models/iris_copy/unload", timeout=30)
    assert unloaded.status_code == 200, unloaded.text
    statuses = {infer_model_on_a_new_connection(explicit, "iris_copy") for _ in range(20)}
    assert 200 not in statuses, "a worker still serves the unloaded model"


def test_an_alias_move_applies_to_every_worker_and_is_recorded_once(explicit: ServerProcess) -> None:
    moved = httpx.post(f"{explicit.http_url}/v2/models/iris/aliases/canary", json={"version": "1"}, timeout=10)
    assert moved.status_code == 200, moved.text
    for _ in range(10):
        with httpx.Client(timeout=TIMEOUT_S) as client:
            answer = client.post(f"{explicit.http_url}/v2/models/iris/versions/canary/infer", json=IRIS_BODY)
        assert answer.status_code == 200, answer.text
    saved = json.loads((explicit.repository / "iris" / "aliases.json").read_text())
    assert saved["canary"] == {"version": "1", "history": []}, "the move was written more than once"


def test_a_replacement_worker_loads_what_the_others_loaded_through_the_api(explicit: ServerProcess) -> None:
    # Loaded with a config of the load API: the replacement must load it with that config too.
    override = {"parameters": {"config": '{"max_batch_size": 7}'}}
    loaded = httpx.post(f"{explicit.http_url}/v2/repository/models/iris_copy/load", json=override, timeout=30)
    assert loaded.status_code == 200, loaded.text
    victim, survivor = workers_of(explicit)
    victim.send_signal(signal.SIGKILL)
    victim.wait(TIMEOUT_S)
    assert any(w.pid != survivor.pid for w in wait_for_workers(explicit)), "no replacement"
    # 24 new connections: some reach the replacement, which serves the API-loaded model too.
    assert [infer_model_on_a_new_connection(explicit, "iris_copy") for _ in range(24)] == [200] * 24
    assert {fresh_get(explicit, "/v2/models/iris_copy/config").json()["max_batch_size"] for _ in range(24)} == {7}


def test_each_worker_writes_its_prediction_log_in_a_folder_of_its_own(tmp_path: Path) -> None:
    from modelserve.app.workers import _own_files
    from modelserve.config import settings_from_mapping

    logged = settings_from_mapping({"prediction_log": {"enabled": True, "directory": str(tmp_path / "logs")}})
    assert _own_files(logged, 1).prediction_log.directory == tmp_path / "logs" / "worker-1"
    assert _own_files(logged, 0).prediction_log.directory == tmp_path / "logs" / "worker-0"
    off = settings_from_mapping({})
    assert _own_files(off, 1) is off, "nothing to separate when nothing is logged"
