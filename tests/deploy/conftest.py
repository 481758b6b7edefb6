from __future__ import annotations

import httpx
import pytest

from tests.server_process import ServerProcess

IRIS_REQUEST = {
    "inputs": [
        {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}
    ]
}


@pytest.fixture(scope="session")
def examples_exposition(examples_server: ServerProcess) -> str:
    """/metrics of the shared example server after a little traffic."""
    with httpx.Client(base_url=examples_server.http_url, timeout=10.0) as client:
        for _ in range(5):
            assert client.post("/v2/models/iris/infer", json=IRIS_REQUEST).status_code == 200
        response = client.get("/metrics")
    assert response.status_code == 200
    return response.text
