"""The scope of every ``inference.GRPCInferenceService`` method, the gRPC half of the REST route table.

A method name here is the RPC's name in Triton's ``grpc_service.proto`` (what
``tritonclient.grpc.service_pb2_grpc.GRPCInferenceServiceServicer`` defines); the full gRPC method is
``/inference.GRPCInferenceService/<name>``. The assignment follows Triton's own restricted-protocol
categories, and agrees with the REST route for the same operation (``http/routes.py``), so that a scope
means the same thing on both ports. The test ``tests/transport/test_routes.py`` introspects the generated
servicer base class: a method added to the proto without a scope here fails it.

Nothing enforces these yet: the gateway will look a call's scope up here by method name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from modelserve.core.scopes import Scope

__all__ = ["GRPC_METHOD_SCOPES", "SERVICE", "method_scope"]

SERVICE = "inference.GRPCInferenceService"

# Read-only: a table that code could patch at run time would make the gateway's decision depend on import order.
GRPC_METHOD_SCOPES: Mapping[str, Scope] = MappingProxyType(
    {
        "ServerLive": Scope.HEALTH,
        "ServerReady": Scope.HEALTH,
        # Triton files model readiness under health, not metadata: a load balancer's probe needs nothing else.
        "ModelReady": Scope.HEALTH,
        "ServerMetadata": Scope.METADATA,
        "ModelMetadata": Scope.METADATA,
        "ModelInfer": Scope.INFERENCE,
        "ModelStreamInfer": Scope.INFERENCE,
        "ModelConfig": Scope.MODEL_CONFIG,
        "ModelStatistics": Scope.STATISTICS,
        "RepositoryIndex": Scope.MODEL_REPOSITORY,
        "RepositoryModelLoad": Scope.MODEL_REPOSITORY,
        "RepositoryModelUnload": Scope.MODEL_REPOSITORY,
        "SystemSharedMemoryStatus": Scope.SHARED_MEMORY,
        "SystemSharedMemoryRegister": Scope.SHARED_MEMORY,
        "SystemSharedMemoryUnregister": Scope.SHARED_MEMORY,
        "CudaSharedMemoryStatus": Scope.SHARED_MEMORY,
        "CudaSharedMemoryRegister": Scope.SHARED_MEMORY,
        "CudaSharedMemoryUnregister": Scope.SHARED_MEMORY,
        "TraceSetting": Scope.TRACE,
        "LogSettings": Scope.LOGGING,
    }
)


def method_scope(full_method: str) -> Scope | None:
    """The scope of a call, from grpcio's ``HandlerCallDetails.method`` (``/inference.GRPCInferenceService/
    ModelInfer``) or from a bare method name (``ModelInfer``). ``None`` for a method of another service or
    one this table does not know: the caller decides (the gateway will refuse it). Pure; thread-safe."""
    service, _, name = full_method.lstrip("/").rpartition("/")
    if service and service != SERVICE:
        return None
    return GRPC_METHOD_SCOPES.get(name)
