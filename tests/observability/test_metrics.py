"""/metrics through the real server: Triton's names and semantics, failure reasons, histograms that
agree with the counters and with the statistics extension."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from tests.model_builders import iris_repository
from tests.server_process import running_server


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    text = httpx.get(f"{url}/metrics").text
    assert "nv_inference_count{" in text and "nv_inference_count_total" not in text  # Triton's exact names
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # prometheus_client's parser renames counter samples to <family>_total; key them by family name.
            name = family.name if family.type == "counter" and sample.name == family.name + "_total" else sample.name
            samples[(name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    return samples[(name, tuple(sorted(labels.items())))]


def test_triton_metric_names_and_semantics(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    with running_server(repo) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        for rows in (1, 2, 5):
            inp = grpcclient.InferInput("input-0", [rows, 4], "FP32")
            inp.set_data_from_numpy(np.ones((rows, 4), np.float32))
            client.infer("iris", [inp])
        bad = httpx.post(
            f"{server.http_url}/v2/models/iris/infer",
            json={
                "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                "parameters": {"priority": 9},
            },
        )
        assert bad.status_code == 200  # no batcher: priority is ignored, like Triton without dynamic_batching
        samples = scrape(server.http_url)
        iris = {"model": "iris", "version": "1"}
        assert value(samples, "nv_inference_request_success", **iris) == 4
        assert value(samples, "nv_inference_count", **iris) == 1 + 2 + 5 + 1  # rows
        assert value(samples, "nv_inference_exec_count", **iris) == 4
        assert value(samples, "nv_inference_request_failure", **iris, reason="BACKEND") == 0
        assert value(samples, "nv_inference_queue_duration_us", **iris) > 0
        assert value(samples, "nv_inference_pending_request_count", **iris) == 0
        assert value(samples, "nv_model_load_duration_secs", **iris) > 0
        assert 0 <= value(samples, "nv_cpu_utilization") <= 1
        assert value(samples, "nv_cpu_memory_used_bytes") > 0
        assert value(samples, "modelserve_process_resident_memory_bytes") > 10 * 2**20  # at least the libraries
        assert value(samples, "modelserve_model_state", **iris, state="READY") == 1
        assert value(samples, "modelserve_model_state", **iris, state="FAILED") == 0
        assert value(samples, "modelserve_inflight_requests", **iris) == 0
        assert value(samples, "modelserve_model_warmup_duration_seconds", **iris) >= 0
        assert not any(name.endswith("_created") for name, _ in samples)
        # Histograms agree with the counters and the statistics extension.
        assert value(samples, "modelserve_request_duration_seconds_count", **iris) == 4
        assert value(samples, "modelserve_request_duration_seconds_bucket", **iris, le="+Inf") == 4
        assert value(samples, "modelserve_batch_size_bucket", **iris, le="2.0") == 3  # batches of 1, 2, 1 rows
        stats = httpx.get(f"{server.http_url}/v2/models/iris/stats").json()["model_stats"][0]
        queue_us = value(samples, "nv_inference_queue_duration_us", **iris)
        assert abs(queue_us - stats["inference_stats"]["queue"]["ns"] / 1000) < 1e-6


PYTHON_MODEL = """
    from modelserve import PythonModel


    class Model(PythonModel):
        def infer(self, inputs):
            raise ValueError("nope")
"""


def test_failure_reasons(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.py").write_text(textwrap.dedent(PYTHON_MODEL))
    (repo / "broken" / "config.pbtxt").write_text(
        textwrap.dedent("""
        backend: "python"
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
    """)
    )
    with running_server(repo) as server:
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
        for _ in range(3):
            assert httpx.post(f"{server.http_url}/v2/models/broken/infer", json=body).status_code == 500
        samples = scrape(server.http_url)
        labels = {"model": "broken", "version": "1"}
        assert value(samples, "nv_inference_request_failure", **labels, reason="BACKEND") == 3
        assert value(samples, "nv_inference_request_success", **labels) == 0
        # The finer cause, and Triton's request duration counting successful requests only.
        assert value(samples, "modelserve_request_failures", **labels, cause="model") == 3
        assert value(samples, "modelserve_request_failures", **labels, cause="shed") == 0
        assert value(samples, "nv_inference_request_duration_us", **labels) == 0


def test_metrics_on_their_own_port_and_off_on_the_rest_port(tmp_path: Path) -> None:
    from tests.server_process import free_port

    repo = iris_repository(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("metrics:\n  enabled: false\n")
    port = free_port()
    with running_server(repo, ["--metrics-port", str(port)], config=config) as server:
        own = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert own.status_code == 200 and "nv_inference_request_success{" in own.text
        assert own.headers["content-type"].startswith("text/plain")
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 404
        assert httpx.post(f"http://127.0.0.1:{port}/metrics").status_code == 405
        assert httpx.get(f"{server.http_url}/metrics").status_code == 404  # metrics.enabled: false
    from tests.server_process import port_is_free

    assert port_is_free(port)
