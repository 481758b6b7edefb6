"""The alert manager in process: real statistics, the real monitor and rules, a manual clock and a fake wall
clock, no webhook. Traffic is recorded between ticks; each tick advances the clock, samples the monitor and
evaluates once, so every state change happens at a known instant (the pure state machine itself is in
``test_alert_rules.py``; ``test_alerts.py`` keeps the end-to-end smoke test through a server)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from modelserve.config import AlertSettings
from modelserve.observability.alert_rules import Alert, AlertState
from modelserve.observability.alerts import AlertManager
from modelserve.observability.drift import DriftMonitor
from modelserve.observability.monitor import Monitor
from modelserve.observability.statistics import ModelVersionStatistics
from tests.fakes import ManualClock

MS = 1_000_000  # ns
EPOCH_MS = 1_700_000_000_000  # the fake wall clock's reading when the test starts


class Rig:
    """One model version served, monitored and alerted on, with time in the test's hands."""

    def __init__(self, rules: list[dict[str, Any]], **settings: Any) -> None:
        self.clock = ManualClock(start_ns=7 * 3600 * 1_000 * MS)
        self.started_ns = self.clock.now_ns()
        self.flaky = ModelVersionStatistics("flaky", "1")
        self.monitor = Monitor(lambda: [(self.flaky, 0)], self.clock, horizon_s=60)
        self.registry = CollectorRegistry()
        gauge = Gauge("modelserve_alerts_firing", "test", ["alert", "model", "severity"], registry=self.registry)
        drift = DriftMonitor(
            Path("unused"), enabled=False, window_rows=10, psi_threshold=0.2, sample_rate=1.0, queue_size=1
        )
        self.manager = AlertManager(
            AlertSettings.model_validate({"rules": rules, **settings}),
            self.monitor,
            drift,
            self.clock,
            self.wall_ms,
            gauge,
            notifier=None,
        )
        self.monitor.sample()

    def wall_ms(self) -> int:
        return EPOCH_MS + (self.clock.now_ns() - self.started_ns) // MS

    def tick(self, *, ok: int = 0, failed: int = 0, latency_ms: float = 1.0, seconds: float = 1.0) -> list[Alert]:
        """``ok`` and ``failed`` requests served over the next ``seconds``; then a sample and an evaluation."""
        for _ in range(ok):
            self.flaky.record_request(succeeded=True, total_ns=round(latency_ms * MS))
        for _ in range(failed):
            self.flaky.record_request(succeeded=False, total_ns=MS, failure_reason="BACKEND", failure_cause="model")
        self.clock.advance(seconds)
        self.monitor.sample()
        return self.manager.evaluate()

    def at_ms(self, seconds: float) -> int:
        """The fake wall clock's reading ``seconds`` after the start."""
        return EPOCH_MS + round(seconds * 1000)

    def firing_gauge(self, alert: str, severity: str = "warning") -> float | None:
        labels = {"alert": alert, "model": "flaky", "severity": severity}
        return self.registry.get_sample_value("modelserve_alerts_firing", labels)

    def states(self) -> dict[str, list[str]]:
        return {state: [a["name"] for a in alerts] for state, alerts in self.manager.document().items()}


ERRORS = {"name": "Errors", "metric": "error_rate", "threshold": 0.2, "window_s": 2, "for_s": 2, "severity": "page"}


def test_pending_fires_after_for_s_and_resolves_when_the_window_clears(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelserve.alerts")
    rig = Rig([ERRORS])
    assert rig.tick(ok=5, failed=5) == []  # t=1: error rate 0.5 > 0.2, pending from now
    assert rig.states() == {"firing": [], "pending": ["Errors"], "resolved": []}
    [pending] = rig.manager.document()["pending"]
    assert pending["since_ms"] == rig.at_ms(1) and pending["value"] == 0.5 and pending["version"] == "1"
    assert rig.firing_gauge("Errors", "page") is None  # pending is silent: not exported as firing
    assert rig.tick(ok=5, failed=5) == []  # t=2: held 1 s of for_s 2 s
    [fired] = rig.tick(ok=5, failed=5)  # t=3: held 2 s
    assert fired.state is AlertState.FIRING and fired.since_ms == rig.at_ms(3)
    assert rig.states() == {"firing": ["Errors"], "pending": [], "resolved": []}
    assert rig.firing_gauge("Errors", "page") == 1
    # Good traffic only: the 2 s window still holds t=2..3's failures at t=4 (5 of 20), and none at t=5.
    assert rig.tick(ok=10) == []
    assert rig.manager.document()["firing"][0]["value"] == 0.25
    [resolved] = rig.tick(ok=10)
    assert resolved.state is AlertState.RESOLVED
    assert resolved.since_ms == rig.at_ms(3) and resolved.resolved_ms == rig.at_ms(5) and resolved.value == 0.0
    assert rig.states() == {"firing": [], "pending": [], "resolved": ["Errors"]}
    assert rig.firing_gauge("Errors", "page") == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "modelserve.alerts"]
    assert messages == [
        "alert Errors FIRING (page): error_rate of model flaky version 1 is 0.5 over 2 s (alert when > 0.2)",
        "alert Errors resolved after 2.0 s: error_rate of model flaky version 1 is 0 over 2 s (alert when > 0.2)",
    ]


def test_pending_that_clears_before_for_s_goes_away_silently() -> None:
    rig = Rig([ERRORS])
    rig.tick(ok=5, failed=5)
    rig.tick(ok=5, failed=5)
    assert rig.states()["pending"] == ["Errors"]
    assert rig.tick(ok=40) == []  # t=3: window t=1..3 holds 5 failures in 50 requests, 0.1
    assert rig.states() == {"firing": [], "pending": [], "resolved": []}
    assert rig.firing_gauge("Errors", "page") is None
    # Holding again starts for_s afresh: pending at t=4 (20 failures in 60), firing two seconds later.
    assert rig.tick(failed=20) == []
    assert rig.states()["pending"] == ["Errors"]
    assert rig.tick(failed=20) == []
    [fired] = rig.tick(failed=20)
    assert fired.since_ms == rig.at_ms(6)


def test_no_traffic_in_the_window_resolves_rather_than_fires() -> None:
    rig = Rig([{**ERRORS, "for_s": 0}])
    [fired] = rig.tick(failed=3)
    assert fired.state is AlertState.FIRING and fired.since_ms == rig.at_ms(1)
    assert rig.tick() == []  # t=2: the window t=0..2 still holds the failures
    [resolved] = rig.tick()  # t=3: no requests at all in the window: no error rate, no alert
    assert resolved.state is AlertState.RESOLVED and resolved.value is None
    assert rig.tick(seconds=30) == []  # silence stays resolved, and nothing new fires


def test_p99_latency_alert_reads_the_latency_histogram_of_its_window() -> None:
    slow = {"name": "SlowP99", "metric": "p99_latency_ms", "threshold": 100, "window_s": 5, "for_s": 0.3}
    rig = Rig([slow])
    assert rig.tick(ok=3, latency_ms=1.0) == []
    assert rig.tick(ok=3, latency_ms=250.0, seconds=0.2) == []  # pending from t=1.2
    assert rig.states()["pending"] == ["SlowP99"]
    assert rig.tick(seconds=0.2) == []  # t=1.4: held 0.2 s of 0.3 s
    [fired] = rig.tick(seconds=0.1)  # t=1.5: held for_s
    assert fired.since_ms == rig.at_ms(1.5)
    # Three 1 ms and three 250 ms requests: p99's rank 5.94 lies in the (100 ms, 250 ms] bucket.
    assert fired.value == pytest.approx(100 + 150 * (0.99 * 6 - 3) / 3)
    assert rig.firing_gauge("SlowP99") == 1


def test_resolved_history_is_bounded_by_history_size_newest_first() -> None:
    rig = Rig([{**ERRORS, "for_s": 0, "window_s": 1}], history_size=2)
    for _ in range(3):
        [fired] = rig.tick(failed=5)
        [resolved] = rig.tick(ok=5)
        assert resolved.since_ms == fired.since_ms
    history = rig.manager.document()["resolved"]
    assert [a["since_ms"] for a in history] == [rig.at_ms(5), rig.at_ms(3)]
    assert all(a["state"] == "resolved" and a["resolved_ms"] == a["since_ms"] + 1000 for a in history)


def test_run_without_a_webhook_evaluates_at_once_and_exports_named_series() -> None:
    rig = Rig([{**ERRORS, "for_s": 0, "model": "flaky"}, {**ERRORS, "name": "Quiet", "model": "flaky"}])
    rig.flaky.record_request(succeeded=False, total_ns=MS)
    rig.clock.advance(1)
    rig.monitor.sample()

    async def first_evaluation() -> None:
        task = asyncio.create_task(rig.manager.run())
        await asyncio.sleep(0)  # one turn of the loop: run() goes as far as its first wait, after evaluating
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(first_evaluation())
    assert rig.states() == {"firing": ["Errors"], "pending": ["Quiet"], "resolved": []}
    assert rig.firing_gauge("Errors", "page") == 1
    assert rig.firing_gauge("Quiet", "page") == 0  # a named model's series reads 0 before it ever fires


def test_run_without_rules_returns_at_once() -> None:
    rig = Rig([])
    asyncio.run(rig.manager.run())
    assert rig.manager.evaluate() == []
    assert rig.states() == {"firing": [], "pending": [], "resolved": []}
