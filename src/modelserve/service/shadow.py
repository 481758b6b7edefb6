"""Shadow traffic (``RoutingPolicy.shadow``): a sample of a model's requests is run again on the shadow
target, off the request path, and its answer compared with the one the client got.

::

    request path (loop or gRPC thread)              the shadow's own thread
    ───────────────────────────────────             ─────────────────────────────────────────────
    answer computed ──> offer(): sampled? ──put_nowait──> [bounded queue] ──> run the copy on the target
                        (O(1), never waits)   full: dropped, counted        compare on compare.output
    answer returned to the client                                           agreement, latency delta

- The client's answer and its latency never depend on the shadow: :meth:`ShadowDispatcher.offer` only
  samples, copies the inputs (a client may reuse a shared-memory region once answered) and puts the job
  on a bounded queue, dropping it (counted) when the queue is full. The shadow's answer is never sent.
- The shadow runs through the dataplane's attempt (route, validate, run) with the target as the
  request's version: its own breaker and queue limits apply, the model's split and fallbacks do not, and
  it is not admitted through the server's in-flight gate (it never takes a client's slot). A failure is
  counted, never raised.
- Agreement (per request, on ``compare.output``): equal argmax along the last axis (``argmax``), or every
  element within ``tolerance`` (0: equal values); an output missing on either side or of another shape
  disagrees. Without ``compare`` only latency is compared.
- Latency delta: the shadow's time minus the primary's, on the server's clock, summed per model.

One worker thread: a shadow is a sample of the traffic, so one at a time bounds what it takes from the
models it shares instances with; the queue absorbs bursts and the drop counter says when it cannot.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelserve.core.clock import Clock
from modelserve.core.context import RequestContext
from modelserve.core.errors import ModelServeError
from modelserve.core.inference import InferRequest, InferResult, RequestedOutput
from modelserve.observability.metrics import ShadowRow
from modelserve.routing.policy import Comparison, ShadowSettings

__all__ = ["DEFAULT_SHADOW_QUEUE", "ShadowCounts", "ShadowDispatcher", "ShadowRunner", "outputs_agree"]

log = logging.getLogger("modelserve.shadow")

DEFAULT_SHADOW_QUEUE = 256

# Runs a shadow copy to its answer, blocking (on the shadow's thread); raises ModelServeError.
ShadowRunner = Callable[[InferRequest, RequestContext], InferResult]


@dataclass(slots=True)
class ShadowCounts:
    """One model's shadow figures since start. ``sent``: queued; ``dropped``: the queue was full;
    ``failed``: the shadow raised; ``compared`` / ``agreed``: answers compared and those that agreed."""

    sent: int = 0
    dropped: int = 0
    failed: int = 0
    completed: int = 0
    compared: int = 0
    agreed: int = 0
    latency_delta_ns: int = 0  # sum over completed shadows of (shadow - primary)

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "dropped": self.dropped,
            "failed": self.failed,
            "completed": self.completed,
            "compared": self.compared,
            "agreement": self.agreed / self.compared if self.compared else None,
            "latency_delta_ms": self.latency_delta_ns / self.completed / 1e6 if self.completed else None,
        }


@dataclass(frozen=True, slots=True)
class _Job:
    model: str
    request: InferRequest
    context: RequestContext
    primary: InferResult
    primary_latency_ns: int
    compare: Comparison | None


_STOP = object()


def outputs_agree(primary: np.ndarray | None, shadow: np.ndarray | None, comparison: Comparison) -> bool:
    """Whether a shadow's output agrees with the primary's (the module docstring has the rule)."""
    if primary is None or shadow is None or primary.shape != shadow.shape:
        return False
    if comparison.argmax:
        if primary.ndim == 0 or primary.dtype == object or shadow.dtype == object:
            return bool(np.array_equal(primary, shadow))
        return bool(np.array_equal(np.argmax(primary, axis=-1), np.argmax(shadow, axis=-1)))
    if comparison.tolerance > 0 and primary.dtype != object and shadow.dtype != object:
        delta = np.abs(primary.astype(np.float64) - shadow.astype(np.float64))
        return bool(np.all(delta <= comparison.tolerance))
    return bool(np.array_equal(primary, shadow))


class ShadowDispatcher:
    """Samples, queues and runs shadow copies. :meth:`offer` is thread-safe and never blocks;
    :meth:`start` / :meth:`stop` run the worker thread (stop drops what is still queued)."""

    def __init__(
        self, clock: Clock, *, max_queue: int = DEFAULT_SHADOW_QUEUE, sample: Callable[[], float] = random.random
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"a shadow queue needs room for at least one request, got max_queue={max_queue}")
        self._clock = clock
        self._sample = sample  # uniform in [0, 1): a request is mirrored when sample() * 100 < percent
        self._queue: queue.Queue[_Job | object] = queue.Queue(maxsize=max_queue)
        self._counts: dict[str, ShadowCounts] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._runner: ShadowRunner | None = None

    def start(self, runner: ShadowRunner) -> None:
        """Start the worker thread, which runs each job with ``runner``."""
        if self._thread is not None:
            raise RuntimeError("the shadow dispatcher is already started")
        self._runner = runner
        self._thread = threading.Thread(target=self._work, name="modelserve-shadow", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Drop what is queued (counted as dropped), let the running shadow finish (up to ``timeout_s``) and
        end the thread. Blocking: call it off the event loop, which the running shadow may need."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job):
                with self._lock:
                    self._count(job.model).dropped += 1
        self._queue.put(_STOP)
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("the shadow worker did not end within %.0f s (a shadow request still runs)", timeout_s)

    def offer(
        self,
        model: str,
        settings: ShadowSettings,
        request: InferRequest,
        context: RequestContext,
        primary: InferResult,
        primary_latency_ns: int,
    ) -> None:
        """Mirror ``request`` to ``settings.target`` if it is sampled; O(1) apart from copying the inputs of
        a sampled request; never blocks or raises into the request path."""
        if settings.percent <= 0 or self._thread is None or self._sample() * 100 >= settings.percent:
            return
        if self._queue.full():  # a hint (the put decides): under overload, drop before copying anything
            with self._lock:
                self._count(model).dropped += 1
            return
        outputs = request.requested_outputs
        copy = dataclasses.replace(
            request,
            model_version=settings.target,
            inputs={name: array.copy() for name, array in request.inputs.items()},
            input_datatypes=dict(request.input_datatypes),
            # The shadow's outputs go nowhere: never into the client's shared-memory regions.
            requested_outputs=None
            if outputs is None
            else tuple(RequestedOutput(o.name, o.parameters) for o in outputs),
            parameters=dict(request.parameters),
        )
        shadow_context = RequestContext(
            request_id=context.request_id,
            headers=context.headers,
            principal=context.principal,
            tenant=context.tenant,
            transport="shadow",
        )
        job = _Job(model, copy, shadow_context, primary, primary_latency_ns, settings.compare)
        with self._lock:  # put and count as one, so sent >= completed whenever the figures are read
            counts = self._count(model)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                counts.dropped += 1
                return
            counts.sent += 1

    def counts(self) -> dict[str, ShadowCounts]:
        """A copy of every model's figures."""
        with self._lock:
            return {model: dataclasses.replace(c) for model, c in self._counts.items()}

    def rows(self) -> list[ShadowRow]:
        """Every model's figures as metrics export them."""
        return [
            (m, c.sent, c.dropped, c.failed, c.completed, c.compared, c.agreed, c.latency_delta_ns / 1e9)
            for m, c in sorted(self.counts().items())
        ]

    def summary(self, model: str) -> dict[str, Any] | None:
        """``model``'s shadow figures as ``GET /v2/models/{m}/routing`` shows them (None: never shadowed)."""
        with self._lock:
            counts = self._counts.get(model)
            return counts.summary() if counts is not None else None

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def _count(self, model: str) -> ShadowCounts:
        counts = self._counts.get(model)
        if counts is None:
            counts = self._counts[model] = ShadowCounts()
        return counts

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if not isinstance(job, _Job):
                return
            try:
                self._run(job)
            except Exception:  # an exception boundary per job: the thread serves the next one
                log.exception("a shadow request for model '%s' failed unexpectedly", job.model)
                with self._lock:
                    self._count(job.model).failed += 1

    def _run(self, job: _Job) -> None:
        assert self._runner is not None
        started_ns = self._clock.now_ns()
        try:
            answer = self._runner(job.request, job.context)
        except ModelServeError as exc:
            log.debug("shadow of model '%s' (target %s) failed: %s", job.model, job.request.model_version, exc)
            with self._lock:
                self._count(job.model).failed += 1
            return
        latency_ns = self._clock.now_ns() - started_ns
        agreed = None
        if job.compare is not None:
            name = job.compare.output
            agreed = outputs_agree(job.primary.outputs.get(name), answer.outputs.get(name), job.compare)
        with self._lock:
            counts = self._count(job.model)
            counts.completed += 1
            counts.latency_delta_ns += latency_ns - job.primary_latency_ns
            if agreed is not None:
                counts.compared += 1
                counts.agreed += int(agreed)
