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

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from modelserve.observability.drift import DriftMonitor
from modelserve.observability.prediction_log import PredictionLog
from modelserve.observability.statistics import FAILURE_CAUSES, ModelVersionStatistics
from modelserve.observability.statistics import Histogram as LatencyHistogram

__all__ = ["CONTENT_TYPE_LATEST", "REJECTION_BUCKETS_S", "ServerMetrics", "ShadowRow", "VersionMetrics"]

# A rejection should cost microseconds, so the buckets start far below the latency ones: 5 us to 1 s.
REJECTION_BUCKETS_S = (
    0.000005,
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

_FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


@dataclass(frozen=True, slots=True)
class VersionMetrics:
    """What the collector reads of one loaded version."""

    statistics: ModelVersionStatistics
    queue_depth: int
    load_seconds: float
    warmup_seconds: float = 0.0
    in_flight: int = 0


_Pick = Callable[[ModelVersionStatistics], LatencyHistogram]


def _histogram(name: str, documentation: str, rows: list[tuple[list[str], LatencyHistogram]]) -> HistogramMetricFamily:
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
        "Cumulative end-to-end time of successful requests (us), as Triton counts it.",
        lambda s: s.success.ns / 1000,
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
            "modelserve_model_memory_bytes",
            "Memory the version holds, measured at load (the index's memory_source says how).",
            labels=labels,
        )
        warmup = GaugeMetricFamily(
            "modelserve_model_warmup_duration_seconds", "Time the version's warm-up took.", labels=labels
        )
        in_flight = GaugeMetricFamily(
            "modelserve_inflight_requests", "Requests admitted to the version and not finished.", labels=labels
        )
        failures = CounterMetricFamily(
            "modelserve_request_failures",
            "Failed requests by cause: shed (refused by a full queue, a limit or a drain), timeout (queue "
            "deadline passed), cancelled (client went away), model (the model failed), other.",
            labels=[*labels, "cause"],
        )
        for v in versions:
            key = [v.statistics.name, v.statistics.version]
            pending.add_metric(key, v.queue_depth)
            load.add_metric(key, v.load_seconds)
            memory.add_metric(key, v.statistics.memory_bytes)
            warmup.add_metric(key, v.warmup_seconds)
            in_flight.add_metric(key, v.in_flight)
            by_cause = v.statistics.failures_by_cause
            for cause in FAILURE_CAUSES:
                failures.add_metric([*key, cause], by_cause.get(cause, 0))
        yield from (pending, load, memory, warmup, in_flight, failures)

        def rows(pick: _Pick) -> list[tuple[list[str], LatencyHistogram]]:
            return [([v.statistics.name, v.statistics.version], pick(v.statistics)) for v in versions]

        yield _histogram(
            "modelserve_request_duration_seconds",
            "End-to-end time of successful requests inside the server.",
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
    """Host CPU and memory. Utilisation is measured between scrapes at least ``_CPU_MIN_INTERVAL_S`` apart
    (a faster scraper, the dashboard beside Prometheus say, reads the last figure instead of shrinking the
    window) and from start-up for the first scrape, which would otherwise read 0."""

    _CPU_MIN_INTERVAL_S = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_times = psutil.cpu_times()
        self._process = psutil.Process()
        self._last_at = time.monotonic()
        self._utilization = 0.0

    def _cpu_utilization(self) -> float:
        with self._lock:
            now = time.monotonic()
            if now - self._last_at >= self._CPU_MIN_INTERVAL_S or self._utilization == 0.0:
                times = psutil.cpu_times()
                busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
                last_busy = sum(self._last_times) - self._last_times.idle - getattr(self._last_times, "iowait", 0.0)
                total = sum(times) - sum(self._last_times)
                if total > 0:
                    self._utilization = min(1.0, max(0.0, (busy - last_busy) / total))
                    self._last_times, self._last_at = times, now
            return self._utilization

    def collect(self) -> Iterator[Metric]:
        memory = psutil.virtual_memory()
        yield GaugeMetricFamily("nv_cpu_utilization", "CPU utilization (0-1).", value=self._cpu_utilization())
        yield GaugeMetricFamily("nv_cpu_memory_total_bytes", "Host memory.", value=memory.total)
        yield GaugeMetricFamily(
            "nv_cpu_memory_used_bytes", "Host memory in use.", value=memory.total - memory.available
        )
        # This server process's own memory (with several workers, one series per worker: each holds its
        # own copy of every model). Its python-runtime worker processes are counted in the model gauges.
        yield GaugeMetricFamily(
            "modelserve_process_resident_memory_bytes",
            "Resident memory of this server process.",
            value=self._process.memory_info().rss,
        )


class _StateCollector(Collector):
    """``modelserve_model_state{model,version,state}``: 1 for the state each version is in, 0 for the others,
    so ``modelserve_model_state{state="FAILED"} == 1`` is an alert rule."""

    def __init__(self, source: Callable[[], list[tuple[str, str, str]]], states: Sequence[str]) -> None:
        self._source = source
        self._states = tuple(states)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "modelserve_model_state",
            "Lifecycle state of each model version (1 = current).",
            labels=["model", "version", "state"],
        )
        for model, version, current in self._source():
            for state in self._states:
                family.add_metric([model, version, state], 1.0 if state == current else 0.0)
        yield family


class _BreakerCollector(Collector):
    """``modelserve_breaker_state{model,version,state}``: 1 for each breaker's state, 0 for the others (so
    ``modelserve_breaker_state{state="open"} == 1`` is an alert rule), and ``modelserve_breaker_trips``."""

    def __init__(self, source: Callable[[], list[tuple[str, str, str, int]]], states: Sequence[str]) -> None:
        self._source = source
        self._states = tuple(states)

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "modelserve_breaker_state",
            "Circuit breaker state of each model version (1 = current).",
            labels=["model", "version", "state"],
        )
        trips = CounterMetricFamily(
            "modelserve_breaker_trips", "Times each version's breaker opened.", labels=["model", "version"]
        )
        for model, version, current, tripped in self._source():
            for name in self._states:
                state.add_metric([model, version, name], 1.0 if name == current else 0.0)
            trips.add_metric([model, version], tripped)
        yield from (state, trips)


# One model's shadow figures (service/shadow.py): model, sent, dropped, failed, completed, compared, agreed,
# and the summed latency delta (shadow - primary) in seconds.
ShadowRow = tuple[str, int, int, int, int, int, int, float]


class _ShadowCollector(Collector):
    def __init__(self, source: Callable[[], list[ShadowRow]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "modelserve_shadow_requests",
            "Shadow copies by outcome: sent (queued), dropped (the shadow queue was full), failed, completed.",
            labels=["model", "outcome"],
        )
        compared = CounterMetricFamily(
            "modelserve_shadow_compared", "Shadow answers compared with the primary's.", labels=["model"]
        )
        agreed = CounterMetricFamily(
            "modelserve_shadow_agreed", "Shadow answers that agreed with the primary's.", labels=["model"]
        )
        agreement = GaugeMetricFamily(
            "modelserve_shadow_agreement_ratio", "Share of compared shadow answers that agreed.", labels=["model"]
        )
        delta = GaugeMetricFamily(
            "modelserve_shadow_latency_delta_seconds",
            "Mean of (shadow latency - primary latency) over completed shadows.",
            labels=["model"],
        )
        for model, sent, dropped, failed, completed, n_compared, n_agreed, delta_s in self._source():
            for outcome, count in (("sent", sent), ("dropped", dropped), ("failed", failed), ("completed", completed)):
                requests.add_metric([model, outcome], count)
            compared.add_metric([model], n_compared)
            agreed.add_metric([model], n_agreed)
            if n_compared:
                agreement.add_metric([model], n_agreed / n_compared)
            if completed:
                delta.add_metric([model], delta_s / completed)
        yield from (requests, compared, agreed, agreement, delta)


class _DriftCollector(Collector):
    """Drift of the last completed window per version and feature, and window/event/skip counts."""

    def __init__(self, drift: DriftMonitor) -> None:
        self._drift = drift

    def collect(self) -> Iterator[Metric]:
        feature_labels = ["model", "version", "feature"]
        psi = GaugeMetricFamily(
            "modelserve_drift_psi", "PSI of the last window vs the reference.", labels=feature_labels
        )
        ks = GaugeMetricFamily(
            "modelserve_drift_ks_statistic",
            "KS statistic of the last window (continuous features).",
            labels=feature_labels,
        )
        ks_p = GaugeMetricFamily(
            "modelserve_drift_ks_pvalue", "KS p-value of the last window (continuous features).", labels=feature_labels
        )
        overall = GaugeMetricFamily(
            "modelserve_drift_psi_overall", "Mean PSI over features, last window.", labels=["model", "version"]
        )
        prediction = GaugeMetricFamily(
            "modelserve_drift_prediction_psi",
            "PSI of the predicted-class distribution, last window.",
            labels=["model", "version"],
        )
        for result in self._drift.latest():
            key = [result.model, result.version]
            overall.add_metric(key, result.mean_psi)
            if result.prediction_psi is not None:
                prediction.add_metric(key, result.prediction_psi)
            for feature in result.features:
                psi.add_metric([*key, feature.feature], feature.psi)
                if feature.ks_statistic is not None and feature.ks_pvalue is not None:
                    ks.add_metric([*key, feature.feature], feature.ks_statistic)
                    ks_p.add_metric([*key, feature.feature], feature.ks_pvalue)
        yield from (psi, ks, ks_p, overall, prediction)
        windows = CounterMetricFamily(
            "modelserve_drift_windows", "Completed drift windows.", labels=["model", "version"]
        )
        events = CounterMetricFamily(
            "modelserve_drift_events", "Windows whose PSI exceeded the threshold.", labels=["model", "version"]
        )
        mismatched = CounterMetricFamily(
            "modelserve_drift_mismatched_requests",
            "Requests whose input did not fit the version's profile (not counted in windows).",
            labels=["model", "version"],
        )
        for (model, version), counts in sorted(self._drift.counts().items()):
            windows.add_metric([model, version], counts.windows)
            events.add_metric([model, version], counts.events)
            mismatched.add_metric([model, version], counts.mismatched)
        yield from (windows, events, mismatched)
        yield CounterMetricFamily(
            "modelserve_drift_skipped_requests",
            "Requests not compared because the drift queue was full.",
            value=self._drift.skipped,
        )


class _PredictionLogCollector(Collector):
    def __init__(self, prediction_log: PredictionLog) -> None:
        self._log = prediction_log

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "modelserve_prediction_log_records",
            "Sampled requests by outcome: written, dropped (queue full), failed (destination refused).",
            labels=["model", "outcome"],
        )
        for model, counts in sorted(self._log.counts().items()):
            family.add_metric([model, "written"], counts.written)
            family.add_metric([model, "dropped"], counts.dropped)
            family.add_metric([model, "failed"], counts.failed)
        yield family


class ServerMetrics:
    def __init__(self) -> None:
        # No "<name>_created" series beside every counter: nobody reads them and they double the output.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.load_failures = Counter(
            "modelserve_model_load_failures",
            "Model version loads that did not reach READY, by stage (budget, config, checksum, load, verify, warmup).",
            ["model", "stage"],
            registry=self.registry,
        )
        self.routing_requests = Counter(
            "modelserve_routing_requests",
            "Answers whose version a routing split chose, by model, arm and the arm's target (alias or version).",
            ["model", "arm", "target"],
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
        self.alerts_firing = Gauge(
            "modelserve_alerts_firing",
            "1 while the alert rule fires for the model, 0 once it pending or resolved (see GET /v2/alerts).",
            ["alert", "model", "severity"],
            registry=self.registry,
        )
        self.alert_notifications = Counter(
            "modelserve_alert_notifications",
            "Alert webhook notifications by outcome: sent, or failed (gave up after retries, or dropped).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("sent", "failed"):
            self.alert_notifications.labels(outcome=outcome)  # both series read 0 before the first alert
        # The server's own cost of an overload refusal (503 / UNAVAILABLE), from the request reaching the
        # transport's handler to the refusal being handed back: the number that says shedding is cheap.
        self.rejection_seconds = Histogram(
            "modelserve_rejection_duration_seconds",
            "Server time spent refusing a request for overload (503 / UNAVAILABLE), by transport.",
            ["transport"],
            buckets=REJECTION_BUCKETS_S,
            registry=self.registry,
        )
        # Where a gRPC inference call waits before any of our code sees it: for a thread of its lane
        # (transport/grpc/admission.py); the scheduler's queue time starts only after this.
        self.grpc_thread_wait_seconds = Histogram(
            "modelserve_grpc_thread_wait_seconds",
            "Time a gRPC inference call waited for a thread of its lane before it started.",
            buckets=REJECTION_BUCKETS_S,
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "modelserve_http_connections_closed",
            "REST connections closed by a guard: idle_timeout, header_timeout, body_timeout (408), over_capacity.",
            ["reason"],
            registry=self.registry,
        )
        for transport in ("http", "grpc"):
            self.rejection_seconds.labels(transport=transport)
        # Resilience (routing/breaker.py, service/resilience.py): breaker transitions as they happen, and
        # fallback answers by cause (breaker_open, model, timeout, unavailable) and the target that answered.
        self.breaker_transitions = Counter(
            "modelserve_breaker_transitions",
            "Circuit breaker state changes per model version (closed, open, half_open).",
            ["model", "version", "from_state", "to_state"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "modelserve_fallbacks",
            "Requests answered by a fallback target, by what failed (cause) and what answered (target).",
            ["model", "cause", "target"],
            registry=self.registry,
        )
        self.fallbacks_refused = Counter(
            "modelserve_fallbacks_refused",
            "Fallbacks not tried because the model's fallback budget (percent of requests) was spent.",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_HostCollector())
        self._source: Callable[[], list[VersionMetrics]] | None = None

    def rejection_observer(self, transport: str) -> Callable[[float], None]:
        """``observe(seconds)`` for one transport's refusals (the labelled child, looked up once)."""
        return self.rejection_seconds.labels(transport=transport).observe

    def count_closed_connection(self, reason: str) -> None:
        self.connections_closed.labels(reason=reason).inc()

    def watch_models(self, source: Callable[[], list[VersionMetrics]]) -> None:
        """Export per-version metrics read from ``source`` at every scrape (called once, at start-up)."""
        self._source = source
        self.registry.register(_ModelCollector(source))

    def watch_shadows(self, source: Callable[[], list[ShadowRow]]) -> None:
        """Export each model's shadow figures, read from ``source`` at every scrape."""
        self.registry.register(_ShadowCollector(source))

    def watch_breakers(self, source: Callable[[], list[tuple[str, str, str, int]]], states: Sequence[str]) -> None:
        """Export each breaker's state and trips, read from ``source`` (model, version, state, trips) at every
        scrape."""
        self.registry.register(_BreakerCollector(source, states))

    def watch_states(self, source: Callable[[], list[tuple[str, str, str]]], states: Sequence[str]) -> None:
        """Export each version's lifecycle state, read from ``source`` (model, version, state) at every scrape."""
        self.registry.register(_StateCollector(source, states))

    def watch_observers(self, drift: DriftMonitor, prediction_log: PredictionLog) -> None:
        """Export drift results and prediction-log counts at every scrape (called once, at start-up)."""
        self.registry.register(_DriftCollector(drift))
        self.registry.register(_PredictionLogCollector(prediction_log))

    def render(self) -> bytes:
        versions = self._source() if self._source is not None else []
        return generate_latest(self.registry) + triton_counters_text(versions).encode()
