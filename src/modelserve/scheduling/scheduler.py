"""Per model-version execution: the seam the dynamic batcher plugs into.

:class:`Scheduler` is what the layers above call: ``execute(request)`` returns the request's outputs.
:class:`DirectScheduler` runs each request on its own as soon as an instance is free (the default, and
what models without ``dynamic_batching`` use). Inference runs on a thread pool with one thread per
instance, never on the event loop.

Shapes: the scheduler turns client shapes into model shapes on the way in (config ``reshape``) and
back on the way out, and casts outputs to the configured datatype, so runtimes see the model's view
and clients see the config's view.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from modelserve.core.cancellation import CancelToken
from modelserve.core.clock import Clock
from modelserve.core.errors import ErrorCode, QueueError
from modelserve.core.inference import InferRequest
from modelserve.core.signature import ModelSignature
from modelserve.observability.statistics import ModelVersionStatistics, failure_cause, failure_reason
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.admission import VersionAdmission
from modelserve.scheduling.instance_pool import InstancePool
from modelserve.scheduling.single import SingleRun

__all__ = ["DirectScheduler", "Scheduler"]


class Scheduler(Protocol):
    async def execute(self, request: InferRequest, output_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Run ``request`` (from the event loop) and return ``output_names`` shaped and typed as the config
        declares. Raises :class:`QueueError` (full, draining) or :class:`RuntimeFailure`. Safe to cancel:
        a cancelled request that has not started never runs."""
        ...

    def execute_blocking(
        self, request: InferRequest, output_names: Sequence[str], cancel: CancelToken | None = None
    ) -> dict[str, np.ndarray]:
        """The same, called from a thread that is not the event loop's (gRPC calls). ``cancel`` fires when
        the caller goes away; a request that has not started then never runs."""
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

    @property
    def queue_depth(self) -> int:
        """Requests waiting for an instance or a batch (not yet executing)."""
        ...

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests; wait up to ``timeout_s`` for admitted ones. True if all finished."""
        ...

    def close(self) -> None:
        """Release threads. Runtimes are unloaded by their owner."""
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
    ) -> None:
        self._signature = signature
        self._owner = f"model '{signature.name}' version {version}"
        self._runtimes = runtimes
        self._pool: InstancePool[Runtime] = InstancePool(list(runtimes), max_queue_size, owner=self._owner)
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

    def _enter(self) -> None:
        self._admission.enter()

    def _leave(self, failure: BaseException | None, *, start_ns: int) -> None:
        self._stats.record_request(
            succeeded=failure is None,
            total_ns=self._clock.now_ns() - start_ns,
            failure_reason=failure_reason(failure),
            failure_cause=failure_cause(failure),
        )
        self._admission.leave()

    async def execute(self, request: InferRequest, output_names: Sequence[str]) -> dict[str, np.ndarray]:
        clock = self._clock
        self._enter()
        start = clock.now_ns()
        failure: BaseException | None = None
        try:
            runtime = await self._pool.acquire()
            queued = clock.now_ns()
            self._stats.record_queue(queued - start)
            try:
                future = asyncio.get_running_loop().run_in_executor(
                    self._executor, self._single.run, runtime, request, output_names, queued
                )
            except BaseException:
                self._pool.release(runtime)
                raise
            # The instance goes back only when its thread is done, even if this caller is cancelled
            # meanwhile: a runtime instance never runs two calls at once.
            future.add_done_callback(lambda _: self._pool.release(runtime))
            outputs = await asyncio.shield(future)
            return outputs
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._leave(failure, start_ns=start)

    async def start(self) -> None:
        return None

    def execute_blocking(
        self, request: InferRequest, output_names: Sequence[str], cancel: CancelToken | None = None
    ) -> dict[str, np.ndarray]:
        clock = self._clock
        self._enter()
        start = clock.now_ns()
        failure: BaseException | None = None
        try:
            runtime = self._pool.acquire_blocking(cancel=cancel)
            if cancel is not None and cancel.is_cancelled:
                self._pool.release(runtime)
                raise QueueError("the request was cancelled while queued", code=ErrorCode.CANCELLED)
            queued = clock.now_ns()
            self._stats.record_queue(queued - start)
            try:
                outputs = self._single.run(runtime, request, output_names, queued)
            finally:
                self._pool.release(runtime)
            return outputs
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._leave(failure, start_ns=start)

    async def drain(self, timeout_s: float) -> bool:
        return await self._admission.drain(timeout_s)

    def close(self) -> None:
        self._admission.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
