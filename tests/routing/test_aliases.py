"""Aliases and rollback through the real server and the CLI: set, resolve (REST path, gRPC version,
no version = production), persist across restarts, roll back, switch under load with no failed request."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.model_builders import write_onnx_scale
from tests.server_process import running_server
from tests.waiting import wait_until

CONFIG = """
    platform: "onnxruntime_onnx"
    max_batch_size: 8
    version_policy: { all { } }
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""
EXPLICIT = ["--model-control-mode", "explicit", "--load-model", "*"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repository = tmp_path / "repo"
    for version in (1, 2, 3):
        write_onnx_scale(repository / "scaled" / str(version) / "model.onnx", float(version))
    (repository / "scaled" / "config.pbtxt").write_text(textwrap.dedent(CONFIG))
    return repository


def grpc_factor(address: str, version: str = "") -> float:
    client = grpcclient.InferenceServerClient(address)
    inp = grpcclient.InferInput("x", [1, 3], "FP32")
    inp.set_data_from_numpy(np.ones((1, 3), np.float32))
    return float(client.infer("scaled", [inp], model_version=version).as_numpy("y")[0, 0])


def rest_infer(url: str, version: str = "") -> httpx.Response:
    path = f"/v2/models/scaled/versions/{version}/infer" if version else "/v2/models/scaled/infer"
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
    return httpx.post(url + path, json=body)


def cli(server, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "modelserve", *args, "--url", server.http_url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_aliases_route_requests_persist_and_roll_back(repo: Path) -> None:
    with running_server(repo, EXPLICIT) as server:
        assert grpc_factor(server.grpc_address) == 3.0  # no alias yet: the highest version
        assert (
            cli(server, "alias", "set", "scaled", "production", "1").stdout.strip() == "scaled: production -> version 1"
        )
        assert cli(server, "alias", "set", "scaled", "canary", "3").returncode == 0
        assert grpc_factor(server.grpc_address) == 1.0  # no version: production
        assert grpc_factor(server.grpc_address, "canary") == 3.0
        response = rest_infer(server.http_url, "canary")
        assert response.json()["model_version"] == "3"  # responses and statistics report numbers
        assert cli(server, "alias", "set", "scaled", "production", "2").returncode == 0
        assert rest_infer(server.http_url).json()["model_version"] == "2"
        listed = cli(server, "alias", "list", "scaled").stdout
        assert "production       2        was 1" in listed
        saved = json.loads((repo / "scaled" / "aliases.json").read_text())
        assert saved["production"] == {"version": "2", "history": ["1"]}
    # The aliases survive a restart.
    with running_server(repo, EXPLICIT) as server:
        assert grpc_factor(server.grpc_address) == 2.0
        result = cli(server, "rollback", "scaled")
        assert result.stdout.strip() == "scaled: production rolled back to version 1"
        assert grpc_factor(server.grpc_address) == 1.0
        again = cli(server, "rollback", "scaled")
        assert again.returncode == 1 and "no earlier version to roll back to" in again.stderr
        models = cli(server, "models").stdout.split("\n")
        assert sum("READY" in line for line in models) == 3


def test_alias_errors_name_the_fix(repo: Path) -> None:
    with running_server(repo, EXPLICIT) as server:
        unknown = rest_infer(server.http_url, "blue")
        assert unknown.status_code == 404 and "no version or alias 'blue'" in unknown.json()["error"]
        bad = httpx.post(f"{server.http_url}/v2/models/scaled/aliases/production", json={"version": "7"})
        assert bad.status_code == 404 and "loaded versions: ['1', '2', '3']" in bad.json()["error"]
        bad_name = httpx.post(f"{server.http_url}/v2/models/scaled/aliases/bad%20name", json={"version": "1"})
        assert bad_name.status_code == 400 and "invalid alias 'bad name'" in bad_name.json()["error"]
        malformed = httpx.post(f"{server.http_url}/v2/models/scaled/aliases/production", json={"v": 1})
        assert malformed.status_code == 400 and '{"version": "<number>"}' in malformed.json()["error"]
        assert rest_infer(server.http_url).status_code == 200
    with running_server(repo) as server:  # control mode none: alias changes are refused, reads allowed
        refused = httpx.post(f"{server.http_url}/v2/models/scaled/aliases/production", json={"version": "1"})
        assert refused.status_code == 403 and "--model-control-mode explicit" in refused.json()["error"]
        assert httpx.get(f"{server.http_url}/v2/models/scaled/aliases").status_code == 200


@pytest.mark.parametrize("action", ["switch", "rollback"])
def test_switching_an_alias_under_load_fails_no_request(repo: Path, action: str) -> None:
    with running_server(repo, EXPLICIT) as server:
        assert cli(server, "alias", "set", "scaled", "production", "1").returncode == 0
        if action == "rollback":
            assert cli(server, "alias", "set", "scaled", "production", "2").returncode == 0
        old, new = (1.0, 2.0) if action == "switch" else (2.0, 1.0)
        switched = threading.Event()
        seen: list[tuple[float, bool]] = []
        failures: list[str] = []

        def keep_sending() -> None:
            client = grpcclient.InferenceServerClient(server.grpc_address)
            inp = grpcclient.InferInput("x", [1, 3], "FP32")
            inp.set_data_from_numpy(np.ones((1, 3), np.float32))
            after = 0
            for _ in range(3000):
                is_after = switched.is_set()
                try:
                    seen.append((float(client.infer("scaled", [inp]).as_numpy("y")[0, 0]), is_after))
                except InferenceServerException as exc:
                    failures.append(str(exc))
                after += is_after
                if after >= 100:
                    return

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            senders = [pool.submit(keep_sending) for _ in range(2)]
            wait_until(lambda: len(seen) >= 100 or failures, interval_s=0.01, what="100 answers before the switch")
            if action == "switch":
                assert cli(server, "alias", "set", "scaled", "production", "2").returncode == 0
            else:
                assert cli(server, "rollback", "scaled").returncode == 0
            switched.set()
            for sender in senders:
                sender.result(timeout=60)
        assert failures == []
        assert {factor for factor, _ in seen} == {old, new}
        assert {factor for factor, after in seen if after} == {new}
