"""Per model-version statistics with Triton's semantics (the ``statistics`` extension).

``success``/``fail``/``queue`` count requests; ``inference_count`` counts samples (a request carrying a
batch of 8 rows adds 8); ``execution_count`` counts runtime calls; ``batch_stats`` is keyed by the batch
size actually executed. Every admitted request is counted in ``queue`` (perf_analyzer finds the version
it measures by which ``queue.count`` grew).

Updated from the event loop and from gRPC threads; one uncontended lock per record keeps the counts
exact (``x += 1`` is not atomic across threads).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from modelserve.core.clock import wall_time_ms

__all__ = ["Duration", "ModelVersionStatistics"]


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_queue(self, ns: int) -> None:
        with self._lock:
            self.queue.add(ns)

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

    def record_request(self, *, succeeded: bool, total_ns: int) -> None:
        """One request finished (end to end inside the server)."""
        now_ms = wall_time_ms()
        with self._lock:
            self.last_inference_ms = now_ms
            (self.success if succeeded else self.fail).add(total_ns)
