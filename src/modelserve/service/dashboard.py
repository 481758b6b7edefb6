"""The live dashboard's data (``GET /v2/dashboard/summary``): one JSON document the page polls.

It joins what the operations views already hold, reading nothing new: the repository index (every model
version and its lifecycle state), the monitor's trailing window per loaded version (throughput, latency
quantiles, errors, queue depth, batch sizes), the last drift window per version, and the alert states.

The document is plain JSON: numbers that do not exist (a latency quantile over a window with no requests,
a KS p-value for a categorical feature) are ``null``, never NaN, which ``JSON.parse`` rejects.

Shape (``versions[*].drift`` is ``null`` until the version has a reference profile and a full window)::

    {"server_time_ms": 1700000000000, "window_s": 10.0,
     "models": [{"name": "iris", "version": "1", "state": "READY", "reason": ""}],
     "versions": [{"model": "iris", "version": "1", "span_s": 10.0, "requests": 812, "failures": 0,
                   "throughput": 81.2, "error_rate": 0.0, "p50_ms": 0.4, "p95_ms": 0.9, "p99_ms": 1.8,
                   "queue_depth": 0, "mean_batch_size": 1.7, "batch_sizes": [{"le": "1", "count": 5}, ...],
                   "drift": {"window": 3, "rows": 50, "ended_ms": ..., "max_psi": 0.31, "mean_psi": 0.2,
                             "prediction_psi": null, "drifted": true, "threshold": 0.2,
                             "features": [{"feature": "0", "psi": 0.31, "ks_statistic": 0.4,
                                           "ks_pvalue": 0.001, "drifted": true}, ...]}}],
     "alerts": {"firing": [...], "pending": [...], "resolved": [...the most recent few...]}}
"""

from __future__ import annotations

import math
from typing import Any

from modelserve.core.clock import wall_time_ms
from modelserve.core.errors import ValidationError
from modelserve.observability.drift_results import DriftWindowResult
from modelserve.observability.monitor import VersionWindow
from modelserve.service.dataplane import DataPlane
from modelserve.service.operations import Operations

__all__ = [
    "DEFAULT_WINDOW_S",
    "MAX_WINDOW_S",
    "MIN_WINDOW_S",
    "RESOLVED_ALERTS_SHOWN",
    "dashboard_summary",
    "parse_window_s",
]

DEFAULT_WINDOW_S = 10.0
MIN_WINDOW_S = 1.0
# The monitor keeps monitor.horizon_s of samples (900 s by default); ten minutes is as far back as a live
# view is useful, and a bound keeps a typo from asking for a day.
MAX_WINDOW_S = 600.0
# The page shows what just resolved, not the history: /v2/alerts has the full list.
RESOLVED_ALERTS_SHOWN = 5


def parse_window_s(raw: str | None) -> float:
    """The ``window`` query parameter in seconds: ``DEFAULT_WINDOW_S`` when absent.

    Raises :class:`ValidationError` (naming the parameter, the bounds and the value) when it is not a
    finite number in ``[MIN_WINDOW_S, MAX_WINDOW_S]``.
    """
    if raw is None:
        return DEFAULT_WINDOW_S
    try:
        window_s = float(raw)
    except ValueError:
        window_s = math.nan
    if not MIN_WINDOW_S <= window_s <= MAX_WINDOW_S:  # also false for NaN
        raise ValidationError(
            f"query parameter 'window' must be a number of seconds from {MIN_WINDOW_S:g} to {MAX_WINDOW_S:g}, "
            f"got '{raw[:32]}'; e.g. ?window=10"
        )
    return window_s


def dashboard_summary(api: DataPlane, operations: Operations, window_s: float) -> dict[str, Any]:
    """The dashboard document over the trailing ``window_s`` seconds (see the module docstring).

    Reads in-memory state only (no awaits, no I/O): call it on the event loop. ``window_s`` is assumed
    already bounded by :func:`parse_window_s`.
    """
    drift = {(result.model, result.version): result for result in operations.drift.latest()}
    versions = []
    for window in operations.monitor.windows(window_s):
        result = drift.get((window.model, window.version))
        document = _window_document(window)
        document["drift"] = None if result is None else _drift_document(result, operations.drift_psi_threshold)
        versions.append(document)
    return {
        "server_time_ms": wall_time_ms(),
        "window_s": window_s,
        "models": [
            {"name": entry.name, "version": entry.version, "state": entry.state.value, "reason": entry.reason}
            for entry in api.repository_index(ready_only=False)
        ],
        "versions": versions,
        "alerts": _alerts_document(operations.alerts.document()),
    }


def _finite(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _window_document(window: VersionWindow) -> dict[str, Any]:
    return {
        "model": window.model,
        "version": window.version,
        "span_s": _finite(window.seconds, 3),
        "requests": window.requests,
        "failures": window.failures,
        "throughput": _finite(window.request_rate, 3),
        "error_rate": _finite(window.error_rate),
        "p50_ms": _finite(window.p50_ms, 3),
        "p95_ms": _finite(window.p95_ms, 3),
        "p99_ms": _finite(window.p99_ms, 3),
        "queue_depth": window.queue_depth,
        "mean_batch_size": _finite(window.mean_batch_size, 3),
        "batch_sizes": [{"le": label, "count": count} for label, count in window.batch_buckets],
    }


def _drift_document(result: DriftWindowResult, threshold: float) -> dict[str, Any]:
    return {
        "window": result.window,
        "rows": result.rows,
        "ended_ms": result.ended_ms,
        "max_psi": _finite(result.max_psi),
        "mean_psi": _finite(result.mean_psi),
        "prediction_psi": _finite(result.prediction_psi),
        "drifted": result.drifted,
        "threshold": threshold,
        "features": [
            {
                "feature": feature.feature,
                "psi": _finite(feature.psi),
                "ks_statistic": _finite(feature.ks_statistic),
                "ks_pvalue": _finite(feature.ks_pvalue, 6),
                # An infinite PSI (a bin empty in the reference) is drift too, though it is sent as null.
                "drifted": feature.psi > threshold,
            }
            for feature in result.features
        ],
    }


def _alerts_document(document: dict[str, Any]) -> dict[str, Any]:
    resolved = sorted(
        document.get("resolved", []),
        key=lambda alert: alert.get("resolved_ms") or alert.get("since_ms") or 0,
        reverse=True,
    )
    return {
        "firing": list(document.get("firing", [])),
        "pending": list(document.get("pending", [])),
        "resolved": resolved[:RESOLVED_ALERTS_SHOWN],
    }
