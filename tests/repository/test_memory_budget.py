"""The memory budget, pinned models and idle unloading: the pure eviction rule, then the real server
with python models that hold a known amount of memory."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from modelserve.repository.memory import ModelUsage, choose_evictions
from tests.model_builders import write_python_model
from tests.server_process import ServerProcess, running_server
from tests.waiting import wait_until

MIB = 2**20


def test_least_recently_used_idle_unpinned_models_go_first_and_only_as_many_as_needed() -> None:
    models = [
        ModelUsage("old", 100 * MIB, last_used_ns=1),
        ModelUsage("pinned", 100 * MIB, last_used_ns=0, is_pinned=True),
        ModelUsage("busy", 100 * MIB, last_used_ns=0, is_busy=True),
        ModelUsage("newer", 100 * MIB, last_used_ns=5),
        ModelUsage("newest", 100 * MIB, last_used_ns=9),
    ]
    assert choose_evictions(models, budget_bytes=600 * MIB, needed_bytes=100 * MIB) == []
    assert choose_evictions(models, budget_bytes=500 * MIB, needed_bytes=100 * MIB) == ["old"]
    assert choose_evictions(models, budget_bytes=400 * MIB, needed_bytes=100 * MIB) == ["old", "newer"]
    assert choose_evictions(models, budget_bytes=300 * MIB, needed_bytes=100 * MIB) == ["old", "newer", "newest"]
    assert choose_evictions(models, budget_bytes=200 * MIB, needed_bytes=100 * MIB) is None


BIG_MODEL = """
    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            self.weights = np.ones(int(context.parameters["size_mb"]) * 2**20 // 8)

        def infer(self, inputs):
            return {"y": inputs["x"] + self.weights[0]}
"""
BIG_CONFIG = """
    backend: "python"
    max_batch_size: 4
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
    parameters { key: "size_mb" value: { string_value: "80" } }
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repository = tmp_path / "repo"
    for name in ("a", "b", "c"):
        write_python_model(repository / name, BIG_MODEL, BIG_CONFIG)
    return repository


def infer(server: ServerProcess, model: str) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
    return httpx.post(f"{server.http_url}/v2/models/{model}/infer", json=body, timeout=60)


def states(server: ServerProcess) -> dict[str, str]:
    return {m["name"]: m["state"] for m in httpx.post(f"{server.http_url}/v2/repository/index").json()}


def load(server: ServerProcess, model: str) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v2/repository/models/{model}/load", timeout=60)


# Each model measures ~110 MiB (80 MiB of weights plus its worker process): a 250 MiB budget holds two.
BUDGET = ["--model-control-mode", "explicit", "--memory-budget-mb", "250", "--load-on-demand"]


def test_the_budget_unloads_the_least_recently_used_and_brings_it_back_on_demand(repo: Path) -> None:
    with running_server(repo, BUDGET) as server:
        assert load(server, "a").status_code == 200
        assert load(server, "b").status_code == 200
        assert infer(server, "a").status_code == 200  # a is now more recently used than b
        stats = httpx.get(f"{server.http_url}/v2/models/a/stats").json()["model_stats"][0]
        assert stats["memory_usage"][0]["byte_size"] > 80 * MIB
        assert load(server, "c").status_code == 200
        assert states(server) == {"a": "READY", "b": "UNLOADED", "c": "READY"}
        # b comes back on its first request, and the least recently used (a) makes room.
        assert infer(server, "b").status_code == 200
        assert states(server) == {"a": "UNLOADED", "b": "READY", "c": "READY"}
        index = {m["name"]: m for m in httpx.post(f"{server.http_url}/v2/repository/index").json()}
        assert index["b"]["cold_start_ms"] >= index["b"]["load_ms"] > 0  # the request waited for the load
        assert index["b"]["memory_bytes"] > 80 * MIB
        metrics = httpx.get(f"{server.http_url}/metrics").text
        assert 'modelserve_model_evictions_total{cause="budget",model="b"} 1.0' in metrics
        assert 'modelserve_model_evictions_total{cause="budget",model="a"} 1.0' in metrics
        assert 'modelserve_model_cold_start_seconds{model="b"}' in metrics


def test_a_pinned_model_is_never_unloaded(repo: Path) -> None:
    with running_server(repo, [*BUDGET, "--pin-model", "a"]) as server:
        assert load(server, "a").status_code == 200
        assert load(server, "b").status_code == 200
        assert infer(server, "b").status_code == 200  # a is the least recently used, but pinned
        assert load(server, "c").status_code == 200
        assert states(server) == {"a": "READY", "b": "UNLOADED", "c": "READY"}


def test_a_load_that_cannot_fit_is_refused_naming_the_budget(repo: Path) -> None:
    args = ["--model-control-mode", "explicit", "--memory-budget-mb", "120", "--pin-model", "a"]
    with running_server(repo, args) as server:
        assert load(server, "a").status_code == 200
        # b's first load is sized by its files and fits; once measured, b cannot stay beside pinned a...
        load(server, "b")
        # ... and a second load of b, now sized by its measurement, is refused before loading.
        httpx.post(f"{server.http_url}/v2/repository/models/b/unload", timeout=60)
        refused = load(server, "b")
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert "memory budget of 120 MiB" in error and "a " in error and "(pinned)" in error
        assert infer(server, "a").status_code == 200


def test_idle_models_unload_after_the_idle_time(repo: Path) -> None:
    args = ["--model-control-mode", "explicit", "--load-model", "*", "--unload-idle-secs", "1", "--pin-model", "c"]
    with running_server(repo, args) as server:
        # Use b steadily while a and c sit idle, until a has been unloaded. (The rules themselves are
        # tested on a fake clock in test_eviction.py; this is the engine's idle task, for real.)
        def a_unloaded_while_b_is_used() -> bool:
            assert infer(server, "b").status_code == 200
            return states(server)["a"] == "UNLOADED"

        wait_until(a_unloaded_while_b_is_used, timeout_s=15, interval_s=0.1, what="idle model a to unload")
        assert states(server) == {"a": "UNLOADED", "b": "READY", "c": "READY"}  # c is pinned
        # Once nobody uses b, it goes too.
        wait_until(lambda: states(server)["b"] == "UNLOADED", timeout_s=15, interval_s=0.1, what="b to unload")
        assert states(server) == {"a": "UNLOADED", "b": "UNLOADED", "c": "READY"}
