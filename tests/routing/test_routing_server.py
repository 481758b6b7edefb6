"""Traffic routing through the real server (REST, gRPC, CLI) and the in-process engine: a split's arms,
the override header, the sticky key (header or parameter), precedence, ``modelserve_arm`` on every
answer, validation errors, persistence across a restart and in a second process, a live change under load
with no failed request, and the settings file's initial policies.

The model ``scaled`` answers ``x * version``, so every answer says which version served it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from modelserve.app.engine import Engine
from modelserve.routing.assignment import BucketTable, bucket_of, rebalance
from tests.model_builders import write_onnx_scale
from tests.server_process import ServerProcess, free_port, running_server
from tests.waiting import wait_until

CONFIG = """
    platform: "onnxruntime_onnx"
    max_batch_size: 8
    version_policy: { all { } }
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""
EXPLICIT = ["--model-control-mode", "explicit", "--load-model", "*"]
POLICY: dict[str, Any] = {
    "key": {"header": "x-user-id", "parameter": "user_id"},
    "split": [{"arm": "control", "target": "1", "weight": 50}, {"arm": "treatment", "target": "2", "weight": 50}],
    "override": {"header": "x-canary", "arms": {"true": "treatment", "false": "control"}},
}
UNITS = [f"user-{i}" for i in range(40)]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repository = tmp_path / "repo"
    for version in (1, 2):
        write_onnx_scale(repository / "scaled" / str(version) / "model.onnx", float(version))
    (repository / "scaled" / "config.pbtxt").write_text(textwrap.dedent(CONFIG))
    return repository


def expected_arm(table: BucketTable, unit: str) -> str:
    return table.arm(bucket_of("scaled", unit))


def rest(
    server: ServerProcess, *, version: str = "", headers: dict[str, str] | None = None, user_id: str | None = None
) -> httpx.Response:
    path = f"/v2/models/scaled/versions/{version}/infer" if version else "/v2/models/scaled/infer"
    body: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
    if user_id is not None:
        body["parameters"] = {"user_id": user_id}
    response = _HTTP.post(server.http_url + path, json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    return response


# One client for every call: a new httpx client per request costs ~20 ms (its TLS context) and dominated the
# tests that send a few hundred requests.
_HTTP = httpx.Client(timeout=30)


def rest_arm(response: httpx.Response) -> str | None:
    """The arm the answer names, checking that the header and the parameter agree and the version served."""
    document = response.json()
    arm: str | None = document.get("parameters", {}).get("modelserve_arm")
    assert response.headers.get("x-modelserve-arm") == arm
    assert document["outputs"][0]["data"][0] == float(document["model_version"])
    return arm


def grpc_infer(client: grpcclient.InferenceServerClient, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """(the arm the answer names, the version that served), checking the version's answer."""
    inp = grpcclient.InferInput("x", [1, 3], "FP32")
    inp.set_data_from_numpy(np.ones((1, 3), np.float32))
    result = client.infer("scaled", [inp], headers=headers)
    response = result.get_response()
    assert float(result.as_numpy("y")[0, 0]) == float(response.model_version)
    arm = response.parameters["modelserve_arm"].string_param if "modelserve_arm" in response.parameters else ""
    return arm, response.model_version


def put(server: ServerProcess, policy: Any) -> httpx.Response:
    return httpx.put(f"{server.http_url}/v2/models/scaled/routing", json=policy, timeout=30)


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve", *args, "--url", server.http_url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_precedence_over_rest_and_grpc(repo: Path) -> None:
    table = BucketTable.fresh([("control", 50.0), ("treatment", 50.0)])
    with running_server(repo, EXPLICIT) as server:
        assert rest_arm(rest(server)) is None  # no policy: no arm, the highest version
        answer = put(server, POLICY)
        assert answer.status_code == 200, answer.text
        assert answer.json()["shares"] == {"control": 50.0, "treatment": 50.0}
        # An explicit version wins over the override; no arm is reported.
        explicit = rest(server, version="1", headers={"x-canary": "true"})
        assert rest_arm(explicit) is None and explicit.json()["model_version"] == "1"
        # The override wins over the key; a value the policy does not list is ignored.
        unit = next(u for u in UNITS if expected_arm(table, u) == "control")
        overridden = rest(server, headers={"x-canary": "true", "x-user-id": unit})
        assert rest_arm(overridden) == "treatment" and overridden.json()["model_version"] == "2"
        assert rest_arm(rest(server, headers={"x-canary": "maybe", "x-user-id": unit})) == "control"
        # The sticky key: the header before the parameter, each unit always the arm its bucket gives.
        other = next(u for u in UNITS if expected_arm(table, u) == "treatment")
        assert rest_arm(rest(server, headers={"x-user-id": unit}, user_id=other)) == "control"
        for u in UNITS:
            arm = expected_arm(table, u)
            assert rest_arm(rest(server, user_id=u)) == arm
            assert rest_arm(rest(server, headers={"x-user-id": u})) == arm
        # No key: a draw, and every answer names its arm and comes from that arm's version.
        drawn = {rest_arm(rest(server)) for _ in range(40)}
        assert drawn == {"control", "treatment"}
        client = grpcclient.InferenceServerClient(server.grpc_address)
        try:
            assert grpc_infer(client, {"x-canary": "true", "x-user-id": unit}) == ("treatment", "2")
            assert grpc_infer(client, {"x-canary": "false", "x-user-id": other}) == ("control", "1")
            for u in UNITS[:10]:
                arm = expected_arm(table, u)
                assert grpc_infer(client, {"x-user-id": u}) == (arm, "1" if arm == "control" else "2")
            inp = grpcclient.InferInput("x", [1, 3], "FP32")
            inp.set_data_from_numpy(np.ones((1, 3), np.float32))
            pinned = client.infer("scaled", [inp], model_version="1", headers={"x-canary": "true"}).get_response()
            assert pinned.model_version == "1" and "modelserve_arm" not in pinned.parameters
        finally:
            client.close()
        metrics = httpx.get(f"{server.http_url}/metrics", timeout=30).text
        assert 'modelserve_routing_requests_total{arm="treatment",model="scaled",target="2"}' in metrics
        # An arm whose target is not loaded: 503 naming the arm and the target; the next good request works.
        assert (
            put(
                server,
                {
                    **POLICY,
                    "split": [
                        {"arm": "control", "target": "1", "weight": 50},
                        {"arm": "treatment", "target": "canary", "weight": 50},
                    ],
                },
            ).status_code
            == 200
        )
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
        missing = httpx.post(f"{server.http_url}/v2/models/scaled/infer", json=body, headers={"x-canary": "true"})
        assert missing.status_code == 503
        assert "arm 'treatment' goes to alias 'canary', which is not set" in missing.json()["error"]
        assert rest_arm(rest(server, headers={"x-canary": "false"})) == "control"
        cleared = httpx.delete(f"{server.http_url}/v2/models/scaled/routing", timeout=30)
        assert cleared.status_code == 200 and cleared.json()["policy"] is None
        assert rest_arm(rest(server, headers={"x-canary": "true"})) is None
        assert not (repo / "scaled" / "routing.json").exists()


def test_invalid_policies_are_refused_naming_the_field(repo: Path) -> None:
    with running_server(repo, EXPLICIT) as server:
        cases = [
            ({"split": [{"arm": "a", "target": "1", "weight": 60}]}, "weights must sum to 100, got 60"),
            ({"split": [{"arm": "a", "target": "1", "weight": 100}], "colour": "red"}, "colour: Extra inputs"),
            ({"split": [{"arm": "a", "target": "1", "weight": 120}]}, "split.0.weight"),
            ({**POLICY, "override": {"header": "x-canary", "arms": {"1": "nope"}}}, "'override' names arms ['nope']"),
            ({"key": {"header": "x-user-id"}}, "'key' assigns units to the arms of 'split', which is empty"),
        ]
        for policy, message in cases:
            refused = put(server, policy)
            assert refused.status_code == 400, refused.text
            assert "invalid routing policy" in refused.json()["error"] and message in refused.json()["error"]
        unknown = httpx.put(f"{server.http_url}/v2/models/nosuch/routing", json=POLICY, timeout=30)
        assert unknown.status_code == 404
        assert put(server, POLICY).status_code == 200  # the next good change succeeds
    with running_server(repo) as server:  # control mode none: changes are refused, reads allowed
        refused = put(server, POLICY)
        assert refused.status_code == 403 and "--model-control-mode explicit" in refused.json()["error"]
        assert httpx.delete(f"{server.http_url}/v2/models/scaled/routing").status_code == 403
        assert httpx.get(f"{server.http_url}/v2/models/scaled/routing").json()["policy"]["split"] == POLICY["split"]


def test_assignments_survive_a_restart_and_agree_in_a_second_process(repo: Path) -> None:
    first = [("control", 90.0), ("treatment", 10.0)]
    second = [("control", 70.0), ("treatment", 30.0)]
    table = rebalance(BucketTable.fresh(first), second)  # the history decides which buckets moved
    units = [f"user-{i}" for i in range(200)]

    def arms(server: ServerProcess) -> list[str | None]:
        return [rest_arm(rest(server, headers={"x-user-id": u})) for u in units]

    policy = {**POLICY, "split": [{"arm": a, "target": t, "weight": w} for (a, w), t in zip(first, "12", strict=True)]}
    with running_server(repo, EXPLICIT) as server:
        assert put(server, policy).status_code == 200
        policy["split"] = [{"arm": a, "target": t, "weight": w} for (a, w), t in zip(second, "12", strict=True)]
        assert put(server, policy).status_code == 200
        before = arms(server)
        assert before == [expected_arm(table, u) for u in units]
        with running_server(repo) as other:  # a second process, reading the persisted table
            assert arms(other) == before
    saved = json.loads((repo / "scaled" / "routing.json").read_text())
    assert BucketTable.from_ranges(saved["buckets"]) == table
    with running_server(repo) as server:  # a restart
        assert arms(server) == before
        shown = cli(server, "route", "show", "scaled")
        assert shown.returncode == 0 and json.loads(shown.stdout)["shares"] == {"control": 70.0, "treatment": 30.0}


def test_changing_weights_under_load_fails_no_request(repo: Path) -> None:
    with running_server(repo, EXPLICIT) as server:
        assert put(server, {"split": POLICY["split"]}).status_code == 200
        changes = 0
        seen: list[tuple[str, str]] = []
        failures: list[str] = []
        stop = threading.Event()

        def keep_sending() -> None:
            client = grpcclient.InferenceServerClient(server.grpc_address)
            try:
                while not stop.is_set() and not failures:
                    try:
                        seen.append(grpc_infer(client))
                    except (InferenceServerException, AssertionError) as exc:
                        failures.append(str(exc))
            finally:
                client.close()

        def more_answers(done: int) -> Callable[[], bool]:
            return lambda: len(seen) >= done + 50 or bool(failures)

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            senders = [pool.submit(keep_sending) for _ in range(2)]
            try:
                for weight in (10, 90, 0, 100, 30, 70):
                    wait_until(more_answers(len(seen)), what="50 answers between changes")
                    split = [{**POLICY["split"][0], "weight": weight}, {**POLICY["split"][1], "weight": 100 - weight}]
                    assert put(server, {"split": split}).status_code == 200
                    changes += 1
                wait_until(lambda: len(seen) >= 50 * (changes + 1) or failures, what="answers after the last change")
            finally:
                stop.set()
                for sender in senders:
                    sender.result(timeout=60)
        assert failures == []
        assert set(seen) <= {("control", "1"), ("treatment", "2")}
        assert {arm for arm, _ in seen} == {"control", "treatment"}


def test_the_cli_sets_shows_and_clears_a_policy(repo: Path, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "split:\n  - {arm: control, target: '1', weight: 80}\n  - {arm: treatment, target: '2', weight: 20}\n"
    )
    with running_server(repo, EXPLICIT) as server:
        result = cli(server, "route", "set", "scaled", str(policy_file))
        assert result.stdout.strip() == "scaled: routing set: control 80 % -> 1, treatment 20 % -> 2", result.stderr
        inline = cli(server, "route", "set", "scaled", json.dumps(POLICY))
        assert inline.returncode == 0, inline.stderr
        assert json.loads(cli(server, "route", "show", "scaled").stdout)["policy"]["override"]["header"] == "x-canary"
        bad = cli(server, "route", "set", "scaled", '{"split": []')
        assert bad.returncode == 1 and "not valid JSON" in bad.stderr
        invalid = cli(server, "route", "set", "scaled", '{"split": [{"arm": "a", "target": "1", "weight": 5}]}')
        assert invalid.returncode == 1 and "weights must sum to 100" in invalid.stderr
        assert cli(server, "route", "clear", "scaled").stdout.strip() == "scaled: routing cleared"
        assert json.loads(cli(server, "route", "show", "scaled").stdout)["policy"] is None


def test_the_settings_file_seeds_policies_and_the_persisted_file_wins(repo: Path, tmp_path: Path) -> None:
    config = tmp_path / "modelserve.yaml"
    config.write_text(
        json.dumps(
            {
                "routing": {
                    "scaled": {
                        **POLICY,
                        "split": [{**POLICY["split"][0], "weight": 100}, {**POLICY["split"][1], "weight": 0}],
                    }
                }
            }
        )
    )
    with running_server(repo, EXPLICIT, config=config) as server:
        assert rest_arm(rest(server, headers={"x-user-id": "u"})) == "control"
        assert rest_arm(rest(server, headers={"x-canary": "true"})) == "treatment"  # keys read live, unconfigured
        moved = put(server, {"split": [{**POLICY["split"][0], "weight": 0}, {**POLICY["split"][1], "weight": 100}]})
        assert moved.status_code == 200, moved.text
    with running_server(repo, EXPLICIT, config=config) as server:  # the file written by the API wins
        assert rest_arm(rest(server)) == "treatment"
    config.write_text(json.dumps({"routing": {"scaled": {"split": [{"arm": "a", "target": "1", "weight": 7}]}}}))
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelserve",
            "serve",
            "--model-repository",
            str(repo),
            "--config",
            str(config),
            "--http-port",
            str(free_port()),
            "--grpc-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 2, failed.stderr
    assert "routing.scaled: 'split' weights must sum to 100, got 7" in failed.stderr


def test_the_in_process_engine_routes_and_reports_the_arm(repo: Path) -> None:
    asyncio.run(in_process_scenario(repo))


async def in_process_scenario(repo: Path) -> None:
    async with Engine.from_repository(repo, load="*") as engine:
        document = await engine.set_routing("scaled", POLICY)
        assert document["shares"] == {"control": 50.0, "treatment": 50.0}
        ones = {"x": np.ones((1, 3), np.float32)}
        canary = await engine.infer("scaled", ones, headers={"x-canary": "true"})
        assert (canary.arm, canary.model_version) == ("treatment", "2")
        pinned = await engine.infer("scaled", ones, version="1", headers={"x-canary": "true"})
        assert (pinned.arm, pinned.model_version) == ("", "1")
        table = BucketTable.fresh([("control", 50.0), ("treatment", 50.0)])
        for unit in UNITS[:10]:
            sticky = await engine.infer("scaled", ones, parameters={"user_id": unit})
            assert sticky.arm == expected_arm(table, unit)
        await engine.clear_routing("scaled")
        assert (await engine.infer("scaled", ones, headers={"x-canary": "true"})).arm == ""
