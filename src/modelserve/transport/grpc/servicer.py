"""``inference.GRPCInferenceService`` over the same :class:`InferenceAPI` the REST front end uses.

Messages are tritonclient's generated classes, so clients and server share one definition. Documents
(metadata, config, statistics) are built by ``protocol.documents`` and parsed into messages, so REST and
gRPC report the same things.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from modelserve.config import LimitSettings
from modelserve.core.errors import ModelServeError
from modelserve.protocol import documents
from modelserve.protocol.api import InferenceAPI
from modelserve.protocol.grpc_codec import decode_infer_request, encode_infer_response
from modelserve.transport.grpc.errors import GRPC_STATUS

__all__ = ["InferenceServicer"]

log = logging.getLogger(__name__)

R = TypeVar("R")


def _status_of(exc: ModelServeError) -> grpc.StatusCode:
    return GRPC_STATUS[exc.code]


def _rpc(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Turn domain errors into gRPC statuses; unexpected errors into INTERNAL without details."""

    @functools.wraps(method)
    async def wrapper(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except ModelServeError as exc:
            await context.abort(_status_of(exc), exc.message)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("unexpected error in gRPC %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error; the server log has the details")
        raise AssertionError("unreachable: abort raises")

    return wrapper


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, api: InferenceAPI, limits: LimitSettings) -> None:
        self._api = api
        self._limits = limits

    @_rpc
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self._api.is_live())

    @_rpc
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._api.is_ready())

    @_rpc
    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=await self._api.is_model_ready(request.name, request.version))

    @_rpc
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return json_format.ParseDict(self._api.server_metadata(), pb.ServerMetadataResponse())

    @_rpc
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        metadata = await self._api.model_metadata(request.name, request.version)
        return json_format.ParseDict(documents.metadata_document(metadata), pb.ModelMetadataResponse())

    @_rpc
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        config = await self._api.model_config(request.name, request.version)
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(config)
        return response

    @_rpc
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        stats = await self._api.statistics(request.name, request.version)
        return json_format.ParseDict(documents.statistics_document(stats), pb.ModelStatisticsResponse())

    @_rpc
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        entries = documents.index_document(self._api.repository_index(ready_only=request.ready))
        return json_format.ParseDict({"models": entries}, pb.RepositoryIndexResponse())

    @_rpc
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await self._api.load_model(request.model_name, dict(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self._api.unload_model(request.model_name, dict(request.parameters))
        return pb.RepositoryModelUnloadResponse()

    @_rpc
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        limits = self._limits
        decoded = decode_infer_request(request, limits.max_tensor_bytes, limits.max_requested_outputs)
        return encode_infer_response(await self._api.infer(decoded))

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        """Each request answered on the stream as it completes; a failed request sends ``error_message``
        and the stream stays open."""
        results: asyncio.Queue[Any] = asyncio.Queue()
        limits = self._limits

        async def one(message: Any) -> None:
            try:
                decoded = decode_infer_request(message, limits.max_tensor_bytes, limits.max_requested_outputs)
                response = encode_infer_response(await self._api.infer(decoded))
                await results.put(pb.ModelStreamInferResponse(infer_response=response))
            except ModelServeError as exc:
                failed = pb.ModelStreamInferResponse(error_message=exc.message)
                failed.infer_response.id = message.id
                await results.put(failed)
            except Exception:
                log.exception("unexpected error in a gRPC stream request")
                await results.put(pb.ModelStreamInferResponse(error_message="internal server error"))

        async def read_all() -> None:
            async with asyncio.TaskGroup() as group:
                async for message in request_iterator:
                    group.create_task(one(message))
            await results.put(None)

        async with asyncio.TaskGroup() as group:
            group.create_task(read_all())
            while (item := await results.get()) is not None:
                yield item

    async def _unsupported(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this extension is not supported by this server")

    SystemSharedMemoryStatus = _unsupported
    SystemSharedMemoryRegister = _unsupported
    SystemSharedMemoryUnregister = _unsupported
    CudaSharedMemoryStatus = _unsupported
    CudaSharedMemoryRegister = _unsupported
    CudaSharedMemoryUnregister = _unsupported
    TraceSetting = _unsupported
    LogSettings = _unsupported


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
