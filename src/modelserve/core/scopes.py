"""What a request may touch: the scope every REST route and every gRPC method belongs to.

The names are Triton's restricted-API categories (``--http-restricted-api`` and
``--grpc-restricted-protocol`` take ``<category>,...:<header>=<value>``), so an operator who has written a
Triton restriction can write ours with the same words:

==================  ==========================================================================
health              server live/ready, model ready
metadata            server and model metadata
inference           infer (unary and streaming)
model-config        a model's configuration
model-repository    repository index, load, unload (and our alias listing)
statistics          per-model statistics
shared-memory       system and CUDA shared memory (not supported: 501 / UNIMPLEMENTED)
trace               trace settings (not supported)
logging             log settings (not supported)
==================  ==========================================================================

Ours, for what Triton does not have:

==================  ==========================================================================
metrics             Prometheus ``/metrics`` and the alert list derived from the same observations
dashboard           the dashboard page, its files and its summary JSON
admin               changes to serving state that are not a load: alias moves and rollback
==================  ==========================================================================

The enum lives in ``core`` so that both front ends (``transport/http/routes.py``,
``transport/grpc/scopes.py``) and the gateway that will enforce scopes share it without importing each
other. Nothing enforces a scope yet; the gateway will read it from the route (REST) or the method table
(gRPC).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Scope"]


class Scope(StrEnum):
    """A family of endpoints that an operator allows or refuses as a whole. The value is the name a
    configuration file uses (Triton's spelling, with hyphens)."""

    HEALTH = "health"
    METADATA = "metadata"
    INFERENCE = "inference"
    MODEL_CONFIG = "model-config"
    MODEL_REPOSITORY = "model-repository"
    STATISTICS = "statistics"
    SHARED_MEMORY = "shared-memory"
    TRACE = "trace"
    LOGGING = "logging"
    METRICS = "metrics"
    DASHBOARD = "dashboard"
    ADMIN = "admin"
