"""Dynamic batching through the real server: merging, rows not requests, deadlines, cancellation,
isolation of bad requests, per-request outputs, priorities, queue bounds. Each test names the peer bug it
guards against."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.model_builders import write_python_model
from tests.observability.test_metrics import scrape, value
from tests.server_process import ServerProcess, running_server
from tests.waiting import wait_until

# x: FP32 [-1, 2]. Row conventions: x[0] == 999 -> sleep x[1] seconds; any value == -1 -> raise.
# Every call appends {"rows": n, "tags": [x[:,0]...]} to the call log, so tests see what ran together.
BATCH_MODEL = """
    import json
    import time
    from pathlib import Path

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            self.log = Path(context.parameters["call_log"])

        def infer(self, inputs):
            x = inputs["x"]
            with self.log.open("a") as f:
                f.write(json.dumps({"rows": int(x.shape[0]), "tags": [float(v) for v in x[:, 0]]}) + "\\n")
            if (x == -1).any():
                raise ValueError("a row holds -1, which this model refuses")
            for row in x:
                if row[0] == 999:
                    time.sleep(float(row[1]))
            return {"double": x * 2, "total": x.sum(axis=1, keepdims=True)}
"""


def batch_config(tmp_path: Path, *, max_batch_size: int = 16, batching: str = "", policy: str = "adaptive") -> str:
    return f"""
        backend: "python"
        max_batch_size: {max_batch_size}
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        output [
          {{ name: "double" data_type: TYPE_FP32 dims: [ 2 ] }},
          {{ name: "total" data_type: TYPE_FP32 dims: [ 1 ] }}
        ]
        dynamic_batching {{ {batching} }}
        parameters {{ key: "call_log" value: {{ string_value: "{tmp_path / "calls.log"}" }} }}
        parameters {{ key: "batch_policy" value: {{ string_value: "{policy}" }} }}
    """


def calls(tmp_path: Path) -> list[dict]:  # type: ignore[type-arg]
    path = tmp_path / "calls.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def infer(server: ServerProcess, rows: np.ndarray, **extra) -> httpx.Response:  # type: ignore[no-untyped-def]
    body = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    body.update(extra)
    return httpx.post(f"{server.http_url}/v2/models/batched/infer", json=body, timeout=60)


def wait_for_call(tmp_path: Path, tag: float, timeout_s: float = 10.0) -> None:
    wait_until(
        lambda: any(tag in c["tags"] for c in calls(tmp_path)),
        timeout_s=timeout_s,
        interval_s=0.01,
        what=f"a call with tag {tag} to start",
    )


def stats(server: ServerProcess) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{server.http_url}/v2/models/batched/stats").json()["model_stats"][0]  # type: ignore[no-any-return]


def queued(server: ServerProcess) -> float:
    """Requests waiting in the batcher's queue (Triton's pending-request gauge)."""
    return value(scrape(server.http_url), "nv_inference_pending_request_count", model="batched", version="1")


def wait_queued(server: ServerProcess, count: int) -> None:
    wait_until(lambda: queued(server) == count, what=f"{count} requests queued behind the busy instance")


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as executor:
        yield executor


def start_busy(server: ServerProcess, tmp_path: Path, pool, seconds: float) -> concurrent.futures.Future:  # type: ignore[no-untyped-def,type-arg]
    """Occupy the only instance with a slow one-row request, and wait until it runs."""
    busy = pool.submit(infer, server, np.array([[999, seconds]], np.float32))
    wait_for_call(tmp_path, 999.0)
    return busy


def test_requests_queued_while_busy_are_merged_and_each_gets_its_own_rows(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    """MLServer #1306: with batching on, one caller got everything and the others got nothing."""
    repo = tmp_path / "repo"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 1.0)
        rows = [np.array([[i, i + 0.5]] * (1 + i % 3), np.float32) for i in range(1, 11)]
        futures = [pool.submit(infer, server, r) for r in rows]
        responses = [f.result(timeout=30) for f in futures]
        assert busy.result(timeout=30).status_code == 200
        for r, response in zip(rows, responses, strict=True):
            assert response.status_code == 200, response.text
            outputs = {o["name"]: o for o in response.json()["outputs"]}
            assert outputs["double"]["shape"] == [len(r), 2]
            np.testing.assert_allclose(outputs["double"]["data"], (r * 2).ravel())
            np.testing.assert_allclose(outputs["total"]["data"], r.sum(axis=1))
        merged = [c for c in calls(tmp_path) if 999.0 not in c["tags"]]
        assert len(merged) < len(rows), f"no request was merged: {merged}"
        s = stats(server)
        assert s["execution_count"] < s["inference_stats"]["success"]["count"]
        assert s["inference_count"] == 1 + sum(len(r) for r in rows)
        assert max(b["batch_size"] for b in s["batch_stats"]) > 1


def test_max_batch_size_counts_rows_not_requests(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    """BentoML #3859: max_batch_size ignored each request's own rows."""
    repo = tmp_path / "repo"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path, max_batch_size=4))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 0.8)
        futures = [pool.submit(infer, server, np.full((3, 2), i, np.float32)) for i in range(1, 5)]
        assert all(f.result(timeout=30).status_code == 200 for f in futures)
        busy.result(timeout=30)
        assert all(c["rows"] <= 4 for c in calls(tmp_path))
        assert all(b["batch_size"] <= 4 for b in stats(server)["batch_stats"])


def test_a_bad_request_in_a_batch_fails_alone(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    """Ray #66140: one failing request took the batch (and the batching loop) down with it."""
    repo = tmp_path / "repo"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 0.8)
        good = [pool.submit(infer, server, np.array([[i, i]], np.float32)) for i in range(1, 6)]
        bad = pool.submit(infer, server, np.array([[-1, -1]], np.float32))
        more_good = [pool.submit(infer, server, np.array([[i, i]], np.float32)) for i in range(6, 9)]
        busy.result(timeout=30)
        assert [f.result(timeout=30).status_code for f in good + more_good] == [200] * 8
        failed = bad.result(timeout=30)
        assert failed.status_code == 500
        assert "a row holds -1" in failed.json()["error"]
        assert any(c["rows"] > 1 and -1.0 in c["tags"] for c in calls(tmp_path)), "the bad request was never batched"
        # The batcher is healthy afterwards.
        assert infer(server, np.array([[42, 1]], np.float32)).status_code == 200


def test_each_caller_gets_the_outputs_it_asked_for_inside_a_merged_batch(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    """MLServer #514: adaptive batching ignored per-request requested outputs."""
    repo = tmp_path / "repo"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 0.8)
        asks = [["double"], ["total"], ["total", "double"], None] * 3
        futures = []
        for i, ask in enumerate(asks):
            extra = {"outputs": [{"name": n} for n in ask]} if ask else {}
            futures.append(pool.submit(infer, server, np.array([[i, 1]], np.float32), **extra))
        busy.result(timeout=30)
        for i, (ask, future) in enumerate(zip(asks, futures, strict=True)):
            response = future.result(timeout=30).json()
            names = [o["name"] for o in response["outputs"]]
            assert names == (ask or ["double", "total"])
            values = {o["name"]: o["data"] for o in response["outputs"]}
            if "total" in values:
                assert values["total"] == [i + 1]
            if "double" in values:
                assert values["double"] == [2 * i, 2]


def test_queued_request_times_out_at_its_deadline_not_after_the_running_batch(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    """Triton #7512: the queue timeout fired only after the running inference ended."""
    repo = tmp_path / "repo"
    batching = "default_queue_policy { allow_timeout_override: true }"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path, batching=batching))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 3.0)
        response = infer(server, np.array([[77, 0]], np.float32), parameters={"timeout": 200_000})
        assert response.status_code == 504
        assert not busy.done(), "the deadline was answered only after the long batch ended"
        assert "timed out after" in response.json()["error"]
        busy.result(timeout=30)
        assert infer(server, np.array([[78, 0]], np.float32)).status_code == 200
        assert not any(77.0 in c["tags"] for c in calls(tmp_path)), "the model ran an expired request"
        metrics = httpx.get(f"{server.http_url}/metrics").text
        assert 'nv_inference_request_failure{model="batched",reason="REJECTED",version="1"} 1.0' in metrics


def test_delay_action_runs_an_expired_request_after_the_others(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    batching = "default_queue_policy { timeout_action: DELAY allow_timeout_override: true }"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path, batching=batching, max_batch_size=1))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 1.5)
        # The first request's deadline (1 µs) has passed by the time it is seen queued, the second one has
        # none, and both wait behind the busy instance: when it frees, the late one must go last.
        late = pool.submit(infer, server, np.array([[5, 0]], np.float32), parameters={"timeout": 1})
        wait_queued(server, 1)
        fresh = pool.submit(infer, server, np.array([[6, 0]], np.float32))
        wait_queued(server, 2)
        assert not busy.done(), "the busy request ended before both were queued: the test proves nothing"
        assert late.result(timeout=30).status_code == 200
        assert fresh.result(timeout=30).status_code == 200
        busy.result(timeout=30)
        order = [c["tags"][0] for c in calls(tmp_path) if c["tags"][0] in (5.0, 6.0)]
        assert order == [6.0, 5.0], "the timed-out request should run after the one that had not timed out"


def test_cancelled_grpc_calls_are_dropped_and_the_batcher_stays_healthy(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    """Ray #50046: a batching deployment got stuck for good after clients cancelled requests."""
    repo = tmp_path / "repo"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 1.5)
        client = grpcclient.InferenceServerClient(server.grpc_address)

        def impatient(tag: int) -> str:
            inp = grpcclient.InferInput("x", [1, 2], "FP32")
            inp.set_data_from_numpy(np.array([[tag, 0]], np.float32))
            try:
                client.infer("batched", [inp], client_timeout=0.2)
            except InferenceServerException as exc:
                return str(exc.status())
            return "OK"

        outcomes = list(pool.map(impatient, range(100, 130)))
        assert set(outcomes) == {"StatusCode.DEADLINE_EXCEEDED"}
        assert busy.result(timeout=30).status_code == 200
        inp = grpcclient.InferInput("x", [1, 2], "FP32")
        inp.set_data_from_numpy(np.array([[7, 1]], np.float32))
        np.testing.assert_allclose(client.infer("batched", [inp]).as_numpy("total"), [[8]])
        ran = {tag for c in calls(tmp_path) for tag in c["tags"]}
        assert not ran & set(map(float, range(100, 130))), "cancelled requests reached the model"
        assert stats(server)["inference_stats"]["success"]["count"] == 2


def test_a_client_that_disconnects_over_rest_is_dropped_before_it_runs(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 1.0)
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [55, 0]}]}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.http_url}/v2/models/batched/infer", json=body, timeout=0.2)
        assert busy.result(timeout=30).status_code == 200
        assert infer(server, np.array([[56, 0]], np.float32)).status_code == 200
        assert not any(55.0 in c["tags"] for c in calls(tmp_path))


def test_higher_priority_runs_first(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    batching = "priority_levels: 2 default_priority_level: 2"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path, batching=batching, max_batch_size=1))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 0.8)
        low = [pool.submit(infer, server, np.array([[10 + i, 0]], np.float32)) for i in range(3)]
        wait_queued(server, 3)  # the low-priority requests are queued before the high-priority one arrives
        high = pool.submit(infer, server, np.array([[1, 0]], np.float32), parameters={"priority": 1})
        wait_queued(server, 4)
        assert not busy.done(), "the busy request ended before all were queued: the test proves nothing"
        assert all(f.result(timeout=30).status_code == 200 for f in [*low, high])
        busy.result(timeout=30)
        order = [c["tags"][0] for c in calls(tmp_path) if c["tags"][0] != 999.0]
        assert order[0] == 1.0, f"the priority-1 request did not run first: {order}"
        bad = infer(server, np.array([[2, 0]], np.float32), parameters={"priority": 3})
        assert bad.status_code == 400 and "priority_levels" in bad.json()["error"]


def test_a_full_queue_refuses_at_once(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    batching = "default_queue_policy { max_queue_size: 2 }"
    write_python_model(repo / "batched", BATCH_MODEL, batch_config(tmp_path, batching=batching, max_batch_size=1))
    with running_server(repo) as server:
        busy = start_busy(server, tmp_path, pool, 3.0)
        futures = [pool.submit(infer, server, np.array([[20 + i, 0]], np.float32)) for i in range(5)]
        # Three of five cannot queue behind the busy instance: they are answered while it is still busy.
        refused = []
        for future in concurrent.futures.as_completed(futures, timeout=30):
            refused.append(future.result())
            if len(refused) == 3:
                break
        assert not busy.done(), "the refusals waited for the running request"
        assert [r.status_code for r in refused] == [503, 503, 503]
        assert "queue for priority level 1 is full (2 requests waiting" in refused[0].json()["error"]
        assert refused[0].headers["retry-after"] == "1"
        assert sorted(f.result(timeout=30).status_code for f in futures) == [200, 200, 503, 503, 503]


def test_instances_run_batches_in_parallel(tmp_path: Path, pool) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    config = batch_config(tmp_path, max_batch_size=1) + "\ninstance_group [ { count: 2 } ]\n"
    write_python_model(repo / "batched", BATCH_MODEL, config)
    with running_server(repo) as server:
        first = start_busy(server, tmp_path, pool, 1.5)
        second = pool.submit(infer, server, np.array([[999, 0.1]], np.float32))
        # The second slow request runs on the other instance and finishes while the first still runs.
        assert second.result(timeout=30).status_code == 200
        assert not first.done(), "the second batch waited for the first instead of using the idle instance"
        assert first.result(timeout=30).status_code == 200
