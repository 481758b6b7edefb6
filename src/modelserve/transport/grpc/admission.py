"""Admission at the gRPC front end: inference calls never take the threads kept for health and metadata.

Why here, and not in the scheduler: grpcio's synchronous server runs every call on a thread of one pool
of ``grpc.worker_threads``, and a ``ModelInfer`` holds its thread while its request is queued or runs
(``servicer.py``). Without a limit at the front, the pool fills with inference calls, every further call
(``ServerLive``, ``ServerReady``, ``ModelMetadata`` and more inference) waits in grpcio's pool queue before
any of our code sees it, and the scheduler's fast rejections never get a thread to run on. Measured on main:
1,024 clients, 0 % rejected, p99 1.2 s, while the queue statistics reported a 24 ms mean; with 256 clients
``ServerLive`` p99 361 ms: long enough for a Kubernetes probe to kill a healthy, busy pod.

:class:`InferenceCallLimit` lets at most ``worker_threads - reserved_threads`` inference calls hold a
thread; the next one is answered at once with UNAVAILABLE, a message naming the settings, and the
``grpc-retry-pushback-ms`` trailing metadata (gRPC's standard retry hint, honoured by clients with a retry
policy). The reserved threads therefore only ever run short calls: health, metadata, and these refusals.
``ModelStreamInfer`` counts as one long inference call for as long as its stream is open.

Where the count is taken, checked against grpcio 1.85 ``grpc/_server.py``: ``intercept_service`` runs on
the server's polling thread when a call is dispatched (``_find_method_handler``), and the handler it returns
is then submitted to the pool. Counting there would leak: a call refused by ``maximum_concurrent_rpcs``
after the interceptor ran (``_handle_call``), or cancelled before its request message arrived
(``_unary_response_in_pool`` skips the behaviour when the request is None), never runs the handler, so
nothing would give its place back. So the interceptor only wraps the handler, and the wrapper takes a
place when the call starts on its pool thread and gives it back in ``finally``. A refusal still needs a
pool thread (trailing metadata can only be sent from a handler; raising in the interceptor becomes
UNKNOWN), but it holds it for microseconds, on a thread inference cannot take.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from modelserve.config import GrpcSettings

__all__ = ["INFERENCE_METHODS", "RETRY_PUSHBACK_KEY", "InferenceCallLimit", "pushback_metadata"]

INFERENCE_METHODS = frozenset(
    {"/inference.GRPCInferenceService/ModelInfer", "/inference.GRPCInferenceService/ModelStreamInfer"}
)
# gRPC's retry design (A6): the server's hint, in milliseconds, of when a client may retry.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def pushback_metadata(retry_pushback_ms: int) -> tuple[tuple[str, str], ...]:
    """The trailing metadata every overload refusal carries (built once per owner, not per call)."""
    return ((RETRY_PUSHBACK_KEY, str(retry_pushback_ms)),)


Behaviour = Callable[[Any, grpc.ServicerContext], Any]


class InferenceCallLimit(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts inference calls holding a gRPC worker thread and refuses the one over the limit at once.

    Thread-safe: the count is one integer under one lock, taken and given back in O(1) with no
    allocation on the unary path (a stream allocates one small release-once object). Every other
    method passes through untouched: its handler is returned as it is.
    """

    def __init__(self, settings: GrpcSettings, observe_rejection: Callable[[float], None] | None = None) -> None:
        self._observe_rejection = observe_rejection
        self._limit = settings.worker_threads - settings.reserved_threads
        self._message = (
            f"the gRPC front end is at its inference call limit (grpc.worker_threads={settings.worker_threads} "
            f"minus grpc.reserved_threads={settings.reserved_threads} kept for health and metadata); "
            "retry later or add replicas"
        )
        self._pushback = pushback_metadata(settings.retry_pushback_ms)
        self._in_flight = 0
        self._lock = threading.Lock()
        # method -> (the handler grpcio gave us, our wrapper of it): wrapped once, not per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    @property
    def limit(self) -> int:
        """Inference calls that may hold a worker thread at once."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Inference calls holding a worker thread now."""
        return self._in_flight

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method not in INFERENCE_METHODS:
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler)
        # Runs on grpcio's one polling thread; a race would only build the same wrapper twice.
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary), **serializers)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary), **serializers)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._streaming(handler.unary_stream), **serializers)
        return grpc.stream_stream_rpc_method_handler(self._streaming(handler.stream_stream), **serializers)

    def _enter(self, context: grpc.ServicerContext, started: float) -> None:
        """Take a place, or answer the call UNAVAILABLE with the pushback (``abort`` raises)."""
        with self._lock:
            admitted = self._in_flight < self._limit
            if admitted:
                self._in_flight += 1
        if not admitted:
            context.set_trailing_metadata(self._pushback)
            if self._observe_rejection is not None:
                self._observe_rejection(time.perf_counter() - started)
            context.abort(grpc.StatusCode.UNAVAILABLE, self._message)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _unary(self, behaviour: Behaviour) -> Behaviour:
        def bounded(request: Any, context: grpc.ServicerContext) -> Any:
            self._enter(context, time.perf_counter())
            try:
                return behaviour(request, context)
            finally:
                self._leave()

        return bounded

    def _streaming(self, behaviour: Behaviour) -> Behaviour:
        def bounded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # A generator: the place is taken on the first next(), on the call's pool thread, so a
            # generator grpcio never starts never takes one.
            self._enter(context, time.perf_counter())
            release = _ReleaseOnce(self._leave)
            # The finally below runs when grpcio finishes or drops the iterator; the callback covers a call
            # that ends (cancelled, deadline) while the iterator is parked, whichever comes first.
            context.add_callback(release)
            try:
                yield from behaviour(request, context)
            finally:
                release()

        return bounded


class _ReleaseOnce:
    """Calls ``leave`` the first time it is called, from whichever thread; later calls do nothing."""

    __slots__ = ("_leave", "_pending")

    def __init__(self, leave: Callable[[], None]) -> None:
        self._leave = leave
        self._pending = threading.Lock()

    def __call__(self) -> None:
        if self._pending.acquire(blocking=False):
            self._leave()
