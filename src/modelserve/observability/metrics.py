"""Prometheus metrics (``GET /metrics`` on the REST port), with Triton's names where Triton has the metric
so existing Triton dashboards and its Helm autoscaling rule work unchanged.

Per-model families are read at scrape time from the statistics the schedulers keep anyway
(``ModelVersionStatistics``): the request path pays nothing extra for them. Triton's semantics: a batch of
n counts once in ``nv_inference_request_success`` and n times in ``nv_inference_count``; durations are
cumulative microseconds; failures carry ``reason`` = REJECTED / CANCELED / BACKEND / OTHER.

Triton has no latency histograms; modelserve adds them beside the counters (``modelserve_*_seconds``,
buckets from 100 µs to 10 s) so p50/p95/p99 come from ``histogram_quantile``.

One registry per server, so tests and embedded servers never share series through the global registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from modelserve.observability.statistics import Histogram, ModelVersionStatistics

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics", "VersionMetrics"]

_FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


@dataclass(frozen=True, slots=True)
class VersionMetrics:
    """What the collector reads of one loaded version."""

    statistics: ModelVersionStatistics
    queue_depth: int
    load_seconds: float


def _histogram(name: str, documentation: str, rows: list[tuple[list[str], Histogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["model", "version"])
    for labels, histogram in rows:
        family.add_metric(labels, histogram.cumulative(), histogram.total)
    return family


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# Triton's counters keep their exact names (prometheus-client would append "_total" to a counter family), so
# they are written here in the text format: (name, help, value of one version's statistics).
_TRITON_COUNTERS: tuple[tuple[str, str, Callable[[ModelVersionStatistics], float]], ...] = (
    ("nv_inference_request_success", "Successful requests (a batch of n counts 1).", lambda s: s.success.count),
    ("nv_inference_count", "Inferences (a batch of n counts n).", lambda s: s.inference_count),
    ("nv_inference_exec_count", "Model executions (batches).", lambda s: s.execution_count),
    (
        "nv_inference_request_duration_us",
        "Cumulative end-to-end request time (us).",
        lambda s: (s.success.ns + s.fail.ns) / 1000,
    ),
    ("nv_inference_queue_duration_us", "Cumulative time requests waited in queues (us).", lambda s: s.queue.ns / 1000),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative input preparation time (us).",
        lambda s: s.compute_input.ns / 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative model execution time (us).",
        lambda s: s.compute_infer.ns / 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative output extraction time (us).",
        lambda s: s.compute_output.ns / 1000,
    ),
)


def triton_counters_text(versions: list[VersionMetrics]) -> str:
    lines: list[str] = []
    for name, documentation, pick in _TRITON_COUNTERS:
        lines += [f"# HELP {name} {documentation}", f"# TYPE {name} counter"]
        for v in versions:
            s = v.statistics
            lines.append(
                f'{name}{{model="{_label_value(s.name)}",version="{_label_value(s.version)}"}} {float(pick(s))!r}'
            )
    name = "nv_inference_request_failure"
    lines += [
        f"# HELP {name} Failed requests by reason (REJECTED, CANCELED, BACKEND, OTHER).",
        f"# TYPE {name} counter",
    ]
    for v in versions:
        s = v.statistics
        for reason in _FAILURE_REASONS:
            count = float(s.failures_by_reason.get(reason, 0))
            model, version = _label_value(s.name), _label_value(s.version)
            lines.append(f'{name}{{model="{model}",reason="{reason}",version="{version}"}} {count!r}')
    return "\n".join(lines) + "\n"


class _ModelCollector(Collector):
    def __init__(self, source: Callable[[], list[VersionMetrics]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        versions = self._source()
        labels = ["model", "version"]

        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count", "Requests accepted and not yet executing.", labels=labels
        )
        load = GaugeMetricFamily("nv_model_load_duration_secs", "Time the version took to load.", labels=labels)
        memory = GaugeMetricFamily(
            "modelserve_model_memory_bytes", "Resident memory the version took at load.", labels=labels
        )
        for v in versions:
            key = [v.statistics.name, v.statistics.version]
            pending.add_metric(key, v.queue_depth)
            load.add_metric(key, v.load_seconds)
            memory.add_metric(key, v.statistics.memory_bytes)
        yield pending
        yield load
        yield memory

        def rows(pick: Callable[[ModelVersionStatistics], Histogram]) -> list[tuple[list[str], Histogram]]:
            return [([v.statistics.name, v.statistics.version], pick(v.statistics)) for v in versions]

        yield _histogram(
            "modelserve_request_duration_seconds",
            "End-to-end request time inside the server.",
            rows(lambda s: s.request_seconds),
        )
        yield _histogram(
            "modelserve_queue_duration_seconds",
            "Time a request waited for an instance or a batch.",
            rows(lambda s: s.queue_seconds),
        )
        yield _histogram(
            "modelserve_compute_duration_seconds", "Time one execution (batch) took.", rows(lambda s: s.compute_seconds)
        )
        yield _histogram("modelserve_batch_size", "Rows per execution.", rows(lambda s: s.batch_sizes))


class _HostCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        memory = psutil.virtual_memory()
        yield GaugeMetricFamily("nv_cpu_utilization", "CPU utilization (0-1).", value=psutil.cpu_percent() / 100)
        yield GaugeMetricFamily("nv_cpu_memory_total_bytes", "Host memory.", value=memory.total)
        yield GaugeMetricFamily(
            "nv_cpu_memory_used_bytes", "Host memory in use.", value=memory.total - memory.available
        )


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
        self.registry.register(_HostCollector())
        self._source: Callable[[], list[VersionMetrics]] | None = None

    def watch_models(self, source: Callable[[], list[VersionMetrics]]) -> None:
        """Export per-version metrics read from ``source`` at every scrape (called once, at start-up)."""
        self._source = source
        self.registry.register(_ModelCollector(source))

    def render(self) -> bytes:
        versions = self._source() if self._source is not None else []
        return generate_latest(self.registry) + triton_counters_text(versions).encode()
