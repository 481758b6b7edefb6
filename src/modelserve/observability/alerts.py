"""The alert manager: every ``alerts.evaluation_interval_s`` it reads the rules' metrics (the monitor's
windows, the last drift windows), steps the rules' state machine (:mod:`alert_rules`), and for each
transition logs it, sets ``modelserve_alerts_firing`` and hands a notification to the webhook.

Evaluation never waits on the network: the webhook sends from its own queue (:mod:`webhook`). The
current states are served by ``GET /v2/alerts`` through :meth:`AlertManager.document`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge

from modelserve.config import AlertMetric, AlertSettings
from modelserve.core.clock import Clock
from modelserve.observability.alert_rules import Alert, AlertRules, AlertState, Reading, read_rule
from modelserve.observability.drift_results import DriftReader
from modelserve.observability.monitor import Monitor
from modelserve.observability.webhook import WebhookNotifier

__all__ = ["AlertManager"]

log = logging.getLogger("modelserve.alerts")


class AlertManager:
    """Evaluates the configured rules periodically (:meth:`run`) and answers ``GET /v2/alerts``.

    ``firing_gauge`` is ``modelserve_alerts_firing`` with labels alert, model, severity. ``notifier`` is
    None when no webhook is configured. Runs on the server's event loop; not thread-safe.
    """

    def __init__(
        self,
        settings: AlertSettings,
        monitor: Monitor,
        drift: DriftReader,
        clock: Clock,
        wall_ms: Callable[[], int],
        firing_gauge: Gauge,
        notifier: WebhookNotifier | None = None,
    ) -> None:
        self._settings = settings
        self._monitor = monitor
        self._drift = drift
        self._clock = clock
        self._wall_ms = wall_ms
        self._gauge = firing_gauge
        self._notifier = notifier
        self._rules = AlertRules(settings.rules, settings.history_size)

    def document(self) -> dict[str, Any]:
        """``{"firing": [...], "pending": [...], "resolved": [...]}``; firing and pending oldest first,
        resolved newest first (at most ``alerts.history_size``)."""
        return {
            "firing": [a.document() for a in self._rules.firing()],
            "pending": [a.document() for a in self._rules.pending()],
            "resolved": [a.document() for a in self._rules.resolved()],
        }

    def evaluate(self) -> list[Alert]:
        """One evaluation step now; returns the transitions (also logged, exported and notified)."""
        readings: list[Reading] = []
        drift = None
        for rule in self._rules.rules:
            if rule.metric is AlertMetric.DRIFT_PSI:
                drift = self._drift.latest() if drift is None else drift
                readings += read_rule(rule, [], drift)
            else:
                model = None if rule.model == "*" else rule.model
                readings += read_rule(rule, self._monitor.windows(rule.window_s, model), [])
        transitions = self._rules.evaluate(readings, self._clock.now_ns(), self._wall_ms())
        for alert in transitions:
            self._announce(alert)
        return transitions

    def _announce(self, alert: Alert) -> None:
        rule = alert.rule
        gauge = self._gauge.labels(alert=rule.name, model=alert.model, severity=rule.severity)
        if alert.state is AlertState.FIRING:
            gauge.set(1)
            log.warning("alert %s FIRING (%s): %s", rule.name, rule.severity, alert.summary)
        else:
            gauge.set(0)
            assert alert.resolved_ms is not None
            log.info(
                "alert %s resolved after %.1f s: %s",
                rule.name,
                (alert.resolved_ms - alert.since_ms) / 1000,
                alert.summary,
            )
        if self._notifier is not None:
            self._notifier.notify(alert.document())

    async def run(self) -> None:
        """Evaluate every ``evaluation_interval_s`` and deliver notifications, until cancelled.

        Returns at once when there are no rules. Each evaluation is its own exception boundary: a failure
        is logged and the next evaluation runs as usual.
        """
        if not self._rules.rules:
            return
        for rule in self._rules.rules:
            if rule.model != "*":  # a known series reads 0 before it ever fires ('*' models are not known yet)
                self._gauge.labels(alert=rule.name, model=rule.model, severity=rule.severity).set(0)
        notifier = self._notifier
        if notifier is None:
            await self._evaluate_forever()
            return
        notifier.start()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(notifier.deliver())
                group.create_task(self._evaluate_forever())
        finally:
            notifier.stop()

    async def _evaluate_forever(self) -> None:
        interval_s = self._settings.evaluation_interval_s
        while True:
            try:
                self.evaluate()
            except Exception:
                log.exception("alert evaluation failed; trying again in %g s", interval_s)
            await asyncio.sleep(interval_s)
