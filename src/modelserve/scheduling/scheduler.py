"""Per model-version execution: the seam the dynamic batcher plugs into.

:class:`Scheduler` is what the layers above call: ``execute(request, ...)`` yields the steps that run the
request (``core/steps.py``), written once for the event loop and for gRPC's threads.
:class:`DirectScheduler` runs each request on its own as soon as an instance is free (the default, and
what models without ``dynamic_batching`` use). Inference never runs on the event loop: from the loop it
runs on a thread pool with one thread per instance; from a gRPC thread it runs on that thread.

Shapes: the scheduler turns client shapes into model shapes on the way in (config ``reshape``) and
back on the way out, and casts outputs to the configured datatype, so runtimes see the model's view
and clients see the config's view.

Unloading under admitted requests (a drain that timed out, a server shutting down): ``close(reason)``
releases the version (``admission.py``). From then on no request starts on a runtime, every instance
taken goes straight back, and a request that fails because the unload ran under it (its executor
refuses new work, its runtime was freed mid-call) raises one UNAVAILABLE ``QueueError`` naming the
version and ``reason``: the one conversion, in ``execute``, for both drivers.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence
from functools import partial
from typing import Protocol

import numpy as np

from modelserve.core.clock import Clock
from modelserve.core.context import RequestContext
from modelserve.core.errors import QueueError
from modelserve.core.inference import InferRequest
from modelserve.core.signature import ModelSignature
from modelserve.core.steps import RunBlocking, Steps, WaitFor
from modelserve.observability.statistics import ModelVersionStatistics, failure_cause, failure_reason
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.admission import UNLOADED, VersionAdmission
from modelserve.scheduling.instance_pool import InstancePool
from modelserve.scheduling.single import SingleRun

# Calls measured before a version's calls may run in place on the loop (the first ones include warm-up).
_INLINE_AFTER_CALLS = 16

__all__ = ["DirectScheduler", "Scheduler"]


class Scheduler(Protocol):
    def execute(
        self, request: InferRequest, output_names: Sequence[str], context: RequestContext
    ) -> Steps[dict[str, np.ndarray]]:
        """The steps that run ``request`` and return ``output_names`` shaped and typed as the config
        declares; carried out by :func:`~modelserve.core.steps.drive` (event loop) or
        :func:`~modelserve.core.steps.drive_blocking` (a gRPC thread). Raises :class:`QueueError` (full,
        draining, deadline, cancelled) or :class:`RuntimeFailure`. A request abandoned before it starts
        never runs."""
        ...

    async def start(self) -> None:
        """Start background work (on the running loop) before the first request."""
        ...

    @property
    def is_ready(self) -> bool: ...

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered (queued or running)."""
        ...

    def refusal(self) -> QueueError | None:
        """The error a new request at the default priority would get from this version's queue now, or
        None. A snapshot, thread-safe and O(1): the front ends use it to refuse before reading a body, and
        :meth:`execute` decides again."""
        ...

    @property
    def queue_depth(self) -> int:
        """Requests waiting for an instance or a batch (not yet executing)."""
        ...

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests; wait up to ``timeout_s`` for admitted ones. True if all finished."""
        ...

    def close(self, reason: str = UNLOADED) -> None:
        """Release the version: refuse new requests, fail queued ones, let no admitted one start on a
        runtime, and release threads; a running call finishes on its thread and a failure it meets
        (the runtime unloaded under it) reaches its caller as UNAVAILABLE ending with ``reason``.
        Runtimes are unloaded by their owner. Idempotent (the first reason holds); call it on the loop
        once the scheduler has started."""
        ...


class DirectScheduler:
    """Runs each request alone on the next free instance; a bounded FIFO queue in front of them."""

    def __init__(
        self,
        *,
        signature: ModelSignature,
        version: str,
        runtimes: list[Runtime],
        statistics: ModelVersionStatistics,
        max_queue_size: int,
        clock: Clock,
        max_queue_time_ns: int = 0,
        inline_below_ns: int = 0,
    ) -> None:
        self._signature = signature
        # Run in place on the caller's loop only models that run in this process (a python-runtime call
        # waits on a pipe) and, once measured, take less than inline_below_ns a call.
        in_process = all(getattr(runtime, "runs_in_process", False) for runtime in runtimes)
        self._inline_below_ns = inline_below_ns if in_process else 0
        self._call_ns = 0.0  # moving average of a call's time on its instance (a few calls' memory)
        self._calls = 0
        self._owner = f"model '{signature.name}' version {version}"
        self._runtimes = runtimes
        self._pool: InstancePool[Runtime] = InstancePool(
            list(runtimes), max_queue_size, owner=self._owner, clock=clock, max_wait_ns=max_queue_time_ns
        )
        self._stats = statistics
        self._clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, len(runtimes)), thread_name_prefix=f"infer-{signature.name}-{version}"
        )
        self._single = SingleRun(signature, self._owner, statistics, clock)
        self._admission = VersionAdmission(self._owner)

    @property
    def is_ready(self) -> bool:
        return not self._admission.is_closed and any(runtime.is_healthy for runtime in self._runtimes)

    @property
    def in_flight(self) -> int:
        return self._admission.in_flight

    @property
    def queue_depth(self) -> int:
        return self._pool.waiting

    def refusal(self) -> QueueError | None:
        if self._admission.is_closed:
            return self._admission.closed_error()
        return self._pool.refusal()

    def _leave(self, failure: BaseException | None, *, start_ns: int) -> None:
        self._stats.record_request(
            succeeded=failure is None,
            total_ns=self._clock.now_ns() - start_ns,
            failure_reason=failure_reason(failure),
            failure_cause=failure_cause(failure),
        )
        self._admission.leave()

    def execute(
        self, request: InferRequest, output_names: Sequence[str], context: RequestContext
    ) -> Steps[dict[str, np.ndarray]]:
        clock = self._clock
        admission = self._admission
        admission.enter()
        start = clock.now_ns()
        failure: BaseException | None = None
        try:
            taken = self._pool.take()
            if isinstance(taken, concurrent.futures.Future):
                # Queued: the thread that frees an instance starts this request on the executor itself,
                # without a turn of the event loop, so the instance never idles while the loop is busy
                # (under a storm of refusals a loop turn is long, and a hand-off per turn collapsed REST
                # goodput to a few requests a second). The caller waits only for the result.
                ran: concurrent.futures.Future[dict[str, np.ndarray]] = concurrent.futures.Future()
                taken.add_done_callback(partial(self._start_granted, ran, request, output_names, start))
                queued_outputs: dict[str, np.ndarray] = yield WaitFor(ran, partial(self._withdraw, taken, ran))
                return queued_outputs
            outputs: dict[str, np.ndarray] = yield RunBlocking(
                partial(self._run, taken, request, output_names, start), self._executor, self._is_tiny()
            )
            return outputs
        except Exception as exc:
            failure = admission.cut_short(exc)
            if failure is exc:
                raise
            raise failure from exc
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._leave(failure, start_ns=start)

    def _start_granted(
        self,
        ran: concurrent.futures.Future[dict[str, np.ndarray]],
        request: InferRequest,
        output_names: Sequence[str],
        start_ns: int,
        granted: concurrent.futures.Future[Runtime],
    ) -> None:
        """On the thread that handed ``granted`` an instance: run the request on the executor, unless its
        caller gave up meanwhile (then the instance goes to the next waiter)."""
        if granted.cancelled():
            return  # withdrawn from the queue before an instance came
        failure = granted.exception()
        if failure is not None:  # the queue was failed (the version closed)
            if ran.set_running_or_notify_cancel():
                ran.set_exception(failure)
            return
        runtime = granted.result()
        if not ran.set_running_or_notify_cancel():
            self._pool.release(runtime)  # the caller gave up between the grant and now
            return
        try:
            if self._admission.is_released:
                raise RuntimeError("released")
            self._executor.submit(self._run_granted, ran, runtime, request, output_names, start_ns)
        except RuntimeError:  # released (the executor is shut down) while this waited: hand on, fail
            self._pool.release(runtime)
            ran.set_exception(self._admission.unloaded_error(started=False))

    def _run_granted(
        self,
        ran: concurrent.futures.Future[dict[str, np.ndarray]],
        runtime: Runtime,
        request: InferRequest,
        output_names: Sequence[str],
        start_ns: int,
    ) -> None:
        try:
            outputs = self._run(runtime, request, output_names, start_ns)
        except Exception as exc:
            ran.set_exception(exc)
        else:
            ran.set_result(outputs)

    def _run(
        self, runtime: Runtime, request: InferRequest, output_names: Sequence[str], start_ns: int
    ) -> dict[str, np.ndarray]:
        """On the thread that runs it (the executor's, or a gRPC call's): the wait so far is the request's
        queue time, then the call on the lent instance, which is given back here."""
        queued = self._clock.now_ns()
        self._stats.record_queue(queued - start_ns)
        if not self._inline_below_ns:
            return self._single.run_lent(
                runtime, request, output_names, queued, admission=self._admission, give_back=self._pool.release
            )
        began = time.perf_counter_ns()
        try:
            return self._single.run_lent(
                runtime, request, output_names, queued, admission=self._admission, give_back=self._pool.release
            )
        finally:
            # Races between instance threads only blur the average a little; it is a hint, not a count.
            took = time.perf_counter_ns() - began
            self._call_ns = took if not self._calls else self._call_ns + (took - self._call_ns) / 8
            self._calls += 1

    def _is_tiny(self) -> bool:
        """Whether a call may run in place on the loop (``RunBlocking.inline``): measured, and fast."""
        return (
            bool(self._inline_below_ns) and self._calls >= _INLINE_AFTER_CALLS and self._call_ns < self._inline_below_ns
        )

    def _withdraw(
        self, taken: concurrent.futures.Future[Runtime], ran: concurrent.futures.Future[dict[str, np.ndarray]]
    ) -> None:
        """The caller gave up: leave the queue if still in it; a request already started runs to its end
        (it gives its instance back itself); one granted but not started is cancelled, and its grant
        callback hands the instance on."""
        if not self._pool.withdraw(taken):
            ran.cancel()

    async def start(self) -> None:
        return None

    async def drain(self, timeout_s: float) -> bool:
        return await self._admission.drain(timeout_s)

    def close(self, reason: str = UNLOADED) -> None:
        if not self._admission.release(reason):
            return
        # Calls already handed to the executor still run: ``_run`` sees the release, skips the runtime
        # and gives the instance back. Cancelling them instead would lose their instances, and with them
        # every request waiting behind. The requests still queued for an instance fail now, all at once.
        self._pool.fail_waiters(partial(self._admission.unloaded_error, started=False))
        self._executor.shutdown(wait=False, cancel_futures=False)
