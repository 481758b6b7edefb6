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

from modelserve.core.clock import Clock
from modelserve.core.datatypes import Datatype
from modelserve.core.errors import ErrorCode, ModelServeError, QueueError, RuntimeFailure
from modelserve.core.inference import InferRequest
from modelserve.core.signature import ModelSignature, TensorSpec
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.instance_pool import InstancePool

__all__ = ["DirectScheduler", "Scheduler"]


class Scheduler(Protocol):
    async def execute(self, request: InferRequest, output_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Run ``request`` and return ``output_names`` shaped and typed as the config declares.

        Raises :class:`QueueError` (full, draining) or :class:`RuntimeFailure`. Safe to cancel: a
        cancelled request that has not started never runs.
        """
        ...

    @property
    def is_ready(self) -> bool: ...

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests; wait up to ``timeout_s`` for admitted ones. True if all finished."""
        ...

    def close(self) -> None:
        """Release threads. Runtimes are unloaded by their owner."""
        ...


def _to_model_shape(array: np.ndarray, spec: TensorSpec, batching: bool) -> np.ndarray:
    if spec.model_shape is None:
        return array
    shape = ((array.shape[0],) if batching else ()) + spec.model_shape
    return array.reshape(shape)


def _to_client(array: np.ndarray, spec: TensorSpec, batch: int | None, owner: str) -> np.ndarray:
    target = spec.datatype
    if target is Datatype.BYTES:
        if array.dtype != object:
            array = array.astype(object)
    elif target is not Datatype.BF16 and array.dtype != target.numpy_dtype:
        array = array.astype(target.numpy_dtype)
    if spec.model_shape is not None:
        client_dims = tuple(spec.dims)
        shape = ((batch,) if batch is not None else ()) + client_dims
        try:
            array = array.reshape(shape)
        except ValueError as exc:
            raise RuntimeFailure(
                f"{owner}: output '{spec.name}' has shape {list(array.shape)}, which cannot be reshaped to "
                f"the config's dims {list(shape)}"
            ) from exc
    return array


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
        self._closed = False
        self._active = 0
        self._idle: asyncio.Event | None = None

    @property
    def is_ready(self) -> bool:
        return not self._closed and any(runtime.is_healthy for runtime in self._runtimes)

    @property
    def queue_depth(self) -> int:
        return self._pool.waiting

    async def execute(self, request: InferRequest, output_names: Sequence[str]) -> dict[str, np.ndarray]:
        if self._closed:
            raise QueueError(f"{self._owner} is unloading and takes no new requests; retry the request")
        clock = self._clock
        start = clock.now_ns()
        self._active += 1
        succeeded = False
        try:
            runtime = await self._pool.acquire()
            queued = clock.now_ns()
            self._stats.queue.add(queued - start)
            outputs = await self._run(runtime, request, output_names, queued)
            succeeded = True
            return outputs
        finally:
            self._stats.record_request(succeeded=succeeded, total_ns=clock.now_ns() - start)
            self._active -= 1
            if self._active == 0 and self._idle is not None:
                self._idle.set()

    async def _run(
        self, runtime: Runtime, request: InferRequest, output_names: Sequence[str], queued_ns: int
    ) -> dict[str, np.ndarray]:
        signature = self._signature
        batching = signature.max_batch_size > 0
        try:
            inputs = {}
            for name, array in request.inputs.items():
                spec = signature.input(name)
                inputs[name] = _to_model_shape(array, spec, batching) if spec is not None else array
            batch = next(iter(request.inputs.values())).shape[0] if batching and request.inputs else None
            prepared = self._clock.now_ns()
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, runtime.infer, inputs, list(output_names))
        except BaseException:
            self._pool.release(runtime)
            raise
        # The instance goes back only when its thread is done, even if this caller is cancelled meanwhile:
        # a runtime instance never runs two calls at once.
        future.add_done_callback(lambda _: self._pool.release(runtime))
        try:
            raw = await asyncio.shield(future)
        except ModelServeError:
            raise
        except Exception as exc:
            raise RuntimeFailure(f"{self._owner} failed: {type(exc).__name__}: {exc}") from exc
        ran = self._clock.now_ns()
        outputs: dict[str, np.ndarray] = {}
        for name in output_names:
            spec = signature.output(name)
            if name not in raw or spec is None:
                raise RuntimeFailure(f"{self._owner} returned no output '{name}'", code=ErrorCode.INTERNAL)
            outputs[name] = _to_client(np.asarray(raw[name]), spec, batch, self._owner)
        self._stats.record_execution(
            batch_size=batch if batch is not None else 1,
            input_ns=prepared - queued_ns,
            infer_ns=ran - prepared,
            output_ns=self._clock.now_ns() - ran,
        )
        return outputs

    async def drain(self, timeout_s: float) -> bool:
        self._closed = True
        if self._active == 0:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
