"""Traffic routing with ``--workers 2``: a policy change through one worker reaches the other before the
API call returns, and a unit gets the same arm from whichever worker answers (each request on a new
connection, so the kernel spreads them over both)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx

from modelserve.routing.assignment import BucketTable, bucket_of, rebalance
from tests.app.test_workers import wait_for_workers
from tests.model_builders import write_onnx_scale
from tests.server_process import ServerProcess, running_server

CONFIG = """
    platform: "onnxruntime_onnx"
    max_batch_size: 8
    version_policy: { all { } }
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""
BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}


def split(control: float) -> dict[str, Any]:
    return {
        "key": {"header": "x-user-id"},
        "split": [
            {"arm": "control", "target": "1", "weight": control},
            {"arm": "treatment", "target": "2", "weight": 100 - control},
        ],
    }


def arm_on_a_new_connection(server: ServerProcess, headers: dict[str, str]) -> str:
    with httpx.Client(timeout=30) as client:  # a new connection: any worker may answer
        answer = client.post(f"{server.http_url}/v2/models/scaled/infer", json=BODY, headers=headers)
    assert answer.status_code == 200, answer.text
    served = answer.json()["model_version"]
    arm = answer.headers["x-modelserve-arm"]
    assert served == {"control": "1", "treatment": "2"}[arm]
    return arm


def test_a_change_through_one_worker_applies_to_all_and_units_keep_their_arm(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for version in (1, 2):
        write_onnx_scale(repo / "scaled" / str(version) / "model.onnx", float(version))
    (repo / "scaled" / "config.pbtxt").write_text(textwrap.dedent(CONFIG))
    arguments = ["--workers", "2", "--model-control-mode", "explicit", "--load-model", "*"]
    with running_server(repo, arguments) as server:
        wait_for_workers(server)
        set_once = httpx.put(f"{server.http_url}/v2/models/scaled/routing", json=split(0), timeout=30)
        assert set_once.status_code == 200, set_once.text
        # Every worker routes by the new policy as soon as the call returned: all treatment.
        assert {arm_on_a_new_connection(server, {}) for _ in range(24)} == {"treatment"}
        changed = httpx.put(f"{server.http_url}/v2/models/scaled/routing", json=split(60), timeout=30)
        assert changed.status_code == 200, changed.text
        table = rebalance(
            BucketTable.fresh([("control", 0.0), ("treatment", 100.0)]), [("control", 60.0), ("treatment", 40.0)]
        )
        for unit in [f"user-{i}" for i in range(12)]:
            expected = table.arm(bucket_of("scaled", unit))
            assert {arm_on_a_new_connection(server, {"x-user-id": unit}) for _ in range(4)} == {expected}
