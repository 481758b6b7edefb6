"""Breakers and fallbacks through the real server, where the wire matters: a fallback answer is tagged on
REST (the ``x-modelserve-fallback`` header and the ``modelserve_fallback`` parameter) and on gRPC (the
response parameter); an open breaker is 503 + Retry-After on REST and UNAVAILABLE on gRPC, both naming
the breaker; /metrics shows the breaker's state and the fallbacks; the routing API shows the breakers and
refuses a fallback chain that does not fit the model. The policies come from the settings
file's ``routing`` group; the models raise while their flag file exists (set before the server starts)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_process import running_server
from tests.service.resilience_models import calls, write_flaky

SETTINGS = """
    routing:
      flaky:
        breaker: {consecutive_failures: 2, open_s: 600, max_open_s: 600, half_open_probes: 1}
        fallback: ["1"]
      lonely:
        breaker: {consecutive_failures: 2, open_s: 600, max_open_s: 600, half_open_probes: 1}
"""
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}


def inputs(module: type[httpclient.InferInput] | type[grpcclient.InferInput]) -> list[object]:
    tensor = module("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.array([[1.0, 2.0]], np.float32))
    return [tensor]


def test_fallback_tags_and_open_breakers_on_rest_and_grpc(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_flaky(repo, tmp_path, "flaky", versions=2)
    write_flaky(repo, tmp_path, "lonely")
    for flag in ("fail-flaky-2", "fail-lonely-1"):
        (tmp_path / flag).touch()
    config = tmp_path / "modelserve.yaml"
    config.write_text(textwrap.dedent(SETTINGS))
    explicit = ["--model-control-mode", "explicit", "--load-model", "*"]  # PUT /routing needs it
    with (
        running_server(repo, explicit, config=config) as server,
        httpx.Client(base_url=server.http_url, timeout=30) as rest,
    ):
        answered = rest.post("/v2/models/flaky/infer", json=BODY)
        assert answered.status_code == 200, answered.text
        assert answered.headers["x-modelserve-fallback"] == "1"
        document = answered.json()
        assert document["model_version"] == "1" and document["parameters"]["modelserve_fallback"] == "1"
        assert document["outputs"][0]["data"] == [1.0, 2.0]

        http_client = httpclient.InferenceServerClient(server.http_address)
        via_http = http_client.infer("flaky", inputs(httpclient.InferInput))
        assert via_http.get_response()["parameters"]["modelserve_fallback"] == "1"
        grpc_client = grpcclient.InferenceServerClient(server.grpc_address)
        via_grpc = grpc_client.infer("flaky", inputs(grpcclient.InferInput))
        response = via_grpc.get_response()
        assert response.model_version == "1" and response.parameters["modelserve_fallback"].string_param == "1"
        assert calls(tmp_path, "flaky", "2") == 2  # its breaker opened after 2; the third skipped it

        for _ in range(2):
            assert rest.post("/v2/models/lonely/infer", json=BODY).status_code == 500
        refused = rest.post("/v2/models/lonely/infer", json=BODY)
        assert refused.status_code == 503
        assert 590 <= int(refused.headers["retry-after"]) <= 600
        assert "circuit breaker for model 'lonely' version 1 is open after 2 failures in a row" in refused.text
        with pytest.raises(InferenceServerException) as unavailable:
            grpc_client.infer("lonely", inputs(grpcclient.InferInput))
        assert unavailable.value.status() == "StatusCode.UNAVAILABLE"
        assert "circuit breaker for model 'lonely' version 1 is open" in str(unavailable.value.message())
        assert calls(tmp_path, "lonely", "1") == 2

        shown = rest.get("/v2/models/lonely/routing").json()
        assert shown["breakers"]["1"]["state"] == "open" and shown["breakers"]["1"]["trips"] == 1
        assert shown["breakers"]["1"]["reason"] == "2 failures in a row"

        # The routing API checks a fallback chain against the model before it takes it.
        misfit = rest.put("/v2/models/flaky/routing", json={"fallback": [{"static": {"label": [1]}}]})
        assert misfit.status_code == 400
        assert "fallback[0]: static output 'label' is not an output of model 'flaky'" in misfit.text

        metrics = rest.get("/metrics").text
        assert 'modelserve_breaker_state{model="lonely",state="open",version="1"} 1.0' in metrics
        assert 'modelserve_breaker_state{model="flaky",state="open",version="2"} 1.0' in metrics
        assert 'modelserve_fallbacks_total{cause="model",model="flaky",target="1"} 2.0' in metrics
        assert 'modelserve_fallbacks_total{cause="breaker_open",model="flaky",target="1"} 1.0' in metrics
        http_client.close()
        grpc_client.close()
