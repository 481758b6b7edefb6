"""``inference.GRPCInferenceService`` over the same :class:`DataPlane` the REST front end uses.

Threading model, and why: grpcio's synchronous server runs each call on a thread of its own pool.
``ModelInfer`` admits, routes, queues and runs the model right on that thread (the scheduler and the
gate are thread-safe), so a gRPC inference costs no thread hand-off of ours. Everything else (metadata,
repository calls, streams) is carried out on the server's event loop via ``run_coroutine_threadsafe``.
Measured here with perf_analyzer (iris, concurrency 32, server on one core): a ``grpc.aio`` server
doing the same work served ~1,400 requests/s; on one core each hand-off between threads is a context
switch plus a GIL hand-over, and they dominated the cost of a 12 µs model. Bare servers (no modelserve
code, iris run inline) agree: sync grpcio 3,301 requests/s pinned to one core against 2,517 for grpc.aio
on uvloop; unpinned on 2 cores the order flips (2,694 against 4,582), which is why workers are pinned
(``app/workers.py``). Which thread runs which call: ``admission.py``.

Messages are tritonclient's generated classes, so clients and server share one definition. Documents
(metadata, config, statistics) come from ``protocol.documents``, so REST and gRPC report the same things.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from modelserve.config import LimitSettings
from modelserve.core.cancellation import CancelToken
from modelserve.core.clock import Clock
from modelserve.core.context import REQUEST_ID_HEADER, RequestContext, select_headers
from modelserve.core.errors import DecodeError, ModelServeError
from modelserve.protocol import documents
from modelserve.protocol.grpc_codec import (
    GrpcRequestHeader,
    decode_infer_tensors,
    encode_infer_response,
    parse_infer_header,
)
from modelserve.protocol.shared_memory_documents import status_message
from modelserve.protocol.tensor_codec import PRECHECK_MIN_BYTES
from modelserve.service.dataplane import DataPlane
from modelserve.transport.grpc.admission import pushback_metadata
from modelserve.transport.grpc.errors import GRPC_STATUS

__all__ = ["InferenceServicer", "add_to_server"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# grpcio reports "no deadline" as a deadline in the far future; anything beyond this is none.
_NO_DEADLINE_S = 10 * 24 * 3600.0
# How often a stream reader waiting for a free slot looks whether the call has ended.
_STREAM_POLL_S = 0.5


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Runs on grpcio's worker threads; every call is carried out on ``loop``."""

    def __init__(
        self,
        api: DataPlane,
        limits: LimitSettings,
        loop: asyncio.AbstractEventLoop,
        *,
        clock: Clock,
        context_headers: frozenset[str] = frozenset(),
        max_stream_inflight: int = 64,
        retry_pushback_ms: int = 100,
        observe_rejection: Callable[[float], None] | None = None,
    ) -> None:
        self._pushback = pushback_metadata(retry_pushback_ms)
        self._observe_rejection = observe_rejection
        self._api = api
        self._limits = limits
        self._loop = loop
        self._clock = clock
        # The call's metadata is read only when some key is configured: reading it (and the deadline) on
        # every call measured 4-8 % of a gRPC request at concurrency 32 on one core (perf_analyzer, iris).
        self._configured_headers = context_headers | {REQUEST_ID_HEADER} if context_headers else frozenset()
        # (the routing policies' keys they were built with, the keys read), replaced as one tuple so a
        # thread never pairs one with the other's stale partner; rebuilt only when a policy changes them.
        self._wanted_headers = (api.routing_headers, self._wanted(api.routing_headers))
        self._max_stream_inflight = max_stream_inflight

    def _request_context(self, context: Any) -> RequestContext:
        """The call's metadata (only the configured keys and those a routing policy reads) and deadline, as
        the dataplane sees them."""
        routing_headers, wanted = self._wanted_headers
        if routing_headers is not self._api.routing_headers:
            routing_headers = self._api.routing_headers
            wanted = self._wanted(routing_headers)
            self._wanted_headers = (routing_headers, wanted)
        headers = select_headers(context.invocation_metadata() or (), wanted) if wanted else {}
        remaining_s = context.time_remaining()
        deadline_ns = None
        if remaining_s is not None and remaining_s < _NO_DEADLINE_S:
            deadline_ns = self._clock.now_ns() + int(remaining_s * 1e9)
        return RequestContext(
            request_id=headers.get(REQUEST_ID_HEADER, ""),
            headers=headers,
            deadline_ns=deadline_ns,
            transport="grpc",
        )

    def _wanted(self, routing_headers: frozenset[str]) -> frozenset[str]:
        if not routing_headers:
            return self._configured_headers
        return self._configured_headers | routing_headers | {REQUEST_ID_HEADER}

    def _run(self, coro: Coroutine[Any, Any, T], context: grpc.ServicerContext) -> T:
        """Run ``coro`` on the event loop and wait for it; map domain errors to gRPC statuses."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        context.add_callback(future.cancel)  # the call ended (cancelled, deadline): stop the work too
        try:
            return future.result()
        except ModelServeError as exc:
            context.abort(GRPC_STATUS[exc.code], exc.message)
        except concurrent.futures.CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "the request was cancelled")
        except Exception:
            log.exception("unexpected error in a gRPC call")
            context.abort(grpc.StatusCode.INTERNAL, "internal server error; the server log has the details")
        raise AssertionError("unreachable: abort raises")

    def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self._api.is_live())

    def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._api.is_ready())

    def ModelReady(self, request: Any, context: Any) -> Any:
        ready = self._run(self._api.is_model_ready(request.name, request.version), context)
        return pb.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return json_format.ParseDict(self._api.server_metadata(), pb.ServerMetadataResponse())

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        metadata = self._run(self._api.model_metadata(request.name, request.version), context)
        return json_format.ParseDict(documents.metadata_document(metadata), pb.ModelMetadataResponse())

    def ModelConfig(self, request: Any, context: Any) -> Any:
        config = self._run(self._api.model_config(request.name, request.version), context)
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(config)
        return response

    def ModelStatistics(self, request: Any, context: Any) -> Any:
        document = self._run(documents.statistics_everywhere(self._api, request.name, request.version), context)
        return json_format.ParseDict(document, pb.ModelStatisticsResponse())

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        async def index() -> list[dict[str, str]]:
            return documents.index_document(self._api.repository_index(ready_only=request.ready))

        return json_format.ParseDict({"models": self._run(index(), context)}, pb.RepositoryIndexResponse())

    def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        self._run(self._api.load_model(request.model_name, _repository_parameters(request.parameters)), context)
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        self._run(self._api.unload_model(request.model_name, _repository_parameters(request.parameters)), context)
        return pb.RepositoryModelUnloadResponse()

    def _header(self, request: Any) -> GrpcRequestHeader:
        limits = self._limits
        return parse_infer_header(request, limits.max_tensor_bytes, limits.max_requested_outputs, limits.max_inputs)

    def _decode(self, request: Any, context: RequestContext) -> Any:
        """Check the metadata against the model, then decode the elements: a mistyped request is refused for
        the cost of its metadata (this thread, not the loop's). A request whose tensors cannot be read
        counts as a failure of the version it names."""
        try:
            header = self._header(request)
        except DecodeError as exc:
            self._api.count_undecodable(request.model_name, request.model_version, exc)
            raise
        if request.ByteSize() + header.shared_memory_bytes >= PRECHECK_MIN_BYTES:
            self._api.precheck_blocking(request.model_name, request.model_version, header.declared, context, self._loop)
        try:
            return decode_infer_tensors(header, self._api.shared_memory)
        except DecodeError as exc:
            self._api.count_undecodable(request.model_name, request.model_version, exc)
            raise

    def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        cancel = CancelToken()
        context.add_callback(cancel.cancel)  # fires when the call ends: cancelled, deadline, or answered
        try:
            request_context = self._request_context(context)
            decoded = self._decode(request, request_context)
            result = self._api.infer_blocking(decoded, request_context, self._loop, cancel)
            return encode_infer_response(result, decoded.requested_outputs, self._api.shared_memory)
        except ModelServeError as exc:
            if exc.retry_after_s:
                self._refused(context, started)
            context.abort(GRPC_STATUS[exc.code], exc.message)
        except Exception:
            log.exception("unexpected error in gRPC ModelInfer")
            context.abort(grpc.StatusCode.INTERNAL, "internal server error; the server log has the details")
        raise AssertionError("unreachable: abort raises")

    def _refused(self, context: Any, started: float) -> None:
        """An overload refusal (a queue or the in-flight limit is full): gRPC's retry hint, as the front door's
        refusals carry it (REST sends Retry-After), and its cost."""
        context.set_trailing_metadata(self._pushback)
        if self._observe_rejection is not None:
            self._observe_rejection(time.perf_counter() - started)

    def ModelStreamInfer(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        """Requests run concurrently and are answered as they complete; a failed request gets
        ``error_message`` (with its id) and the stream stays open.

        At most ``grpc.max_stream_inflight`` requests of a stream are in flight: the reader takes a slot
        before it reads the next message, so a client that sends faster than the model answers is slowed
        by gRPC's flow control instead of growing a queue here.
        """
        request_context = self._request_context(context)
        slots = threading.BoundedSemaphore(self._max_stream_inflight)
        # Holds at most max_stream_inflight answers plus the end marker: never blocks a producer.
        answers: queue.Queue[concurrent.futures.Future[Any] | None] = queue.Queue()
        running: set[concurrent.futures.Future[Any]] = set()
        lock = threading.Lock()
        stopped = threading.Event()
        submitted = [0]  # written by the reader before each submission; final once it posts None

        async def one(message: Any) -> Any:
            try:
                try:
                    header = self._header(message)
                    if message.ByteSize() + header.shared_memory_bytes >= PRECHECK_MIN_BYTES:
                        await self._api.precheck(
                            message.model_name, message.model_version, header.declared, request_context
                        )
                    regions = self._api.shared_memory
                    decoded = decode_infer_tensors(header, regions)
                except DecodeError as exc:
                    self._api.count_undecodable(message.model_name, message.model_version, exc)
                    raise
                result = await self._api.infer(decoded, request_context)
                response = encode_infer_response(result, decoded.requested_outputs, regions)
                return pb.ModelStreamInferResponse(infer_response=response)
            except ModelServeError as exc:
                failed = pb.ModelStreamInferResponse(error_message=exc.message)
                failed.infer_response.id = message.id
                return failed

        def answered(future: concurrent.futures.Future[Any]) -> None:
            with lock:
                running.discard(future)
            answers.put(future)

        def read() -> None:
            try:
                for message in request_iterator:
                    while not slots.acquire(timeout=_STREAM_POLL_S):
                        if stopped.is_set():
                            return
                    if stopped.is_set():
                        return
                    future = asyncio.run_coroutine_threadsafe(one(message), self._loop)
                    with lock:
                        running.add(future)
                        submitted[0] += 1
                    future.add_done_callback(answered)
            except Exception as exc:  # the stream broke (client gone, or a malformed frame)
                log.debug("gRPC stream reader ended: %s", exc)
            finally:
                answers.put(None)

        def cancel_all() -> None:
            stopped.set()
            with lock:
                pending = list(running)
            for future in pending:
                future.cancel()

        context.add_callback(cancel_all)
        reader = threading.Thread(target=read, name="grpc-stream-reader", daemon=True)
        reader.start()
        reading, delivered = True, 0
        while reading or delivered < submitted[0]:
            item = answers.get()
            if item is None:
                reading = False
                continue
            delivered += 1
            slots.release()
            try:
                yield item.result()
            except concurrent.futures.CancelledError:
                return
            except Exception:
                log.exception("unexpected error in a gRPC stream request")
                yield pb.ModelStreamInferResponse(error_message="internal server error")

    def _unsupported(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "this extension is not supported by this server")

    # -- shared memory: the same dataplane calls as REST; with shared_memory.enabled false, UNIMPLEMENTED --

    def _shared_memory_on(self, context: Any) -> None:
        if self._api.shared_memory is None:
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "system shared memory is disabled on this server; set shared_memory.enabled: true to use it",
            )

    def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        self._shared_memory_on(context)

        async def status() -> Any:
            return status_message(self._api.shared_memory_status(request.name))

        return self._run(status(), context)

    def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        self._shared_memory_on(context)
        register = self._api.register_shared_memory(request.name, request.key, request.offset, request.byte_size)
        self._run(register, context)
        return pb.SystemSharedMemoryRegisterResponse()

    def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        self._shared_memory_on(context)
        self._run(self._api.unregister_shared_memory(request.name), context)
        return pb.SystemSharedMemoryUnregisterResponse()

    # No CUDA region can ever be registered (no GPU support): the status is empty and unregistering succeeds
    # (Triton's examples unregister every CUDA region before they start); registering one is UNIMPLEMENTED.
    def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        self._shared_memory_on(context)
        if request.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Unable to find cuda shared memory region: '{request.name[:64]}'")
        return pb.CudaSharedMemoryStatusResponse()

    def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "CUDA shared memory is not supported: this server has no GPU support; use system shared memory "
            "(SystemSharedMemoryRegister) or send the tensors in the request",
        )

    def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        self._shared_memory_on(context)
        return pb.CudaSharedMemoryUnregisterResponse()

    TraceSetting = _unsupported
    LogSettings = _unsupported


def add_to_server(servicer: InferenceServicer, server: grpc.Server) -> None:
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)


def _repository_parameters(parameters: Any) -> dict[str, Any]:
    """A load/unload request's ``ModelRepositoryParameter`` map as plain values (str, int, bool, bytes), as
    the REST route gives them."""
    return {
        key: getattr(value, value.WhichOneof("parameter_choice") or "string_param") for key, value in parameters.items()
    }
