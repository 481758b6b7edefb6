"""The sampled prediction log through the real server: what a record holds, sampling, rotation, Parquet, and
destinations that fail or hang without costing inference anything."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.model_builders import iris_repository
from tests.observability.test_metrics import scrape
from tests.server_process import running_server
from tests.waiting import wait_until

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
# One client for the module: httpx.post() alone builds a new client (and TLS context) per call, ~50 ms.
HTTP = httpx.Client(timeout=30)


def infer(
    url: str, *, rows: int = 1, parameters: dict[str, object] | None = None, request_id: str = "", model: str = "iris"
) -> None:
    body: dict = {"inputs": [{"name": "input-0", "shape": [rows, 4], "datatype": "FP32", "data": IRIS_ROW * rows}]}  # type: ignore[type-arg]
    if parameters:
        body["parameters"] = parameters
    if request_id:
        body["id"] = request_id
    response = HTTP.post(f"{url}/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text


def log_config(tmp_path: Path, directory: Path, **fields: object) -> Path:
    settings = {"enabled": True, "directory": str(directory), "sample_rate": 1.0, **fields}
    lines = ["prediction_log:"] + [f"  {key}: {json.dumps(value)}" for key, value in settings.items()]
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


def records_outcome(url: str, outcome: str, model: str = "iris") -> float:
    return scrape(url).get(("modelserve_prediction_log_records", (("model", model), ("outcome", outcome))), 0.0)


def wait_for(predicate, what: str, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    wait_until(predicate, timeout_s=timeout_s, interval_s=0.05, what=what)


def with_marker_model(repo: Path) -> Path:
    """Adds ``marker``, a copy of iris, to ``repo``. The log has one writer thread taking records in the
    order they were submitted (before each response is sent), so once a marker request sent last is counted,
    every record submitted before it has been counted too: a positive event to wait for instead of a sleep."""
    shutil.copytree(repo / "iris", repo / "marker")
    config = repo / "marker" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "iris"', 'name: "marker"'))
    return repo


def flush_with_marker(url: str) -> None:
    """Sends one marker request (sampled at rate 1) and waits until the log has written it."""
    before = records_outcome(url, "written", model="marker")
    infer(url, model="marker")
    wait_for(lambda: records_outcome(url, "written", model="marker") == before + 1, "the marker record")


def test_every_sampled_request_is_written_with_its_fields(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with running_server(iris_repository(tmp_path), config=log_config(tmp_path, logs)) as server:
        for i in range(20):
            infer(server.http_url, rows=2, parameters={"user_id": f"u{i}", "experiment": "blue"}, request_id=f"r{i}")
        wait_for(lambda: records_outcome(server.http_url, "written") == 20, "20 written records")
    lines = (logs / "iris" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 20
    first = json.loads(lines[0])
    assert first["request_id"] == "r0" and first["model"] == "iris" and first["version"] == "1"
    assert first["requested_version"] == ""
    assert first["parameters"] == {"user_id": "u0", "experiment": "blue"}
    assert first["inputs"]["input-0"] == {"datatype": "float32", "shape": [2, 4], "data": pytest.approx(IRIS_ROW * 2)}
    assert first["outputs"]["label"]["data"] == [0, 0]
    assert len(first["outputs"]["probabilities"]["data"]) == 6
    assert 0 < first["latency_ms"] < 10_000
    assert first["time"].endswith("+00:00")


def test_sampling_rate_and_per_model_override(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    repo = with_marker_model(iris_repository(tmp_path))
    config = log_config(tmp_path, logs, sample_rate=0.1, model_sample_rates={"marker": 1.0})
    with running_server(repo, config=config) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        tensor = grpcclient.InferInput("input-0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([IRIS_ROW], np.float32))
        for _ in range(1000):
            client.infer("iris", [tensor])
        flush_with_marker(server.http_url)
        written = records_outcome(server.http_url, "written")
        assert records_outcome(server.http_url, "dropped") == records_outcome(server.http_url, "failed") == 0
    # Binomial(1000, 0.1): mean 100, sd 9.5; 60..140 is more than 4 sd either side.
    assert 60 <= written <= 140
    config = log_config(tmp_path, logs, sample_rate=1.0, model_sample_rates={"iris": 0.0})
    with running_server(repo, config=config) as server:
        for _ in range(20):
            infer(server.http_url)
        flush_with_marker(server.http_url)  # the model-level 0.0 overrides the global 1.0; marker keeps 1.0
        assert records_outcome(server.http_url, "written") == 0


def test_files_rotate_within_their_size_and_count_caps(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    config = log_config(tmp_path, logs, max_file_bytes=4096, max_files=3)
    with running_server(iris_repository(tmp_path), config=config) as server:
        for _ in range(120):  # ~500 bytes a record: ~15 files' worth
            infer(server.http_url)
        wait_for(lambda: records_outcome(server.http_url, "written") == 120, "120 written records")
    files = sorted((logs / "iris").iterdir())
    assert len(files) == 3, files
    assert (logs / "iris" / "predictions.jsonl") in files
    for path in files:
        assert path.stat().st_size <= 4096
        for line in path.read_text().splitlines():
            json.loads(line)  # whole records only


def test_large_tensors_are_summarised(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with running_server(iris_repository(tmp_path), config=log_config(tmp_path, logs, max_inline_bytes=64)) as server:
        infer(server.http_url, rows=8)  # 8 x 4 float32 = 128 bytes
        wait_for(lambda: records_outcome(server.http_url, "written") == 1, "one record")
    record = json.loads((logs / "iris" / "predictions.jsonl").read_text())
    summary = record["inputs"]["input-0"]
    assert "data" not in summary and len(summary["sha256"]) == 64
    assert summary["shape"] == [8, 4] and summary["min"] == pytest.approx(0.2) and summary["max"] == pytest.approx(5.1)
    assert record["outputs"]["label"]["data"] == [0] * 8  # 64 bytes: still inline


def test_parquet_destination(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    logs = tmp_path / "logs"
    with running_server(iris_repository(tmp_path), config=log_config(tmp_path, logs, format="parquet")) as server:
        for i in range(30):
            infer(server.http_url, parameters={"user_id": f"u{i}"})
        wait_for(lambda: records_outcome(server.http_url, "written") == 30, "30 records")
    # Gathered records are written when the server stops.
    (path,) = (logs / "iris").glob("*.parquet")
    table = pq.read_table(path)
    assert table.num_rows == 30
    assert json.loads(table.column("parameters")[0].as_py()) == {"user_id": "u0"}
    assert json.loads(table.column("inputs")[0].as_py())["input-0"]["shape"] == [1, 4]


def test_a_failing_destination_costs_no_request(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be")
    with running_server(iris_repository(tmp_path), config=log_config(tmp_path, blocker)) as server:
        for _ in range(30):
            infer(server.http_url)  # each asserts 200
        wait_for(lambda: records_outcome(server.http_url, "failed") == 30, "30 failed records")
        assert records_outcome(server.http_url, "written") == 0


def test_a_hung_destination_drops_records_and_never_blocks_inference(tmp_path: Path) -> None:
    """The log file is a FIFO nobody reads: opening it blocks the writer thread forever (a hung disk). The
    bounded queue fills, further records are dropped and counted, requests go on at full speed, and the
    server still stops on SIGTERM."""
    logs = tmp_path / "logs"
    (logs / "iris").mkdir(parents=True)
    os.mkfifo(logs / "iris" / "predictions.jsonl")
    with running_server(iris_repository(tmp_path), config=log_config(tmp_path, logs, queue_size=5)) as server:
        started = time.monotonic()
        for _ in range(50):
            infer(server.http_url)
        elapsed = time.monotonic() - started
        # The stuck writer took its first batch (at most 5), 5 more wait; everything else was dropped.
        wait_for(lambda: records_outcome(server.http_url, "dropped") >= 40, "40 dropped records")
        assert records_outcome(server.http_url, "dropped") <= 45
        assert records_outcome(server.http_url, "written") == 0
        assert elapsed < 30  # (no time assertion tighter than "not hung": these machines are noisy)
