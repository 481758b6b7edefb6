"""Read-only operations views served beside the inference API: firing alerts (``GET /v2/alerts``) and the
live dashboard's data (``GET /v2/dashboard/summary``). Transports call these and send the JSON; nothing
here knows HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from modelserve.observability.drift_results import DriftReader
from modelserve.observability.monitor import Monitor

__all__ = ["AlertsReader", "Operations"]


class AlertsReader(Protocol):
    def document(self) -> dict[str, Any]:
        """``{"firing": [...], "pending": [...], "resolved": [...]}``, each alert a JSON object with
        name, model, metric, severity, state, value, threshold, since_ms (and resolved_ms once resolved)."""
        ...


@dataclass(frozen=True, slots=True)
class Operations:
    """What the operations views read: the windowed statistics, drift results and alert states."""

    monitor: Monitor
    drift: DriftReader
    alerts: AlertsReader
    dashboard_enabled: bool
    # The dashboard flags each feature whose PSI is above this (drift.psi_threshold): a window's result
    # only says whether *some* feature drifted.
    drift_psi_threshold: float = 0.2
