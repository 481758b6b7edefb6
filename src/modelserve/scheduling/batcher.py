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

Threads: the queue and the batcher task live on the event loop. A request's path (``execute``, one
generator for both drivers, ``core/steps.py``) posts its entry to the loop and waits on a thread-safe
future: a coroutine on the loop awaits it, a gRPC thread blocks on it. Under the adaptive policy, a
request that finds nothing queued and an instance idle is a batch of one and runs at once (on the gRPC
thread itself, or the instance's thread from the loop) without a trip through the batcher task: batching
then costs a lone request nothing. The idle-instance list is shared, so it is guarded by a lock.

Unloading under admitted requests: ``close(reason)`` releases the version (``admission.py``): queued
requests are answered at once, batches handed to the executor skip the runtime, and a request whose
batch failed because the unload ran under it raises UNAVAILABLE naming the version and ``reason``
(converted once, in ``execute``), never the runtime's internal error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from modelserve.core.clock import Clock
from modelserve.core.context import RequestContext
from modelserve.core.errors import ModelServeError, QueueError, RuntimeFailure
from modelserve.core.inference import InferRequest
from modelserve.core.signature import ModelSignature
from modelserve.core.steps import PostToLoop, RunBlocking, Steps, WaitFor
from modelserve.observability.statistics import ModelVersionStatistics, failure_cause, failure_reason
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.admission import UNLOADED, VersionAdmission
from modelserve.scheduling.batch_policy import BatchPolicy, QueuedView, decide
from modelserve.scheduling.request_queue import PriorityQueues, QueueEntry, deadline_error
from modelserve.scheduling.shapes import to_client, to_model_shape
from modelserve.scheduling.single import SingleRun, as_runtime_failure

__all__ = ["DynamicBatchScheduler"]

log = logging.getLogger(__name__)

_Outcome = dict[str, np.ndarray] | BaseException


def _settle(entry: QueueEntry, outcome: _Outcome) -> None:
    """Answer a queued request; a caller that went away (future cancelled) is skipped."""
    future = entry.future
    if future.done():
        return
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled by its caller's thread between the check and the set


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
        self._single = SingleRun(signature, self._owner, statistics, clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._pending_pushes = 0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._admission = VersionAdmission(self._owner)
        self._lock = threading.Lock()
        self._next_batch = 0
        self._next_delivery = 0
        self._finished: dict[int, list[tuple[QueueEntry, _Outcome]]] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batcher task on the running loop (the scheduler owns it; ``close`` stops it)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"batcher {self._owner}")

    @property
    def is_ready(self) -> bool:
        return not self._admission.is_closed and self._task is not None and any(r.is_healthy for r in self._runtimes)

    @property
    def in_flight(self) -> int:
        return self._admission.in_flight

    @property
    def queue_depth(self) -> int:
        return len(self._queues)

    def refusal(self) -> QueueError | None:
        if self._admission.is_closed:
            return self._admission.closed_error()
        with self._lock:
            if self._idle:
                return None  # an idle instance: a new request would not wait at all
        return self._queues.refusal(self._clock.now_ns())

    async def drain(self, timeout_s: float) -> bool:
        return await self._admission.drain(timeout_s)

    def close(self, reason: str = UNLOADED) -> None:
        if not self._admission.release(reason):
            return
        if self._task is not None:
            self._task.cancel()
        for entry in self._queues.drain_all():
            _settle(entry, self._admission.unloaded_error(started=False))
        # Batches already handed to the executor still run: they see the release and skip the runtime,
        # and their done callbacks give the instances back.
        self._executor.shutdown(wait=False, cancel_futures=False)

    # -- requests --------------------------------------------------------------------------------

    def _shape_key(self, request: InferRequest) -> tuple[object, ...]:
        return tuple(
            (name, array.shape[1:], request.input_datatypes[name]) for name, array in sorted(request.inputs.items())
        )

    def _admit(self) -> int:
        self._admission.enter()
        return self._clock.now_ns()

    def _finish_request(self, start_ns: int, failure: BaseException | None) -> None:
        self._stats.record_request(
            succeeded=failure is None,
            total_ns=self._clock.now_ns() - start_ns,
            failure_reason=failure_reason(failure),
            failure_cause=failure_cause(failure),
        )
        self._admission.leave()

    def _entry(
        self,
        request: InferRequest,
        output_names: Sequence[str],
        start_ns: int,
        future: concurrent.futures.Future[dict[str, np.ndarray]],
        client_deadline_ns: int | None,
    ) -> QueueEntry:
        level = self._queues.level_for(request.priority)
        deadline_ns = self._queues.deadline_for(level, request.timeout_us, start_ns)
        is_client_deadline = client_deadline_ns is not None and (
            deadline_ns is None or client_deadline_ns < deadline_ns
        )
        return QueueEntry(
            request=request,
            output_names=tuple(output_names),
            rows=next(iter(request.inputs.values())).shape[0] if request.inputs else 1,
            shape_key=self._shape_key(request),
            enqueued_ns=start_ns,
            deadline_ns=client_deadline_ns if is_client_deadline else deadline_ns,
            level=level,
            future=future,
            is_client_deadline=is_client_deadline,
        )

    def _take_idle_for_fast_path(self) -> Runtime | None:
        """Adaptive policy, nothing queued, an instance idle: the request is a batch of one and runs now,
        without a trip through the batcher task. (A request queued by another thread at this very moment
        may be overtaken by this one; it runs next.) None once released: the queued path answers it."""
        if not self._policy.adaptive or len(self._queues) or self._pending_pushes or self._admission.is_released:
            return None
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _return_instance(self, runtime: Runtime) -> None:
        with self._lock:
            self._idle.append(runtime)
        if not len(self._queues) and not self._pending_pushes:
            return  # nobody waits; a request queued from now on finds this instance idle
        self._wake_batcher()

    def _wake_batcher(self) -> None:
        assert self._loop is not None and self._wake is not None
        if self._loop_thread is threading.current_thread():
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    def execute(
        self, request: InferRequest, output_names: Sequence[str], context: RequestContext
    ) -> Steps[dict[str, np.ndarray]]:
        assert self._loop is not None, "start() the batcher first"
        start = self._admit()
        failure: BaseException | None = None
        try:
            self._queues.level_for(request.priority)  # a bad priority is refused on every path
            runtime = self._take_idle_for_fast_path()
            outputs: dict[str, np.ndarray]
            if runtime is not None:
                queued = self._clock.now_ns()
                self._stats.record_queue(queued - start)
                outputs = yield RunBlocking(
                    partial(
                        self._single.run_lent,
                        runtime,
                        request,
                        output_names,
                        queued,
                        admission=self._admission,
                        give_back=self._return_instance,
                    ),
                    self._executor,
                )
            else:
                waiter: concurrent.futures.Future[dict[str, np.ndarray]] = concurrent.futures.Future()
                entry = self._entry(request, output_names, start, waiter, context.deadline_ns)
                with self._lock:
                    self._pending_pushes += 1
                yield PostToLoop(partial(self._push, entry))
                # Answered from the loop (settled by the batch's done callback); a caller that gives up
                # cancels the future, and the batcher drops the entry before it runs.
                outputs = yield WaitFor(waiter, partial(self._abandon, waiter))
            return outputs
        except Exception as exc:
            failure = self._admission.cut_short(exc)
            if failure is exc:
                raise
            raise failure from exc
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._finish_request(start, failure)

    def _push(self, entry: QueueEntry) -> None:
        """On the loop: queue ``entry`` (or answer it with the queue's refusal) and wake the batcher."""
        with self._lock:
            self._pending_pushes -= 1
        if entry.future.done():
            return  # abandoned before it reached the queue
        if self._admission.is_released:  # posted by a gRPC thread before close: no batcher will run it
            _settle(entry, self._admission.unloaded_error(started=False))
            return
        try:
            self._queues.push(entry)
        except ModelServeError as exc:
            _settle(entry, exc)
            return
        assert self._wake is not None
        self._wake.set()

    def _abandon(self, waiter: concurrent.futures.Future[dict[str, np.ndarray]]) -> None:
        if waiter.cancel():
            self._wake_batcher()  # it drops the entry from the queue

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
                    _settle(entry, RuntimeFailure(f"{self._owner}: internal scheduling error"))
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
            _settle(entry, deadline_error(self._owner, entry, now))
        self._queues.drop_abandoned()
        entries = self._queues.ordered()
        if not entries:
            return None
        views = [QueuedView(e.rows, e.shape_key, e.enqueued_ns, e.deadline_ns) for e in entries]
        with self._lock:
            idle = len(self._idle)
        decision = decide(views, now, self._policy, idle_instances=idle)
        if not decision.run:
            return decision.wake_at_ns
        with self._lock:
            if not self._idle:
                return None  # taken by a fast-path caller meanwhile; its return wakes us
            runtime = self._idle.pop()
        batch = [entries[i] for i in decision.run]
        self._queues.remove(batch)
        for entry in batch:
            self._stats.record_queue(now - entry.enqueued_ns)
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
        done: asyncio.Future[tuple[list[_Outcome], _BatchTimes | None]],
    ) -> None:
        if done.cancelled():
            outcomes: list[_Outcome] = [self._admission.unloaded_error(started=False)] * len(batch)
        elif done.exception() is not None:
            failure = done.exception()
            assert failure is not None
            outcomes = [failure] * len(batch)
        else:
            outcomes, times = done.result()
            if times is not None:
                self._record(times, batch)
        self._finished[sequence] = list(zip(batch, outcomes, strict=True))
        self._deliver(sequence)
        self._return_instance(runtime)

    def _record(self, times: _BatchTimes, batch: list[QueueEntry]) -> None:
        self._stats.record_execution(
            batch_size=sum(e.rows for e in batch),
            input_ns=times.input_ns,
            infer_ns=times.infer_ns,
            output_ns=times.output_ns,
            requests=len(batch),
        )

    def _deliver(self, sequence: int) -> None:
        ready = [sequence] if not self._preserve_ordering else []
        if self._preserve_ordering:
            while self._next_delivery in self._finished:
                ready.append(self._next_delivery)
                self._next_delivery += 1
        for number in ready:
            for entry, outcome in self._finished.pop(number):
                _settle(entry, outcome)

    # -- on an instance's thread -------------------------------------------------------------------

    def _execute_batch(self, runtime: Runtime, batch: list[QueueEntry]) -> tuple[list[_Outcome], _BatchTimes | None]:
        """Run ``batch`` on ``runtime``; its outcomes, and its timings (None: it never ran)."""
        clock = self._clock
        started = clock.now_ns()
        if self._admission.is_released:  # handed to the executor just before close: never run it
            return [self._admission.unloaded_error(started=False)] * len(batch), None
        names = sorted({name for entry in batch for name in entry.output_names})
        merged = self._merge_inputs(batch)
        prepared = clock.now_ns()
        try:
            raw = runtime.infer(merged, names)
            ran = clock.now_ns()
            outcomes: list[_Outcome] = self._split(raw, batch)
        except Exception as exc:
            ran = clock.now_ns()
            if self._admission.is_released:  # unloaded under the call: running each alone cannot help
                outcomes = [self._admission.cut_short(exc)] * len(batch)
            elif len(batch) == 1:
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
        return as_runtime_failure(exc, self._owner)
