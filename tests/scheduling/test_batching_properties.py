"""Property: batching changes nothing a caller can see. Any mix of concurrent requests (random rows,
priorities, requested outputs) gets exactly the outputs each request gets alone, computed here by
onnxruntime directly; nothing is lost or duplicated; with preserve_ordering, responses on a stream come
back in the order they were sent (MLServer #514, #1306)."""

from __future__ import annotations

import concurrent.futures
import queue
import shutil
import textwrap
from collections.abc import Iterator
from functools import partial

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server_process import EXAMPLES, ServerProcess, running_server

OUTPUTS = ("label", "probabilities")
# onnxruntime's CPU kernels vectorise differently for different batch sizes, so a row's probabilities may
# differ in the last bits between a batch of 1 and a batch of 9 (seen: 3.9e-7 absolute). Labels are exact;
# probabilities are compared to a few float32 ulps, far below anything that would hide a mixed-up row.
PROBABILITY_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("repo")
    (repo / "iris_batched" / "1").mkdir(parents=True)
    shutil.copy(EXAMPLES / "iris" / "1" / "model.onnx", repo / "iris_batched" / "1" / "model.onnx")
    (repo / "iris_batched" / "config.pbtxt").write_text(
        textwrap.dedent("""
        platform: "onnxruntime_onnx"
        max_batch_size: 16
        input [ { name: "input-0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [
          { name: "label" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } },
          { name: "probabilities" data_type: TYPE_FP32 dims: [ 3 ] }
        ]
        instance_group [ { count: 2 } ]
        dynamic_batching {
          preserve_ordering: true
          priority_levels: 3
          default_priority_level: 2
          max_queue_delay_microseconds: 500
        }
        parameters { key: "batch_policy" value: { string_value: "triton" } }
    """)
    )
    with running_server(repo) as server:
        yield server


@pytest.fixture(scope="module")
def reference() -> ort.InferenceSession:
    return ort.InferenceSession(str(EXAMPLES / "iris" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


request_strategy = st.tuples(
    st.integers(min_value=1, max_value=6),  # rows
    st.integers(min_value=0, max_value=3),  # priority (0 = default level)
    st.sampled_from([None, ("label",), ("probabilities",), ("probabilities", "label")]),
    st.integers(min_value=0, max_value=2**31 - 1),  # seed for the rows
)


def _rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 8, size=(count, 4)).astype(np.float32)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(request_strategy, min_size=2, max_size=24))
def test_concurrent_batched_requests_equal_each_request_alone(batching_server, reference, requests) -> None:  # type: ignore[no-untyped-def]
    def send(index: int) -> tuple[int, httpclient.InferResult]:
        # tritonclient.http runs on gevent: one client per thread.
        client = httpclient.InferenceServerClient(batching_server.http_address)
        rows, priority, outputs, seed = requests[index]
        inp = httpclient.InferInput("input-0", [rows, 4], "FP32")
        inp.set_data_from_numpy(_rows(rows, seed))
        wanted = [httpclient.InferRequestedOutput(name) for name in outputs] if outputs else None
        result = client.infer("iris_batched", [inp], outputs=wanted, request_id=str(index), priority=priority)
        client.close()
        return index, result

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(requests)) as pool:
        results = list(pool.map(send, range(len(requests))))
    assert sorted(int(r.get_response()["id"]) for _, r in results) == list(range(len(requests)))
    for index, result in results:
        rows, _, outputs, seed = requests[index]
        label, probabilities = reference.run(None, {"input-0": _rows(rows, seed)})
        names = [o["name"] for o in result.get_response()["outputs"]]
        assert names == list(outputs or OUTPUTS)
        if "label" in names:
            np.testing.assert_array_equal(result.as_numpy("label"), label.reshape(rows, 1))
        if "probabilities" in names:
            np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, **PROBABILITY_TOLERANCE)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(min_value=1, max_value=8), min_size=5, max_size=40))
def test_preserve_ordering_keeps_a_streams_order(batching_server, reference, sizes) -> None:  # type: ignore[no-untyped-def]
    client = grpcclient.InferenceServerClient(batching_server.grpc_address)
    answers: queue.Queue = queue.Queue()  # type: ignore[type-arg]
    client.start_stream(callback=partial(lambda store, result, error: store.put((result, error)), answers))
    try:
        for index, rows in enumerate(sizes):
            inp = grpcclient.InferInput("input-0", [rows, 4], "FP32")
            inp.set_data_from_numpy(_rows(rows, index))
            client.async_stream_infer("iris_batched", [inp], request_id=str(index))
        got = [answers.get(timeout=30) for _ in sizes]
    finally:
        client.stop_stream()
        client.close()
    assert [e for _, e in got] == [None] * len(sizes)
    assert [int(r.get_response().id) for r, _ in got] == list(range(len(sizes)))
    for index, (result, _) in enumerate(got):
        _, probabilities = reference.run(None, {"input-0": _rows(sizes[index], index)})
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, **PROBABILITY_TOLERANCE)


def test_the_properties_above_ran_merged_batches(batching_server) -> None:  # type: ignore[no-untyped-def]
    """Guards the two properties against passing vacuously: the server did merge requests."""
    client = httpclient.InferenceServerClient(batching_server.http_address)
    stats = client.get_inference_statistics("iris_batched")["model_stats"][0]
    assert stats["execution_count"] < stats["inference_stats"]["success"]["count"]
    assert max(b["batch_size"] for b in stats["batch_stats"]) > 8  # more rows than any single request had
