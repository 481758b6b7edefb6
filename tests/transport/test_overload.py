"""Overload, the short version of ``bench/run_overload.py`` (issue 11): with 8x the clients that saturate
the server, goodput holds and the excess is refused fast, with a retry hint, over REST and gRPC.

One real server (iris only) with small admission limits, so that 8x is far past them: REST
``server.max_inflight_requests=64`` and ``scheduling.max_queue_size=32`` (the limits under which the
issue measured main's collapse to 4.4 req/s at 256 clients); gRPC its default front-end limit of 32
inference calls. The load generator is the benchmark's own (``tests/load_generator.py``), in this
process: closed loop without back-off, 1x = 32 callers then 8x = 256, a short warm-up then ~2 s counted
each, on the same server one after the other.

Only ratios measured in the same test are asserted (this machine is noisy and shared): 8x goodput is at
least half of 1x (main fell to 0.3 %), and refusing costs the server far less than serving (its own time
per refusal, ``modelserve_rejection_duration_seconds``, against per request,
``modelserve_request_duration_seconds``; a refusal's client-side time is not the measure, since these
clients retry at once, ignoring ``Retry-After``, and a REST connection that does so is paced by the
server). And outcomes: every refusal is a 503 with ``Retry-After`` / UNAVAILABLE with
``grpc-retry-pushback-ms``; nothing else fails, nothing times out.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.load_generator import Schedule, Shape, Tally, iris_target, run
from tests.model_builders import iris_repository
from tests.server_process import ServerProcess, running_server

CAPACITY_CLIENTS = 32  # saturates one iris version on this machine kind (bench/run_overload.py's 1x)
STORM_FACTOR = 8
WARMUP_S, MEASURE_S = 0.5, 2.0
# Bounds a broken server: a healthy one answers in milliseconds. A request past it counts as a timeout.
REQUEST_TIMEOUT_S = 10.0
LIMITS = "server: {max_inflight_requests: 64}\nscheduling: {max_queue_size: 32}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("overload")
    config = folder / "modelserve.yaml"
    config.write_text(LIMITS)
    with running_server(iris_repository(folder), config=config) as server:
        yield server


def load(server: ServerProcess, transport: str, concurrency: int) -> Tally:
    port = server.http_port if transport == "http" else server.grpc_port
    return run(
        iris_target(transport, port),
        Shape.closed(concurrency, timeout_s=REQUEST_TIMEOUT_S),
        lambda: Schedule.starting_in(0.05, WARMUP_S, MEASURE_S),
    )


def describe(tally: Tally) -> str:
    p99 = Tally.percentile_ms
    return (
        f"goodput {tally.goodput_per_s:.0f}/s, rejected {tally.rejected_per_s:.0f}/s "
        f"({tally.rejected_with_hint} with a hint), errors {dict(tally.errors)} {tally.error_samples}, "
        f"timeouts {tally.timeouts}, p99 admitted {p99(tally.ok_s, 99)} ms, rejected {p99(tally.rejected_s, 99)} ms"
    )


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_8x_the_capacity_keeps_goodput_and_is_refused_fast_with_a_hint(server: ServerProcess, transport: str) -> None:
    capacity = load(server, transport, CAPACITY_CLIENTS)
    storm = load(server, transport, STORM_FACTOR * CAPACITY_CLIENTS)
    report = f"1x: {describe(capacity)}\n8x: {describe(storm)}"

    for tally in (capacity, storm):
        # REST: a 5xx other than 503 (or any 4xx) is an error here; gRPC: any code but the two refusals.
        assert tally.errors == {} and tally.timeouts == 0, report
        assert tally.every_rejection_has_hint, report
    assert capacity.ok_s, report
    # Past every limit, gRPC refuses (it used to queue the excess in grpcio's own pool). REST runs iris in place
    # on the event loop (scheduling.inline_below_us): each request is admitted and answered in one go, so the
    # in-flight and queue limits may never fill and the excess waits unread in its socket instead; then REST
    # must either refuse or keep the admitted requests well inside the queue-time bound that would refuse them
    # (scheduling.max_queue_time_ms, 500 ms).
    if transport == "grpc" or not storm.ok_s or Tally.percentile_ms(storm.ok_s, 99) >= 250:
        assert storm.rejected_s, f"8x the clients, past every limit, and nothing refused:\n{report}"
    goodput_1x, goodput_8x = capacity.goodput_per_s, storm.goodput_per_s  # floats: a short report if it fails
    assert goodput_8x >= 0.5 * goodput_1x, f"goodput collapsed under 8x:\n{report}"
    # Refusing costs the server far less than serving: its own time per refusal against per request
    # (the client-side time of a refusal is not the measure here: these clients retry at once, ignoring
    # Retry-After, and a REST connection that does so is made to wait before it is read again).
    refusal_s, request_s = mean_server_seconds(server, transport)
    if storm.rejected_s:
        assert refusal_s is not None and request_s is not None, report
        assert refusal_s < 0.5 * request_s, (
            f"a refusal costs {refusal_s * 1e6:.0f} us, a request {request_s * 1e6:.0f} us"
        )


def mean_server_seconds(server: ServerProcess, transport: str) -> tuple[float | None, float | None]:
    """The server's mean own time per overload refusal on ``transport``, and per served iris request."""
    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == "modelserve_rejection_duration_seconds" and sample.labels.get("transport") == transport:
                sums["refusal" + sample.name.removeprefix(family.name)] = sample.value
            if family.name == "modelserve_request_duration_seconds" and sample.labels.get("model") == "iris":
                sums["request" + sample.name.removeprefix(family.name)] = sample.value

    def mean(kind: str) -> float | None:
        count = sums.get(kind + "_count", 0.0)
        return sums[kind + "_sum"] / count if count else None

    return mean("refusal"), mean("request")


def test_unit_tallies_of_side_by_side_loads_add_up() -> None:
    tallies = [Tally(2.0, ok_s=[0.001, 0.002], rejected_s=[0.0005], rejected_with_hint=1), Tally(2.0, ok_s=[0.003])]
    merged = Tally.merged(tallies)
    assert merged.goodput_per_s == 1.5 and merged.rejected_per_s == 0.5 and merged.every_rejection_has_hint
    assert merged.answered_per_s == 2.0


def test_unit_a_target_is_one_prebuilt_request() -> None:
    http = iris_target("http", 8000, outputs=("label",))
    head, body = http.payload.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v2/models/iris/infer HTTP/1.1\r\n")
    assert f"content-length: {len(body)}".encode() in head.lower()
    assert b'"outputs":[{"name":"label"}]' in body
    assert iris_target("grpc", 8001).payload  # a serialized ModelInferRequest
    with pytest.raises(ValueError, match="expected 'http' or 'grpc'"):
        iris_target("udp", 1)
