"""Builds the observability parts from the settings, for the engine (``app/engine.py``).

One place that knows which settings feed which part: the windowed monitor (dashboard, alerts), drift
detection, the prediction log, the alert manager with its optional webhook, and the metric collectors that
read them. Nothing here starts a thread; :meth:`ObservabilityParts.start` and :meth:`stop` do.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelserve.config import AlertSettings, PredictionLogFormat, Settings, SettingsError
from modelserve.core.clock import Clock, wall_time_ms
from modelserve.observability.alerts import AlertManager
from modelserve.observability.drift import DriftMonitor
from modelserve.observability.metrics import ServerMetrics, VersionMetrics
from modelserve.observability.monitor import Monitor
from modelserve.observability.observation import Observer
from modelserve.observability.prediction_log import PredictionLog
from modelserve.observability.webhook import WebhookNotifier
from modelserve.repository.loaded import VersionState
from modelserve.repository.manager import ModelManager
from modelserve.service.operations import Operations

__all__ = ["ObservabilityParts", "build_observability"]


@dataclass(frozen=True, slots=True)
class ObservabilityParts:
    monitor: Monitor
    drift: DriftMonitor
    prediction_log: PredictionLog
    alerts: AlertManager
    operations: Operations

    @property
    def observers(self) -> list[Observer]:
        """What the inference API hands served requests to (only the parts that are on)."""
        return [observer for observer in (self.prediction_log, self.drift) if observer.enabled]

    def start(self) -> None:
        """Start the background threads. Raises :class:`SettingsError` when a setting cannot be honoured."""
        try:
            self.prediction_log.start()
        except ImportError as exc:
            raise SettingsError(
                "prediction_log.format is parquet, which needs pyarrow: pip install 'modelserve[parquet]' "
                "or set prediction_log.format: jsonl"
            ) from exc
        self.drift.start()

    def stop(self) -> None:
        """Write what is queued and end the threads (blocking; bounded by each part's timeout)."""
        self.prediction_log.stop()
        self.drift.stop()


def _webhook(settings: AlertSettings, metrics: ServerMetrics) -> WebhookNotifier | None:
    if settings.webhook_url is None:
        return None
    return WebhookNotifier(
        settings.webhook_url,
        timeout_s=settings.webhook_timeout_s,
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
        queue_size=settings.webhook_queue_size,
        notifications=metrics.alert_notifications,
    )


def build_observability(
    settings: Settings, manager: ModelManager, metrics: ServerMetrics, clock: Clock
) -> ObservabilityParts:
    metrics.watch_models(
        lambda: [
            VersionMetrics(
                v.statistics, v.scheduler.queue_depth, v.load_ns / 1e9, v.warmup_ns / 1e9, v.scheduler.in_flight
            )
            for v in manager.loaded_versions()
        ]
    )
    metrics.watch_states(
        lambda: [(e.name, e.version, e.state.value) for e in manager.index()],
        [state.value for state in VersionState],
    )
    monitor = Monitor(
        lambda: [(v.statistics, v.scheduler.queue_depth) for v in manager.loaded_versions()],
        clock,
        horizon_s=settings.monitor.horizon_s,
    )
    drift_settings = settings.drift
    drift = DriftMonitor(
        settings.repository.path,
        enabled=drift_settings.enabled,
        window_rows=drift_settings.window_rows,
        psi_threshold=drift_settings.psi_threshold,
        sample_rate=drift_settings.sample_rate,
        queue_size=drift_settings.queue_size,
        allow_symlinks=settings.repository.allow_symlinks,
    )
    log_settings = settings.prediction_log
    prediction_log = PredictionLog(
        log_settings.directory,
        enabled=log_settings.enabled,
        sample_rate=log_settings.sample_rate,
        model_sample_rates=log_settings.model_sample_rates,
        parquet=log_settings.format is PredictionLogFormat.PARQUET,
        max_file_bytes=log_settings.max_file_bytes,
        max_files=log_settings.max_files,
        max_inline_bytes=log_settings.max_inline_bytes,
        queue_size=log_settings.queue_size,
    )
    metrics.watch_observers(drift, prediction_log)
    alerts = AlertManager(
        settings.alerts,
        monitor,
        drift,
        clock,
        wall_time_ms,
        metrics.alerts_firing,
        _webhook(settings.alerts, metrics),
    )
    operations = Operations(
        monitor, drift, alerts, settings.dashboard.enabled, drift_psi_threshold=drift_settings.psi_threshold
    )
    return ObservabilityParts(monitor, drift, prediction_log, alerts, operations)
