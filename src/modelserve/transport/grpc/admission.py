"""Admission at the gRPC front end: calls are dispatched to lanes of threads, so inference never delays health.

Why here, and not in the scheduler: grpcio's synchronous server runs every call on a pool thread, and a
``ModelInfer`` holds its thread while its request is queued or runs (``servicer.py``). With one pool, every
call waits in that pool's one FIFO queue before any of our code sees it: under a flood a ``ServerLive``
queued behind ~1,000 inference calls, and the threads kept free for it spent their time turning those
away one by one (measured at 1,024 closed-loop clients on one core: ~200 refusals/s, each seen by its
client after ~350 ms, liveness p99 414-477 ms: long enough for a Kubernetes probe to kill a healthy pod).

So the decision is taken when grpcio dispatches the call, on its polling thread, before any queue:
``intercept_service`` runs there, and grpcio then submits the call to the pool named by the behaviour's
``experimental_thread_pool`` attribute (grpcio >= 1.66, ``_select_thread_pool_for_behavior``), or to the
server's pool. :class:`CallLanes` owns one pool per kind of call:

* **inference** (``ModelInfer``, ``ModelStreamInfer``): ``worker_threads - reserved_threads`` threads. A
  call is accepted while fewer than those threads plus ``grpc.max_waiting_calls`` inference calls are
  running or waiting for a thread; the next one never enters that queue.
* **refusals**: one thread that answers the refused inference calls UNAVAILABLE with a message naming the
  settings and the ``grpc-retry-pushback-ms`` trailing metadata (gRPC's retry hint; clients with a retry
  policy honour it). A refusal needs a thread (trailing metadata can only be sent from a handler; raising
  in the interceptor becomes UNKNOWN), but its handler is stream-unary, so the thread never waits for the
  request message: it answers at once, and no refusal queues behind a long call.
* **health** (``ServerLive``, ``ServerReady``): two threads that nothing else uses.
* **control** (everything else: metadata, statistics, repository calls): the server's own pool of
  ``reserved_threads`` threads.

The count of inference calls is taken where it cannot leak: in the inference pool's ``submit``, given
back when the submitted call returns, however it ends. Counting in the interceptor would leak, because a
call refused by grpcio's ``maximum_concurrent_rpcs`` after the interceptor ran is never submitted.
``ModelStreamInfer`` counts as one inference call for as long as its stream is open (grpcio runs a
response stream on its pool thread to the end).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from modelserve.config import GrpcSettings

__all__ = [
    "HEALTH_METHODS",
    "INFERENCE_METHODS",
    "RETRY_PUSHBACK_KEY",
    "CallLanes",
    "CountingThreadPool",
    "LaneDispatch",
    "pushback_metadata",
]

_SERVICE = "/inference.GRPCInferenceService/"
INFERENCE_METHODS = frozenset({_SERVICE + "ModelInfer", _SERVICE + "ModelStreamInfer"})
HEALTH_METHODS = frozenset({_SERVICE + "ServerLive", _SERVICE + "ServerReady"})
# gRPC's retry design (A6): the server's hint, in milliseconds, of when a client may retry.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
HEALTH_THREADS = 2
REFUSAL_THREADS = 1

T = TypeVar("T")


def pushback_metadata(retry_pushback_ms: int) -> tuple[tuple[str, str], ...]:
    """The trailing metadata every overload refusal carries (built once per owner, not per call)."""
    return ((RETRY_PUSHBACK_KEY, str(retry_pushback_ms)),)


class CountingThreadPool(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that knows how many submitted calls have not returned yet (running or waiting)."""

    def __init__(
        self, max_workers: int, thread_name_prefix: str, observe_wait: Callable[[float], None] | None = None
    ) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.threads = max_workers
        self._observe_wait = observe_wait
        self._accepted = 0
        self._count_lock = threading.Lock()

    @property
    def accepted(self) -> int:
        """Calls submitted that have not returned: running on a thread or waiting for one."""
        return self._accepted

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        with self._count_lock:
            self._accepted += 1
        try:
            return super().submit(self._counted, time.perf_counter(), fn, args, kwargs)
        except BaseException:  # shut down: nothing will run it, so it holds no place
            self._returned()
            raise

    def _counted(self, submitted: float, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        if self._observe_wait is not None:
            self._observe_wait(time.perf_counter() - submitted)
        try:
            return fn(*args, **kwargs)
        finally:
            self._returned()

    def _returned(self) -> None:
        with self._count_lock:
            self._accepted -= 1


class CallLanes:
    """The thread pools of the gRPC server, one per kind of call (see the module docstring)."""

    def __init__(self, settings: GrpcSettings, observe_wait: Callable[[float], None] | None = None) -> None:
        self.control = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.reserved_threads, thread_name_prefix="grpc-control"
        )
        self.inference = CountingThreadPool(
            settings.worker_threads - settings.reserved_threads, "grpc-infer", observe_wait
        )
        self.health = concurrent.futures.ThreadPoolExecutor(
            max_workers=HEALTH_THREADS, thread_name_prefix="grpc-health"
        )
        self.refusals = concurrent.futures.ThreadPoolExecutor(
            max_workers=REFUSAL_THREADS, thread_name_prefix="grpc-refuse"
        )
        self.max_inference_calls = self.inference.threads + settings.max_waiting_calls

    def inference_has_room(self) -> bool:
        return self.inference.accepted < self.max_inference_calls

    def shutdown(self) -> None:
        """After the server has stopped: let idle threads exit (a call still running finishes first)."""
        for pool in (self.inference, self.health, self.refusals, self.control):
            pool.shutdown(wait=False, cancel_futures=True)


class LaneDispatch(grpc.ServerInterceptor):  # type: ignore[misc]
    """Sends each call to its lane, and refuses the inference call the inference lane has no room for.

    Runs on grpcio's polling thread for every call: a dictionary lookup and, for inference, one
    comparison; each method's routed handler is built once and reused.
    """

    def __init__(
        self, settings: GrpcSettings, lanes: CallLanes, observe_rejection: Callable[[float], None] | None = None
    ) -> None:
        self._lanes = lanes
        self._observe_rejection = observe_rejection
        self._message = (
            f"the gRPC front end is at its inference call limit (grpc.worker_threads={settings.worker_threads} "
            f"minus grpc.reserved_threads={settings.reserved_threads} running, grpc.max_waiting_calls="
            f"{settings.max_waiting_calls} waiting for a thread); retry later or add replicas"
        )
        self._pushback = pushback_metadata(settings.retry_pushback_ms)
        # method -> (the handler grpcio gave us, the same handler sent to its lane): built once, not per call.
        self._routed: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._refusals: dict[str, grpc.RpcMethodHandler] = {}
        self._refuse_on_lane = _carrying(self._refuse, lanes.refusals)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: grpcio answers UNIMPLEMENTED itself
        method = handler_call_details.method
        if method in INFERENCE_METHODS and not self._lanes.inference_has_room():
            return self._refusal(method, handler)
        cached = self._routed.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        routed = _on_pool(handler, self._lane_of(method))
        # Only grpcio's one polling thread calls this; a race would only build the same handler twice.
        self._routed[method] = (handler, routed)
        return routed

    def _lane_of(self, method: str) -> concurrent.futures.ThreadPoolExecutor:
        if method in INFERENCE_METHODS:
            return self._lanes.inference
        if method in HEALTH_METHODS:
            return self._lanes.health
        return self._lanes.control

    def _refusal(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """A handler that answers UNAVAILABLE with the pushback on the refusal lane, without reading the request.

        Built once per method and reused for every refusal.
        """
        cached = self._refusals.get(method)
        if cached is not None:
            return cached
        if handler.response_streaming:
            refusal = grpc.stream_stream_rpc_method_handler(
                self._refuse_on_lane, response_serializer=handler.response_serializer
            )
        else:
            refusal = grpc.stream_unary_rpc_method_handler(
                self._refuse_on_lane, response_serializer=handler.response_serializer
            )
        self._refusals[method] = refusal
        return refusal

    def _refuse(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        # The server's own time per refusal (what the histogram reports, as REST's does): on its lane thread,
        # from the start of the handler. Waiting for that thread is the client's latency, not our cost.
        started = time.perf_counter()
        context.set_trailing_metadata(self._pushback)
        if self._observe_rejection is not None:
            self._observe_rejection(time.perf_counter() - started)
        context.abort(grpc.StatusCode.UNAVAILABLE, self._message)


def _on_pool(handler: grpc.RpcMethodHandler, pool: concurrent.futures.ThreadPoolExecutor) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour run on ``pool`` (grpcio reads the behaviour's ``experimental_thread_pool``)."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_carrying(handler.unary_unary, pool), **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_carrying(handler.stream_unary, pool), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_carrying(handler.unary_stream, pool), **serializers)
    return grpc.stream_stream_rpc_method_handler(_carrying(handler.stream_stream, pool), **serializers)


def _carrying(behaviour: Callable[..., Any], pool: concurrent.futures.ThreadPoolExecutor) -> Callable[..., Any]:
    # A bound method cannot take attributes, so the pool rides on a plain function that calls it.
    def run(request: Any, context: grpc.ServicerContext) -> Any:
        return behaviour(request, context)

    run.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return run
