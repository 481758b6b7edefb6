"""The dynamic batcher: requests of one model version queue here and run together in batches.

One task per model version owns the queue. Each turn it expires deadlines, drops requests whose caller
went away, asks :func:`~modelserve.scheduling.batch_policy.decide` what to run, hands a batch to an idle
instance (a worker thread) and goes back to waiting, so it keeps answering deadlines while batches run.
Each turn is an exception boundary: an error fails the requests involved and the loop goes on.

On an instance's thread a batch is assembled (inputs concatenated along the batch dimension, per
input), run once with the union of the outputs its requests asked for, and split back by rows, so every
caller gets exactly its own rows of exactly the outputs it asked for. If a merged batch fails, each of
its requests is retried alone, so one request the model chokes on fails by itself (Ray #66140).

With ``preserve_ordering`` responses leave in the order the batches were formed, even when instances
finish out of order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelserve.core.cancellation import CancelToken
from modelserve.core.clock import Clock
from modelserve.core.errors import ErrorCode, ModelServeError, QueueError, RuntimeFailure
from modelserve.core.inference import InferRequest
from modelserve.core.signature import ModelSignature
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.admission import wait_until_idle
from modelserve.scheduling.batch_policy import BatchPolicy, QueuedView, decide
from modelserve.scheduling.request_queue import PriorityQueues, QueueEntry, deadline_error
from modelserve.scheduling.shapes import to_client, to_model_shape

__all__ = ["DynamicBatchScheduler"]

log = logging.getLogger(__name__)

_Outcome = dict[str, np.ndarray] | BaseException


@dataclass(frozen=True, slots=True)
class _BatchTimes:
    input_ns: int
    infer_ns: int
    output_ns: int


class DynamicBatchScheduler:
    def __init__(
        self,
        *,
        signature: ModelSignature,
        version: str,
        runtimes: list[Runtime],
        statistics: ModelVersionStatistics,
        policy: BatchPolicy,
        queues: PriorityQueues,
        preserve_ordering: bool,
        clock: Clock,
    ) -> None:
        self._signature = signature
        self._owner = f"model '{signature.name}' version {version}"
        self._runtimes = runtimes
        self._idle: list[Runtime] = list(reversed(runtimes))
        self._stats = statistics
        self._policy = policy
        self._queues = queues
        self._preserve_ordering = preserve_ordering
        self._clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, len(runtimes)), thread_name_prefix=f"batch-{signature.name}-{version}"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        self._active = 0
        self._lock = threading.Lock()
        self._next_batch = 0
        self._next_delivery = 0
        self._finished: dict[int, list[tuple[QueueEntry, _Outcome]]] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batcher task on the running loop (the scheduler owns it; ``close`` stops it)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"batcher {self._owner}")

    @property
    def is_ready(self) -> bool:
        return not self._closed and self._task is not None and any(r.is_healthy for r in self._runtimes)

    @property
    def queue_depth(self) -> int:
        return len(self._queues)

    async def drain(self, timeout_s: float) -> bool:
        with self._lock:
            self._closed = True
        return await wait_until_idle(lambda: self._active, timeout_s)

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        for entry in self._queues.drain_all():
            if not entry.future.done():
                entry.future.set_exception(QueueError(f"{self._owner} was unloaded before this request ran"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- requests --------------------------------------------------------------------------------

    def _shape_key(self, request: InferRequest) -> tuple[object, ...]:
        return tuple(
            (name, array.shape[1:], request.input_datatypes[name]) for name, array in sorted(request.inputs.items())
        )

    async def execute(self, request: InferRequest, output_names: Sequence[str]) -> dict[str, np.ndarray]:
        assert self._loop is not None and self._wake is not None, "start() the batcher first"
        with self._lock:
            if self._closed:
                raise QueueError(f"{self._owner} is unloading and takes no new requests; retry the request")
            self._active += 1
        start = self._clock.now_ns()
        succeeded = False
        try:
            level = self._queues.level_for(request.priority)
            entry = QueueEntry(
                request=request,
                output_names=tuple(output_names),
                rows=next(iter(request.inputs.values())).shape[0] if request.inputs else 1,
                shape_key=self._shape_key(request),
                enqueued_ns=start,
                deadline_ns=self._queues.deadline_for(level, request.timeout_us, start),
                level=level,
                future=self._loop.create_future(),
            )
            self._queues.push(entry)
            self._wake.set()
            try:
                outputs = await entry.future
            except asyncio.CancelledError:
                # The caller is gone: if still queued, the batcher drops the entry before it runs.
                entry.future.cancel()
                self._wake.set()
                raise
            succeeded = True
            return outputs
        finally:
            self._stats.record_request(succeeded=succeeded, total_ns=self._clock.now_ns() - start)
            with self._lock:
                self._active -= 1

    def execute_blocking(
        self, request: InferRequest, output_names: Sequence[str], cancel: CancelToken | None = None
    ) -> dict[str, np.ndarray]:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self.execute(request, output_names), self._loop)
        if cancel is not None:
            cancel.add_callback(future.cancel)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise QueueError("the request was cancelled", code=ErrorCode.CANCELLED) from None

    # -- the batcher task ------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            wake_at: int | None = None
            try:
                wake_at = self._turn()
            except Exception:
                log.exception("%s: batcher turn failed; failing the queued requests involved", self._owner)
                for entry in self._queues.drain_all():
                    if not entry.future.done():
                        entry.future.set_exception(RuntimeFailure(f"{self._owner}: internal scheduling error"))
            if wake_at == 0:
                continue  # dispatched a batch: look again at once
            self._wake.clear()
            timeout = None if wake_at is None else max(0.0, (wake_at - self._clock.now_ns()) / 1e9)
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _turn(self) -> int | None:
        """One decision. Returns 0 after dispatching, else the monotonic ns to wake at (None: on change)."""
        now = self._clock.now_ns()
        for entry in self._queues.expire(now):
            if not entry.future.done():
                entry.future.set_exception(deadline_error(self._owner, entry, now))
        self._queues.drop_abandoned()
        entries = self._queues.ordered()
        if not entries:
            return None
        views = [QueuedView(e.rows, e.shape_key, e.enqueued_ns, e.deadline_ns) for e in entries]
        decision = decide(views, now, self._policy, idle_instances=len(self._idle))
        if not decision.run:
            return decision.wake_at_ns
        batch = [entries[i] for i in decision.run]
        self._queues.remove(batch)
        for entry in batch:
            entry.dispatched_ns = now
            self._stats.record_queue(now - entry.enqueued_ns)
        runtime = self._idle.pop()
        sequence = self._next_batch
        self._next_batch += 1
        assert self._loop is not None
        future = self._loop.run_in_executor(self._executor, self._execute_batch, runtime, batch)
        future.add_done_callback(lambda done: self._batch_done(runtime, sequence, batch, done))
        return 0

    def _batch_done(
        self,
        runtime: Runtime,
        sequence: int,
        batch: list[QueueEntry],
        done: asyncio.Future[tuple[list[_Outcome], _BatchTimes]],
    ) -> None:
        self._idle.append(runtime)
        if done.cancelled():
            outcomes: list[_Outcome] = [QueueError(f"{self._owner} was unloaded while this request ran")] * len(batch)
        elif done.exception() is not None:
            failure = done.exception()
            assert failure is not None
            outcomes = [failure] * len(batch)
        else:
            outcomes, times = done.result()
            rows = sum(e.rows for e in batch)
            self._stats.record_execution(
                batch_size=rows,
                input_ns=times.input_ns,
                infer_ns=times.infer_ns,
                output_ns=times.output_ns,
                requests=len(batch),
            )
        self._finished[sequence] = list(zip(batch, outcomes, strict=True))
        self._deliver(sequence)
        assert self._wake is not None
        self._wake.set()

    def _deliver(self, sequence: int) -> None:
        ready = [sequence] if not self._preserve_ordering else []
        if self._preserve_ordering:
            while self._next_delivery in self._finished:
                ready.append(self._next_delivery)
                self._next_delivery += 1
        for number in ready:
            for entry, outcome in self._finished.pop(number):
                if entry.future.done():
                    continue  # the caller went away while its batch ran
                if isinstance(outcome, BaseException):
                    entry.future.set_exception(outcome)
                else:
                    entry.future.set_result(outcome)

    # -- on an instance's thread -------------------------------------------------------------------

    def _execute_batch(self, runtime: Runtime, batch: list[QueueEntry]) -> tuple[list[_Outcome], _BatchTimes]:
        clock = self._clock
        started = clock.now_ns()
        names = sorted({name for entry in batch for name in entry.output_names})
        merged = self._merge_inputs(batch)
        prepared = clock.now_ns()
        try:
            raw = runtime.infer(merged, names)
            ran = clock.now_ns()
            outcomes: list[_Outcome] = self._split(raw, batch)
        except Exception as exc:
            ran = clock.now_ns()
            if len(batch) == 1:
                outcomes = [self._as_error(exc)]
            else:
                log.warning("%s: a batch of %d requests failed (%s); running each alone", self._owner, len(batch), exc)
                outcomes = [self._run_alone(runtime, entry) for entry in batch]
        return outcomes, _BatchTimes(prepared - started, ran - prepared, clock.now_ns() - ran)

    def _merge_inputs(self, batch: list[QueueEntry]) -> dict[str, np.ndarray]:
        signature = self._signature
        merged: dict[str, np.ndarray] = {}
        for name in batch[0].request.inputs:
            parts = [entry.request.inputs[name] for entry in batch]
            joined = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            spec = signature.inputs_by_name.get(name)
            merged[name] = to_model_shape(joined, spec, True) if spec is not None else joined
        return merged

    def _split(self, raw: dict[str, np.ndarray], batch: list[QueueEntry]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        offset = 0
        total = sum(e.rows for e in batch)
        for entry in batch:
            outputs: dict[str, np.ndarray] = {}
            for name in entry.output_names:
                spec = self._signature.outputs_by_name.get(name)
                array = raw.get(name)
                if spec is None or array is None:
                    return [RuntimeFailure(f"{self._owner} returned no output '{name}'")] * len(batch)
                array = np.asarray(array)
                if array.ndim == 0 or array.shape[0] != total:
                    return [
                        RuntimeFailure(
                            f"{self._owner}: output '{name}' has {array.shape[0] if array.ndim else 0} rows for a "
                            f"batch of {total}; a batching model must return one row per input row"
                        )
                    ] * len(batch)
                outputs[name] = to_client(array[offset : offset + entry.rows], spec, entry.rows, self._owner)
            outcomes.append(outputs)
            offset += entry.rows
        return outcomes

    def _run_alone(self, runtime: Runtime, entry: QueueEntry) -> _Outcome:
        try:
            raw = runtime.infer(self._merge_inputs([entry]), list(entry.output_names))
            return self._split(raw, [entry])[0]
        except Exception as exc:
            return self._as_error(exc)

    def _as_error(self, exc: Exception) -> ModelServeError:
        if isinstance(exc, ModelServeError):
            return exc
        return RuntimeFailure(f"{self._owner} failed: {type(exc).__name__}: {exc}")
