"""gRPC admission at the front end (``transport/grpc/admission.py``): each call runs on its lane's threads,
inference never takes the threads of health and metadata, the inference call with no room is refused at
dispatch with UNAVAILABLE and the ``grpc-retry-pushback-ms`` hint, and every call gives its place back
however it ends.

Through the real server with ``grpc.worker_threads=6``, ``grpc.reserved_threads=2`` and no waiting places
(4 inference places), holding calls in a python model that waits for a gate file; and the lanes alone,
with grpcio's handler types and a fake servicer context (the edge), no server.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from modelserve.config import GrpcSettings
from modelserve.transport.grpc.admission import RETRY_PUSHBACK_KEY, CallLanes, CountingThreadPool, LaneDispatch
from tests.app.test_engine import GATED_CONFIG
from tests.model_builders import iris_repository, write_python_model
from tests.server_process import ServerProcess, running_server
from tests.waiting import wait_until

WORKER_THREADS, RESERVED_THREADS = 6, 2
PLACES = WORKER_THREADS - RESERVED_THREADS
INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"
HELD_TIMEOUT_S = 30.0  # client deadline of a held call: far beyond the test, bounds a broken one
ANSWER_TIMEOUT_S = 5.0  # generous: the point is being answered at all while every place is held

# Writes started-<tag>, waits (at most 20 s) for the file named by wait_for, appends <tag> to "calls".
GATED_MODEL = """
    import time
    from pathlib import Path

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            self.folder = Path(context.parameters["folder"])

        def infer(self, inputs):
            tag = inputs["tag"][0].decode()
            (self.folder / ("started-" + tag)).touch()
            gate = self.folder / inputs["wait_for"][0].decode()
            deadline = time.monotonic() + 20
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            with (self.folder / "calls").open("a") as f:
                f.write(tag + "\\n")
            return {"saw": np.array([gate.exists()])}
"""

# One instance: the first held call runs, the others wait in the model's queue (each on its gRPC thread).
# The engine tests' gated model's config (tests/app/test_engine.py): the same inputs and folder parameter.


class Served(NamedTuple):
    server: ServerProcess
    folder: Path
    stub: Any


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("admission")
    repo = iris_repository(folder)
    write_python_model(repo / "gated", GATED_MODEL, GATED_CONFIG.format(folder=folder))
    config = folder / "modelserve.yaml"
    config.write_text(
        f"grpc: {{worker_threads: {WORKER_THREADS}, reserved_threads: {RESERVED_THREADS}, max_waiting_calls: 0}}\n"
    )
    with (
        running_server(repo, config=config) as server,
        grpc.insecure_channel(server.grpc_address) as channel,
    ):
        yield Served(server, folder, service_pb2_grpc.GRPCInferenceServiceStub(channel))


# -- helpers --------------------------------------------------------------------------------------------


def _add_bytes(request: Any, name: str, value: str) -> None:
    request.inputs.add(name=name, datatype="BYTES", shape=[1])
    data = value.encode()
    request.raw_input_contents.append(struct.pack("<I", len(data)) + data)


def gated_request(tag: str, gate: str) -> Any:
    request = pb.ModelInferRequest(model_name="gated")
    _add_bytes(request, "tag", tag)
    _add_bytes(request, "wait_for", gate)
    return request


def iris_request(shape: tuple[int, ...] = (1, 4)) -> Any:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input-0", datatype="FP32", shape=list(shape))
    request.raw_input_contents.append(np.ones(shape, np.float32).tobytes())
    return request


def gated_in_flight(server: ServerProcess) -> float:
    text = httpx.get(f"{server.http_url}/metrics", timeout=ANSWER_TIMEOUT_S).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelserve_inflight_requests" and sample.labels.get("model") == "gated":
                return float(sample.value)
    return 0.0


def rejection_count(server: ServerProcess, transport: str) -> float:
    """How many refusals ``modelserve_rejection_duration_seconds`` has observed for ``transport``."""
    text = httpx.get(f"{server.http_url}/metrics", timeout=ANSWER_TIMEOUT_S).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelserve_rejection_duration_seconds_count" and sample.labels["transport"] == transport:
                return float(sample.value)
    raise AssertionError("modelserve_rejection_duration_seconds is not exported")


def hold(served: Served, gate: str, tags: list[str], *, already_in: int = 0) -> list[grpc.Future]:
    """Start one held call per tag and return once all of them are inside the server (the version's
    in-flight gauge, which counts only calls the front end let in). With the instance free, the first one
    runs (its started marker) and the rest wait in the model's queue behind it."""
    first = served.stub.ModelInfer.future(gated_request(tags[0], gate), timeout=HELD_TIMEOUT_S)
    if not already_in:
        wait_until(lambda: (served.folder / f"started-{tags[0]}").exists(), what=f"held call {tags[0]} to run")
    rest = [served.stub.ModelInfer.future(gated_request(t, gate), timeout=HELD_TIMEOUT_S) for t in tags[1:]]
    expected = already_in + len(tags)
    wait_until(lambda: gated_in_flight(served.server) == expected, what=f"{expected} held calls admitted")
    return [first, *rest]


def refusal(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def assert_refused_for_the_limit(error: grpc.RpcError) -> None:
    assert error.code() is grpc.StatusCode.UNAVAILABLE, f"{error.code()}: {error.details()}"
    details = error.details()
    assert f"grpc.worker_threads={WORKER_THREADS}" in details and f"grpc.reserved_threads={RESERVED_THREADS}" in details
    assert "retry later" in details
    assert dict(error.trailing_metadata() or ())[RETRY_PUSHBACK_KEY] == "100"


def iris_is_admitted(served: Served) -> bool:
    try:
        served.stub.ModelInfer(iris_request(), timeout=ANSWER_TIMEOUT_S)
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            return False
        raise
    return True


def saw_the_gate(future: grpc.Future) -> bool:
    response = future.result(timeout=HELD_TIMEOUT_S)
    return bool(response.raw_output_contents[0] == b"\x01")


def calls(folder: Path) -> list[str]:
    path = folder / "calls"
    return path.read_text().splitlines() if path.exists() else []


# -- through the real server ----------------------------------------------------------------------------


def test_over_the_limit_inference_is_refused_at_once_and_health_still_answers(served: Served) -> None:
    held = hold(served, "open-refusal", [f"held-{i}" for i in range(PLACES)])

    # (a) The next inference call is refused at once, with the settings named and the pushback hint.
    error = refusal(lambda: served.stub.ModelInfer.with_call(gated_request("over", "open-refusal"), timeout=5))
    assert_refused_for_the_limit(error)

    # (b) More inference calls pile on; without the reserved threads they would take the last worker
    # threads and the calls below would wait for the held ones (20 s) and miss their 5 s deadline.
    extra = [
        served.stub.ModelInfer.future(gated_request(f"extra-{i}", "open-refusal"), timeout=HELD_TIMEOUT_S)
        for i in range(2 * WORKER_THREADS)
    ]
    client = grpcclient.InferenceServerClient(served.server.grpc_address)
    try:
        assert client.is_server_live(client_timeout=ANSWER_TIMEOUT_S)
        assert client.is_server_ready(client_timeout=ANSWER_TIMEOUT_S)
        assert client.is_model_ready("gated", client_timeout=ANSWER_TIMEOUT_S)
        metadata = client.get_model_metadata("gated", client_timeout=ANSWER_TIMEOUT_S)
        assert [i.name for i in metadata.inputs] == ["tag", "wait_for"]
        for future in extra:
            assert_refused_for_the_limit(refusal(lambda f=future: f.result(timeout=HELD_TIMEOUT_S)))
        assert not held[0].done(), "the held calls are still held: the answers above did not wait for them"
    finally:
        (served.folder / "open-refusal").touch()
        client.close()

    # The server's own cost of each refusal is in the histogram (one per refused call).
    assert rejection_count(served.server, "grpc") >= 1 + 2 * WORKER_THREADS

    # (c) Released, every held call succeeds, and a new inference call is admitted again.
    assert all(saw_the_gate(future) for future in held)
    assert iris_is_admitted(served)
    ran = calls(served.folder)
    assert sorted(t for t in ran if t.startswith("held-")) == sorted(f"held-{i}" for i in range(PLACES))
    assert not [t for t in ran if t.startswith(("over", "extra-"))], "a refused call reached the model"


def test_failed_and_cancelled_calls_give_their_place_back(served: Served) -> None:
    # Failures at every stage: routing (unknown model), validation (wrong shape), more of them than places.
    for _ in range(3 * PLACES):
        assert refusal(lambda: served.stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=5)).code() is (
            grpc.StatusCode.NOT_FOUND
        )
        assert refusal(lambda: served.stub.ModelInfer(iris_request((1, 3)), timeout=5)).code() is (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    # (d) None of them kept a place: exactly PLACES calls are held again, and the next is refused.
    tags = [f"cancel-{i}" for i in range(PLACES)]
    held = hold(served, "open-cancel", tags)
    try:
        assert_refused_for_the_limit(refusal(lambda: served.stub.ModelInfer(iris_request(), timeout=5)))
        # The last held call waits in the model's queue; the client cancels it and its place comes back.
        assert held[-1].cancel()
        wait_until(lambda: iris_is_admitted(served), what="a new inference call admitted after the cancel")
    finally:
        (served.folder / "open-cancel").touch()
    assert all(saw_the_gate(future) for future in held[:-1])
    assert tags[-1] not in calls(served.folder), "the cancelled call still ran"
    # Every place is free again: PLACES calls are held at once, and the next is refused.
    held = hold(served, "open-after", [f"after-{i}" for i in range(PLACES)])
    try:
        assert_refused_for_the_limit(refusal(lambda: served.stub.ModelInfer(iris_request(), timeout=5)))
    finally:
        (served.folder / "open-after").touch()
    assert all(saw_the_gate(future) for future in held)


def test_a_stream_holds_one_place_until_it_closes(served: Served) -> None:
    gate = "open-stream"
    stop_sending = threading.Event()

    def requests() -> Iterator[Any]:
        yield gated_request("in-stream", gate)
        stop_sending.wait(HELD_TIMEOUT_S)  # keeps the stream open until the test is done with it

    stream = served.stub.ModelStreamInfer(requests(), timeout=HELD_TIMEOUT_S)
    try:
        # Its request runs only once the stream holds a place; the unary calls then wait behind it.
        wait_until(lambda: (served.folder / "started-in-stream").exists(), what="the stream's request to run")
        held = hold(served, gate, [f"beside-stream-{i}" for i in range(PLACES - 1)], already_in=1)
        assert_refused_for_the_limit(refusal(lambda: served.stub.ModelInfer(iris_request(), timeout=5)))
        stream.cancel()
        wait_until(lambda: iris_is_admitted(served), what="a new inference call admitted after the stream closed")
    finally:
        stop_sending.set()
        stream.cancel()
        (served.folder / gate).touch()
    assert all(saw_the_gate(future) for future in held)


# -- the interceptor alone ------------------------------------------------------------------------------


class _Aborted(Exception):
    pass


class FakeContext:
    """grpc.ServicerContext's part the interceptor uses: abort raises, as grpcio's does."""

    def __init__(self) -> None:
        self.trailing_metadata: tuple[tuple[str, str], ...] = ()
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.callbacks: list[Callable[[], None]] = []

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing_metadata = metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted(details)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def end(self) -> None:
        for callback in self.callbacks:
            callback()


class _Details(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


METADATA = "/inference.GRPCInferenceService/ModelMetadata"


@pytest.fixture
def lanes() -> Iterator[CallLanes]:
    lanes = CallLanes(_settings())
    yield lanes
    lanes.shutdown()


def _settings(threads: int = 2, waiting: int = 1) -> GrpcSettings:
    return GrpcSettings(
        worker_threads=threads + 1, reserved_threads=1, max_waiting_calls=waiting, retry_pushback_ms=250
    )


def _dispatch(lanes: CallLanes, observe: Callable[[float], None] | None = None) -> LaneDispatch:
    return LaneDispatch(_settings(), lanes, observe)


def _intercepted(dispatch: LaneDispatch, method: str, handler: grpc.RpcMethodHandler) -> Any:
    return dispatch.intercept_service(lambda details: handler, _Details(method))


def _pool(handler: grpc.RpcMethodHandler) -> Any:
    behaviour = handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream
    return behaviour.experimental_thread_pool


def test_unit_each_method_runs_on_its_lane_and_unknown_ones_stay_unknown(lanes: CallLanes) -> None:
    dispatch = _dispatch(lanes)
    unary = grpc.unary_unary_rpc_method_handler(lambda request, context: f"answered {request}")
    stream = grpc.stream_stream_rpc_method_handler(lambda requests, context: (r * 2 for r in requests))
    assert _pool(_intercepted(dispatch, LIVE, unary)) is lanes.health
    assert _pool(_intercepted(dispatch, METADATA, unary)) is lanes.control
    routed = _intercepted(dispatch, INFER, unary)
    assert _pool(routed) is lanes.inference
    assert _intercepted(dispatch, INFER, unary) is routed, "routed once per method, then reused"
    assert routed.unary_unary("x", FakeContext()) == "answered x", "the behaviour itself is unchanged"
    assert list(_intercepted(dispatch, STREAM, stream).stream_stream(iter([1, 2]), FakeContext())) == [2, 4]
    assert dispatch.intercept_service(lambda details: None, _Details(INFER)) is None  # grpcio says UNIMPLEMENTED


def test_unit_inference_past_its_threads_and_waiting_places_is_refused_at_dispatch(lanes: CallLanes) -> None:
    costs: list[float] = []
    dispatch = _dispatch(lanes, costs.append)
    release = threading.Event()
    started = threading.Semaphore(0)

    def held() -> None:
        started.release()
        release.wait(HELD_TIMEOUT_S)

    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: "ok")
    # Two threads and one waiting place: three calls are accepted, the fourth is refused.
    accepted = [lanes.inference.submit(held) for _ in range(3)]
    try:
        for _ in range(2):
            assert started.acquire(timeout=HELD_TIMEOUT_S)
        assert lanes.inference.accepted == 3 and not lanes.inference_has_room()
        refused = _intercepted(dispatch, INFER, handler)
        assert refused.unary_unary is None and refused.stream_unary is not None, "never waits for the request"
        assert _pool(refused) is lanes.refusals
        context = FakeContext()
        with pytest.raises(_Aborted):
            refused.stream_unary(iter(()), context)
        assert context.code is grpc.StatusCode.UNAVAILABLE
        assert "grpc.worker_threads=3 minus grpc.reserved_threads=1 running" in context.details
        assert "grpc.max_waiting_calls=1 waiting" in context.details
        assert context.trailing_metadata == ((RETRY_PUSHBACK_KEY, "250"),)
        assert len(costs) == 1 and costs[0] >= 0
        streamed = _intercepted(dispatch, STREAM, grpc.stream_stream_rpc_method_handler(lambda r, c: iter(())))
        assert streamed.stream_stream is not None and _pool(streamed) is lanes.refusals
        assert _pool(_intercepted(dispatch, LIVE, handler)) is lanes.health, "health is never refused"
    finally:
        release.set()
    for future in accepted:
        future.result(timeout=HELD_TIMEOUT_S)
    assert lanes.inference.accepted == 0
    assert _pool(_intercepted(dispatch, INFER, handler)) is lanes.inference, "room again once they returned"


def test_unit_a_failing_call_gives_its_place_back_and_so_does_one_never_run(lanes: CallLanes) -> None:
    def fails() -> None:
        raise RuntimeError("the model broke")

    with pytest.raises(RuntimeError):
        lanes.inference.submit(fails).result(timeout=HELD_TIMEOUT_S)
    assert lanes.inference.accepted == 0
    lanes.shutdown()
    with pytest.raises(RuntimeError):
        lanes.inference.submit(fails)
    assert lanes.inference.accepted == 0, "a call the shut-down pool refused holds no place"


def test_unit_each_inference_call_reports_its_wait_for_a_thread() -> None:
    waits: list[float] = []
    pool = CountingThreadPool(1, "test-infer", waits.append)
    release = threading.Event()
    try:
        first = pool.submit(release.wait, HELD_TIMEOUT_S)
        second = pool.submit(lambda: "second")  # waits for the only thread, held by the first
        submitted = time.perf_counter()  # after the pool's own stamp, so the bound below is strict
        assert not second.done()
        released = time.perf_counter()
        release.set()
        assert first.result(timeout=HELD_TIMEOUT_S) and second.result(timeout=HELD_TIMEOUT_S) == "second"
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert len(waits) == 2 and all(w >= 0 for w in waits)
    # The second could start only after the release: its wait covers at least submit -> release.
    assert waits[1] >= released - submitted


def test_the_wait_for_a_thread_is_exported(served: Served) -> None:
    assert iris_is_admitted(served)
    text = httpx.get(f"{served.server.http_url}/metrics", timeout=ANSWER_TIMEOUT_S).text
    counts = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelserve_grpc_thread_wait_seconds_count"
    ]
    assert counts and counts[0] >= 1
