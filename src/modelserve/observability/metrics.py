"""Prometheus metrics (``GET /metrics`` on the REST port). One registry per server, so tests and
embedded servers never share counters through the process-global default registry.

This first set covers the model lifecycle; request, queue and batch metrics with Triton's names come
with the observability work (they are read from the statistics the schedulers already keep).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.load_failures = Counter(
            "modelserve_model_load_failures",
            "Model version loads that did not reach READY, by stage (checksum, warmup, load).",
            ["model", "stage"],
            registry=self.registry,
        )
        self.evictions = Counter(
            "modelserve_model_evictions",
            "Models unloaded to keep within the memory budget (budget) or because they were idle (idle).",
            ["model", "cause"],
            registry=self.registry,
        )

        self.cold_start_seconds = Gauge(
            "modelserve_model_cold_start_seconds",
            "How long the last request that loaded this model on demand waited for the load.",
            ["model"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
