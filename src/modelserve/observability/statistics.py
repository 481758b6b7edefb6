"""Per model-version statistics with Triton's semantics (the ``statistics`` extension).

``success``/``fail``/``queue`` count requests; ``inference_count`` counts samples (a request carrying a
batch of 8 rows adds 8); ``execution_count`` counts runtime calls; ``batch_stats`` is keyed by the batch
size actually executed. Every admitted request is counted in ``queue`` (perf_analyzer finds the version
it measures by which ``queue.count`` grew).

Updated from the event loop and from gRPC threads; one uncontended lock per record keeps the counts
exact (``x += 1`` is not atomic across threads).
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from dataclasses import dataclass, field

from modelserve.core.clock import wall_time_ms
from modelserve.core.errors import ErrorCode, ModelServeError, QueueError, RuntimeFailure

__all__ = [
    "BATCH_BUCKETS",
    "FAILURE_CAUSES",
    "LATENCY_BUCKETS_S",
    "Duration",
    "Histogram",
    "ModelVersionStatistics",
    "failure_cause",
    "failure_reason",
]

# Sub-millisecond to seconds: a 12 µs model and a 2 s one both land in informative buckets.
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def failure_reason(failure: BaseException | None) -> str:
    """Triton's ``reason`` label for a failed request: REJECTED (refused or timed out by the queue),
    CANCELED (the client went away), BACKEND (the model failed), OTHER."""
    if failure is None:
        return ""
    if isinstance(failure, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(failure, ModelServeError):
        if failure.code is ErrorCode.CANCELLED:
            return "CANCELED"
        if isinstance(failure, QueueError) or failure.code is ErrorCode.DEADLINE_EXCEEDED:
            return "REJECTED"
        if isinstance(failure, RuntimeFailure):
            return "BACKEND"
    return "OTHER"


FAILURE_CAUSES = ("shed", "timeout", "cancelled", "model", "other")


def failure_cause(failure: BaseException | None) -> str:
    """A finer split than Triton's reasons, for operators: ``shed`` (refused by a full queue, a limit or a
    drain: REJECTED without a deadline), ``timeout`` (its queue deadline passed), ``cancelled`` (the client
    went away), ``model`` (the model failed), ``other``."""
    reason = failure_reason(failure)
    if reason == "REJECTED":
        assert isinstance(failure, ModelServeError)
        return "timeout" if failure.code is ErrorCode.DEADLINE_EXCEEDED else "shed"
    return {"CANCELED": "cancelled", "BACKEND": "model", "": ""}.get(reason, "other")


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass(slots=True)
class Histogram:
    """Cumulative-style bucket counts kept as plain per-bucket counts (bisect on observe), exported as a
    Prometheus histogram at scrape time: an observation costs a bisect and two adds."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        running = 0
        out = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


@dataclass(slots=True)
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelVersionStatistics:
    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchDurations] = field(default_factory=dict)
    # Resident memory the version took when it loaded (bytes; 0 = not measured).
    memory_bytes: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    failures_by_cause: dict[str, int] = field(default_factory=dict)
    request_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    queue_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    compute_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_queue(self, ns: int) -> None:
        with self._lock:
            self.queue.add(ns)
            self.queue_seconds.observe(ns / 1e9)

    def record_execution(
        self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int, *, requests: int = 1
    ) -> None:
        """One runtime call that ran ``batch_size`` samples for ``requests`` requests.

        As in Triton, ``inference_stats.compute_*`` count requests (each request of a batch is charged
        the batch's time) and ``batch_stats`` count executions.
        """
        with self._lock:
            self._record_execution(batch_size, input_ns, infer_ns, output_ns, requests)

    def _record_execution(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int, requests: int) -> None:
        self.execution_count += 1
        self.inference_count += batch_size
        self.batch_sizes.observe(batch_size)
        self.compute_seconds.observe((input_ns + infer_ns + output_ns) / 1e9)
        for duration, ns in (
            (self.compute_input, input_ns),
            (self.compute_infer, infer_ns),
            (self.compute_output, output_ns),
        ):
            duration.count += requests
            duration.ns += ns * requests
        batch = self.batches.get(batch_size)
        if batch is None:
            batch = self.batches[batch_size] = BatchDurations()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def record_request(
        self, *, succeeded: bool, total_ns: int, failure_reason: str = "OTHER", failure_cause: str = "other"
    ) -> None:
        """One request finished (end to end inside the server). ``failure_reason`` uses Triton's labels:
        REJECTED (timed out in the queue, or refused by it), CANCELED, BACKEND (the model raised), OTHER;
        ``failure_cause`` the finer split of :func:`failure_cause`."""
        now_ms = wall_time_ms()
        with self._lock:
            self.last_inference_ms = now_ms
            (self.success if succeeded else self.fail).add(total_ns)
            if succeeded:
                # Successful requests only: a shed request answers in microseconds, and counting those would
                # pull p99 down exactly while the server is overloaded. Failures are in the failure counters.
                self.request_seconds.observe(total_ns / 1e9)
            else:
                self.failures_by_reason[failure_reason] = self.failures_by_reason.get(failure_reason, 0) + 1
                self.failures_by_cause[failure_cause] = self.failures_by_cause.get(failure_cause, 0) + 1
