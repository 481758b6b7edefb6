"""Alert rules as a pure, clock-driven state machine: given each rule's readings and "now", which alerts
are pending, firing or resolved. No I/O, no sleeping, no clock of its own; :mod:`alerts` feeds it.

One state machine per (rule, model)::

    inactive --condition true--> pending --held for_s--> firing --condition false--> resolved (history)
       ^                            |        (for_s = 0: straight to firing)
       +------condition false-------+

The condition is ``value > threshold``. A reading with no value (a window without requests has no
latency quantile or error rate, a model without a drift profile has no PSI, an unloaded model has nothing)
makes the condition false: missing data resolves an alert rather than firing one, as Prometheus' ``for``
semantics do when a series disappears. Leaving pending without firing is silent (no notification, no
history); only firing and resolved are transitions worth telling anyone about.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from modelserve.config import AlertMetric, AlertRule
from modelserve.observability.drift_results import DriftWindowResult
from modelserve.observability.monitor import VersionWindow

__all__ = ["Alert", "AlertRules", "AlertState", "Reading", "read_rule"]


class AlertState(enum.StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Reading:
    """A rule's metric for one model now. ``version`` is the worst version ("" when there is no data);
    ``value`` is None when there is nothing to compare (never NaN)."""

    rule: AlertRule
    model: str
    version: str
    value: float | None


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as ``GET /v2/alerts`` and the webhook show it. Times are wall-clock epoch milliseconds:
    ``since_ms`` is when the current state began (pending: the condition started to hold; firing and
    resolved: when it fired); ``resolved_ms`` is set once resolved. ``value`` is the latest reading (for a
    resolved alert, the one that resolved it; None when the data went away)."""

    rule: AlertRule
    model: str
    version: str
    state: AlertState
    value: float | None
    since_ms: int
    resolved_ms: int | None = None

    @property
    def summary(self) -> str:
        rule = self.rule
        where = f"model {self.model}" + (f" version {self.version}" if self.version else "")
        shown = "no data" if self.value is None else f"{self.value:.4g}"
        span = "" if rule.metric in (AlertMetric.QUEUE_DEPTH, AlertMetric.DRIFT_PSI) else f" over {rule.window_s:g} s"
        return f"{rule.metric.value} of {where} is {shown}{span} (alert when > {rule.threshold:g})"

    def document(self) -> dict[str, Any]:
        """The JSON object served by ``GET /v2/alerts`` and POSTed to the webhook."""
        rule = self.rule
        document: dict[str, Any] = {
            "name": rule.name,
            "model": self.model,
            "version": self.version,
            "metric": rule.metric.value,
            "severity": rule.severity,
            "state": self.state.value,
            "value": self.value,
            "threshold": rule.threshold,
            "window_s": rule.window_s,
            "for_s": rule.for_s,
            "since_ms": self.since_ms,
            "summary": self.summary,
        }
        if self.resolved_ms is not None:
            document["resolved_ms"] = self.resolved_ms
        return document


def _window_value(metric: AlertMetric, window: VersionWindow) -> float | None:
    if metric is AlertMetric.REQUEST_RATE:
        return window.request_rate
    if metric is AlertMetric.QUEUE_DEPTH:
        return float(window.queue_depth)
    if window.requests == 0:
        return None  # no requests, no error rate and no latency: the monitor's 0.0 / NaN would mislead
    value = {
        AlertMetric.ERROR_RATE: window.error_rate,
        AlertMetric.P50_LATENCY_MS: window.p50_ms,
        AlertMetric.P95_LATENCY_MS: window.p95_ms,
        AlertMetric.P99_LATENCY_MS: window.p99_ms,
    }[metric]
    return None if math.isnan(value) else value


def read_rule(rule: AlertRule, windows: Sequence[VersionWindow], drift: Sequence[DriftWindowResult]) -> list[Reading]:
    """The rule's reading for each model it watches, from the monitor's windows over ``rule.window_s`` and
    the last completed drift windows. A model with several versions reads as its worst version (the
    highest value: every condition is ``value > threshold``). Models not in the input get no reading."""
    per_version: list[tuple[str, str, float | None]]
    if rule.metric is AlertMetric.DRIFT_PSI:
        per_version = [(d.model, d.version, None if math.isnan(d.max_psi) else d.max_psi) for d in drift]
    else:
        per_version = [(w.model, w.version, _window_value(rule.metric, w)) for w in windows]
    worst: dict[str, Reading] = {}
    for model, version, value in per_version:
        if rule.model not in ("*", model):
            continue
        current = worst.get(model)
        if current is None or (value is not None and (current.value is None or value > current.value)):
            worst[model] = Reading(rule, model, version if value is not None else "", value)
    return [worst[model] for model in sorted(worst)]


@dataclass(slots=True)
class _Active:
    alert: Alert
    holding_since_ns: int  # monotonic: when the condition began to hold (for_s counts from here)


class AlertRules:
    """The states of every (rule, model). Not thread-safe: one task evaluates, readers run on its loop."""

    def __init__(self, rules: Sequence[AlertRule], history_size: int) -> None:
        self.rules = tuple(rules)
        self._active: dict[tuple[str, str], _Active] = {}
        self._resolved: deque[Alert] = deque(maxlen=history_size)

    def evaluate(self, readings: Iterable[Reading], now_ns: int, wall_ms: int) -> list[Alert]:
        """Advance every state machine to ``now_ns`` (monotonic, for ``for_s``) and return the alerts that
        began firing or resolved in this step, in that order. ``wall_ms`` stamps them for people.
        An active (rule, model) with no reading in ``readings`` reads as no data."""
        seen: dict[tuple[str, str], Reading] = {(r.rule.name, r.model): r for r in readings}
        for key, active in self._active.items():
            seen.setdefault(key, Reading(active.alert.rule, key[1], "", None))
        fired: list[Alert] = []
        resolved: list[Alert] = []
        for key, reading in seen.items():
            transition = self._step(key, reading, now_ns, wall_ms)
            if transition is not None:
                (fired if transition.state is AlertState.FIRING else resolved).append(transition)
        return fired + resolved

    def _step(self, key: tuple[str, str], reading: Reading, now_ns: int, wall_ms: int) -> Alert | None:
        rule = reading.rule
        holds = reading.value is not None and reading.value > rule.threshold
        active = self._active.get(key)
        if not holds:
            if active is None:
                return None
            del self._active[key]
            if active.alert.state is AlertState.PENDING:
                return None  # never fired: nothing to tell anyone
            done = replace(active.alert, state=AlertState.RESOLVED, value=reading.value, resolved_ms=wall_ms)
            self._resolved.append(done)
            return done
        version = reading.version
        if active is None:
            active = _Active(Alert(rule, reading.model, version, AlertState.PENDING, reading.value, wall_ms), now_ns)
            self._active[key] = active
        else:
            active.alert = replace(active.alert, value=reading.value, version=version)
        if active.alert.state is AlertState.PENDING and now_ns - active.holding_since_ns >= rule.for_s * 1e9:
            active.alert = replace(active.alert, state=AlertState.FIRING, since_ms=wall_ms)
            return active.alert
        return None

    def firing(self) -> list[Alert]:
        return self._by_state(AlertState.FIRING)

    def pending(self) -> list[Alert]:
        return self._by_state(AlertState.PENDING)

    def resolved(self) -> list[Alert]:
        """Resolved alerts, newest first, at most ``history_size``."""
        return list(reversed(self._resolved))

    def _by_state(self, state: AlertState) -> list[Alert]:
        alerts = [a.alert for a in self._active.values() if a.alert.state is state]
        return sorted(alerts, key=lambda a: (a.since_ms, a.rule.name, a.model))
