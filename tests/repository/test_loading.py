"""Loading through the real server: Triton repositories as they are, auto-complete, mismatches,
single-flight loads, failed loads reported and retried."""

from __future__ import annotations

import concurrent.futures
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto
from tritonclient.utils import InferenceServerException

from tests.model_builders import write_onnx_add, write_python_model
from tests.server_process import running_server

COUNTING_MODEL = """
    import time
    from pathlib import Path

    import numpy as np

    from modelserve import ModelContext, PythonModel


    class Model(PythonModel):
        def load(self, context: ModelContext) -> None:
            log = Path(context.parameters["load_log"])
            with log.open("a") as f:
                f.write("load\\n")
            time.sleep(0.5)  # a slow load widens the window in which requests race
            if Path(context.parameters["fail_flag"]).exists():
                raise RuntimeError("the weights are corrupt")

        def infer(self, inputs):
            return {"y": inputs["x"] * 2}
"""


def counting_config(tmp_path: Path) -> str:
    return f"""
        backend: "python"
        max_batch_size: 8
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        parameters {{ key: "load_log" value: {{ string_value: "{tmp_path / "loads.log"}" }} }}
        parameters {{ key: "fail_flag" value: {{ string_value: "{tmp_path / "fail"}" }} }}
    """


def _infer_x(url: str, model: str) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)


def test_racing_burst_of_first_requests_loads_the_model_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "counted", COUNTING_MODEL, counting_config(tmp_path))
    with running_server(repo, ["--model-control-mode", "explicit", "--load-on-demand"]) as server:
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(lambda _: _infer_x(server.http_url, "counted"), range(50)))
        assert [r.status_code for r in responses] == [200] * 50
        assert all(r.json()["outputs"][0]["data"] == [2.0, 4.0] for r in responses)
        assert (tmp_path / "loads.log").read_text().count("load") == 1


def test_failed_load_reaches_every_waiter_and_can_be_retried(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "counted", COUNTING_MODEL, counting_config(tmp_path))
    (tmp_path / "fail").touch()
    with running_server(repo, ["--model-control-mode", "explicit", "--load-on-demand"]) as server:
        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
            responses = list(pool.map(lambda _: _infer_x(server.http_url, "counted"), range(10)))
        assert {r.status_code for r in responses} == {400}
        assert all("the weights are corrupt" in r.json()["error"] for r in responses)
        assert (tmp_path / "loads.log").read_text().count("load") == 1
        index = httpx.post(f"{server.http_url}/v2/repository/index").json()
        assert index == [{"name": "counted", "version": "1", "state": "FAILED", "reason": index[0]["reason"]}]
        # The index keeps the stage's reason; the request's error starts with Triton's "failed to load".
        assert responses[0].json()["error"] == f"failed to load 'counted': {index[0]['reason']}"
        (tmp_path / "fail").unlink()
        client = httpclient.InferenceServerClient(server.http_address)
        client.load_model("counted")
        assert client.is_model_ready("counted")
        assert _infer_x(server.http_url, "counted").json()["outputs"][0]["data"] == [2.0, 4.0]


def test_a_triton_repository_of_onnx_models_loads_as_it_is(tmp_path: Path) -> None:
    """Triton's own layout and config fields, including ones this server only reports (warm-up,
    optimization), with versions chosen by version_policy."""
    repo = tmp_path / "repo"
    for version in (1, 2, 3):
        write_onnx_add(repo / "adder" / str(version) / "model.onnx")
    (repo / "adder" / "config.pbtxt").write_text(
        textwrap.dedent("""
        name: "adder"
        platform: "onnxruntime_onnx"
        max_batch_size: 16
        version_policy: { latest: { num_versions: 2 } }
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
        instance_group [ { count: 2 kind: KIND_CPU } ]
        optimization { graph { level: 1 } }
        parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
        model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } } } ]
    """)
    )
    write_onnx_add(repo / "plain" / "1" / "model.onnx", batch=False, width=5, elem=TensorProto.INT64)
    with running_server(repo) as server:
        client = httpclient.InferenceServerClient(server.http_address)
        metadata = client.get_model_metadata("adder")
        assert metadata["versions"] == ["2", "3"]
        assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        for version in ("2", "3", ""):
            inp = httpclient.InferInput("x", [2, 3], "FP32")
            inp.set_data_from_numpy(x)
            result = client.infer("adder", [inp], model_version=version)
            np.testing.assert_array_equal(result.as_numpy("y"), x + x)
            assert result.get_response()["model_version"] == (version or "3")
        with pytest.raises(InferenceServerException, match="'adder' version 1 is not found"):
            client.infer("adder", [inp], model_version="1")
        # No config.pbtxt: completed from the ONNX file, like Triton's auto-complete.
        plain = client.get_model_config("plain")
        assert plain["max_batch_size"] == 0
        assert plain["input"] == [{"name": "x", "data_type": "TYPE_INT64", "dims": [5]}]
        g = grpcclient.InferenceServerClient(server.grpc_address)
        inp = grpcclient.InferInput("x", [5], "INT64")
        inp.set_data_from_numpy(np.arange(5, dtype=np.int64))
        np.testing.assert_array_equal(g.infer("plain", [inp]).as_numpy("y"), np.arange(5) * 2)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            'input [ { name: "x" data_type: TYPE_FP64 dims: [ 3 ] } ] output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]',
            "input 'x' has data_type TYPE_FP64 but model.onnx declares FP32",
        ),
        (
            'input [ { name: "z" data_type: TYPE_FP32 dims: [ 3 ] } ] output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]',
            "input 'z' is not in model.onnx",
        ),
        (
            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]',
            "has shape [-1, 4] (batch dim included) but model.onnx declares [-1, 3]",
        ),
        ('platform: "tensorrt_plan"', "platform 'tensorrt_plan'"),
    ],
)
def test_a_config_that_disagrees_with_the_model_file_is_refused_naming_both(
    tmp_path: Path, config: str, expected: str
) -> None:
    repo = tmp_path / "repo"
    write_onnx_add(repo / "bad" / "1" / "model.onnx")
    (repo / "bad" / "config.pbtxt").write_text(f'name: "bad" max_batch_size: 4 {config}')
    write_onnx_add(repo / "good" / "1" / "model.onnx")
    with running_server(repo, wait_ready=False) as server:
        client = httpclient.InferenceServerClient(server.http_address)
        # Bounded wait for both loads to finish (one fails, one succeeds).
        for _ in range(200):
            states = {m["name"]: m["state"] for m in client.get_model_repository_index()}
            if states.get("good") == "READY" and states.get("bad") == "FAILED":
                break
            httpx.get(f"{server.http_url}/v2/health/live", timeout=1)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["bad"]["state"] == "FAILED"
        assert expected in index["bad"]["reason"]
        assert not client.is_server_ready()  # strict readiness: a model that should serve does not
        assert client.is_model_ready("good")
        with pytest.raises(InferenceServerException, match=r"has no available versions\. Model 'bad' failed to load"):
            client.get_model_metadata("bad")


def test_model_control_is_refused_in_mode_none_and_works_in_explicit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_onnx_add(repo / "adder" / "1" / "model.onnx")
    with running_server(repo) as server:
        response = httpx.post(f"{server.http_url}/v2/repository/models/adder/unload")
        assert response.status_code == 403
        assert "--model-control-mode explicit" in response.json()["error"]
        assert httpclient.InferenceServerClient(server.http_address).is_model_ready("adder")
    with running_server(repo, ["--model-control-mode", "explicit"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        assert [m.state for m in client.get_model_repository_index().models] == ["UNKNOWN"]
        client.load_model("adder")
        assert client.is_model_ready("adder")
        client.unload_model("adder")
        assert not client.is_model_ready("adder")
        with pytest.raises(InferenceServerException, match="not loaded"):
            inp = grpcclient.InferInput("x", [1, 3], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
            client.infer("adder", [inp])
        with pytest.raises(
            InferenceServerException, match="failed to load 'nothere', failed to poll from model repository"
        ):
            client.load_model("nothere")
        client.load_model("adder")
        assert client.is_model_ready("adder")
