"""The alert state machine, driven by an injected clock: pending -> firing after for_s, resolution into a
bounded history, no data never fires, and readings from monitor windows and drift results."""

from __future__ import annotations

import math

import pytest

from modelserve.config import AlertMetric, AlertRule
from modelserve.observability.alert_rules import AlertRules, AlertState, Reading, read_rule
from modelserve.observability.drift_results import DriftWindowResult
from modelserve.observability.monitor import VersionWindow

S = 1_000_000_000  # ns per second


def rule(**fields: object) -> AlertRule:
    defaults: dict[str, object] = {"name": "errors", "metric": "error_rate", "threshold": 0.2}
    return AlertRule.model_validate(defaults | fields)


def reading(r: AlertRule, value: float | None, model: str = "iris", version: str = "1") -> Reading:
    return Reading(r, model, version, value)


def window(
    model: str = "iris",
    version: str = "1",
    *,
    requests: int = 10,
    failures: int = 0,
    p99_ms: float = 5.0,
    queue_depth: int = 0,
) -> VersionWindow:
    return VersionWindow(
        model=model,
        version=version,
        seconds=10.0,
        requests=requests,
        failures=failures,
        request_rate=requests / 10.0,
        error_rate=failures / requests if requests else 0.0,
        p50_ms=p99_ms / 2 if requests else math.nan,
        p95_ms=p99_ms if requests else math.nan,
        p99_ms=p99_ms if requests else math.nan,
        mean_batch_size=1.0,
        batch_buckets=(),
        queue_depth=queue_depth,
    )


def drift_result(model: str, version: str, max_psi: float) -> DriftWindowResult:
    return DriftWindowResult(model, version, 3, 1000, 0, (), max_psi, max_psi / 2, None, max_psi > 0.2)


def test_for_s_keeps_an_alert_pending_until_the_condition_has_held_that_long() -> None:
    r = rule(for_s=10)
    rules = AlertRules([r], history_size=10)
    assert rules.evaluate([reading(r, 0.5)], now_ns=100 * S, wall_ms=1_000) == []
    [pending] = rules.pending()
    assert pending.state is AlertState.PENDING and pending.since_ms == 1_000 and pending.value == 0.5
    assert rules.evaluate([reading(r, 0.6)], now_ns=109 * S + S // 2, wall_ms=10_500) == []
    assert rules.firing() == [] and rules.pending()[0].value == 0.6
    [fired] = rules.evaluate([reading(r, 0.7)], now_ns=110 * S, wall_ms=11_000)
    assert fired.state is AlertState.FIRING and fired.since_ms == 11_000 and fired.value == 0.7
    assert rules.pending() == [] and rules.firing() == [fired]
    # Firing is reported once, not at every evaluation while it holds.
    assert rules.evaluate([reading(r, 0.8)], now_ns=111 * S, wall_ms=12_000) == []
    assert rules.firing()[0].value == 0.8


def test_for_s_zero_fires_at_the_first_evaluation_that_holds() -> None:
    r = rule()
    rules = AlertRules([r], history_size=10)
    [fired] = rules.evaluate([reading(r, 0.21)], now_ns=0, wall_ms=5)
    assert fired.state is AlertState.FIRING and fired.since_ms == 5


def test_the_condition_is_strictly_greater_than() -> None:
    r = rule()
    rules = AlertRules([r], history_size=10)
    assert rules.evaluate([reading(r, 0.2)], now_ns=0, wall_ms=0) == []
    assert rules.pending() == [] and rules.firing() == []


def test_pending_that_stops_holding_goes_back_to_inactive_silently() -> None:
    r = rule(for_s=5)
    rules = AlertRules([r], history_size=10)
    rules.evaluate([reading(r, 0.5)], now_ns=0, wall_ms=0)
    assert rules.evaluate([reading(r, 0.1)], now_ns=4 * S, wall_ms=4_000) == []
    assert rules.pending() == [] and rules.resolved() == []
    # Holding again restarts the for_s count from scratch.
    rules.evaluate([reading(r, 0.5)], now_ns=5 * S, wall_ms=5_000)
    assert rules.evaluate([reading(r, 0.5)], now_ns=9 * S, wall_ms=9_000) == []
    assert [a.state for a in rules.evaluate([reading(r, 0.5)], now_ns=10 * S, wall_ms=10_000)] == [AlertState.FIRING]


def test_firing_resolves_into_a_bounded_history_newest_first() -> None:
    r = rule()
    rules = AlertRules([r], history_size=2)
    for cycle in range(3):
        t = cycle * 10
        rules.evaluate([reading(r, 0.9)], now_ns=t * S, wall_ms=t * 1000)
        [done] = rules.evaluate([reading(r, 0.05)], now_ns=(t + 1) * S, wall_ms=(t + 1) * 1000)
        assert done.state is AlertState.RESOLVED
        assert done.since_ms == t * 1000 and done.resolved_ms == (t + 1) * 1000 and done.value == 0.05
    assert [a.since_ms for a in rules.resolved()] == [20_000, 10_000]
    assert rules.firing() == []


def test_missing_data_never_fires_and_resolves_what_fired() -> None:
    r = rule(metric="p99_latency_ms", threshold=100)
    rules = AlertRules([r], history_size=10)
    assert rules.evaluate([reading(r, None)], now_ns=0, wall_ms=0) == []
    rules.evaluate([reading(r, 250.0)], now_ns=S, wall_ms=1_000)
    # The model disappears (unloaded): no reading at all resolves the alert, with no value.
    [done] = rules.evaluate([], now_ns=2 * S, wall_ms=2_000)
    assert done.state is AlertState.RESOLVED and done.value is None and done.model == "iris"


def test_each_model_has_its_own_state() -> None:
    r = rule()
    rules = AlertRules([r], history_size=10)
    fired = rules.evaluate([reading(r, 0.5, "a"), reading(r, 0.1, "b"), reading(r, 0.9, "c")], now_ns=0, wall_ms=0)
    assert sorted(a.model for a in fired) == ["a", "c"]
    [done] = rules.evaluate([reading(r, 0.0, "a"), reading(r, 0.9, "c")], now_ns=S, wall_ms=1_000)
    assert done.model == "a" and [a.model for a in rules.firing()] == ["c"]


def test_transitions_list_firing_before_resolved() -> None:
    errors, slow = rule(), rule(name="slow", metric="p99_latency_ms", threshold=100)
    rules = AlertRules([errors, slow], history_size=10)
    rules.evaluate([reading(errors, 0.5)], now_ns=0, wall_ms=0)
    step = rules.evaluate([reading(errors, 0.0), reading(slow, 300.0)], now_ns=S, wall_ms=1_000)
    assert [(a.rule.name, a.state) for a in step] == [("slow", AlertState.FIRING), ("errors", AlertState.RESOLVED)]


def test_document_has_the_documented_fields() -> None:
    r = rule(severity="critical", window_s=30)
    rules = AlertRules([r], history_size=10)
    [fired] = rules.evaluate([reading(r, 0.75)], now_ns=0, wall_ms=42)
    document = fired.document()
    assert {k: document[k] for k in ("name", "model", "version", "metric", "severity", "state")} == {
        "name": "errors",
        "model": "iris",
        "version": "1",
        "metric": "error_rate",
        "severity": "critical",
        "state": "firing",
    }
    assert document["value"] == 0.75 and document["threshold"] == 0.2 and document["since_ms"] == 42
    assert "resolved_ms" not in document
    assert document["summary"] == "error_rate of model iris version 1 is 0.75 over 30 s (alert when > 0.2)"
    [done] = rules.evaluate([], now_ns=S, wall_ms=1_042)
    assert done.document()["resolved_ms"] == 1_042 and done.document()["state"] == "resolved"


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("error_rate", 0.5),
        ("p99_latency_ms", 80.0),
        ("request_rate", 2.0),
        ("queue_depth", 7.0),
    ],
)
def test_a_model_reads_as_its_worst_version(metric: str, expected: float) -> None:
    r = rule(metric=metric, threshold=0)
    windows = [
        window("iris", "1", requests=10, failures=1, p99_ms=80.0, queue_depth=7),
        window("iris", "2", requests=20, failures=10, p99_ms=20.0, queue_depth=1),
    ]
    [only] = read_rule(r, windows, [])
    assert only.value == expected and only.model == "iris"


def test_a_window_without_requests_has_no_latency_or_error_rate() -> None:
    idle = [window(requests=0)]
    assert read_rule(rule(metric="p99_latency_ms", threshold=0), idle, [])[0].value is None
    assert read_rule(rule(metric="error_rate", threshold=-1), idle, [])[0].value is None
    assert read_rule(rule(metric="request_rate", threshold=0), idle, [])[0].value == 0.0
    # A busy version beats an idle one; the idle one's NaN never wins or poisons the comparison.
    mixed = [window("iris", "1", requests=0), window("iris", "2", p99_ms=9.0)]
    [worst] = read_rule(rule(metric="p99_latency_ms", threshold=0), mixed, [])
    assert worst.value == 9.0 and worst.version == "2"


def test_star_reads_each_model_and_a_named_rule_only_its_model() -> None:
    windows = [window("a", failures=5), window("b", failures=1), window("c")]
    assert [r.model for r in read_rule(rule(), windows, [])] == ["a", "b", "c"]
    assert [r.model for r in read_rule(rule(model="b"), windows, [])] == ["b"]
    assert read_rule(rule(model="nope"), windows, []) == []


def test_drift_reads_the_largest_feature_psi_of_the_last_window() -> None:
    r = rule(name="drift", metric="drift_psi", threshold=0.2)
    results = [drift_result("iris", "1", 0.05), drift_result("iris", "2", 0.4), drift_result("digits", "1", math.nan)]
    readings = {x.model: x for x in read_rule(r, [window()], results)}
    assert readings["iris"].value == 0.4 and readings["iris"].version == "2"
    assert readings["digits"].value is None
    assert r.metric is AlertMetric.DRIFT_PSI
