"""deploy/prometheus: the alerting rules and the example config pass promtool, the rules' unit tests pass,
and both the rules and their test series use exactly the names, labels and bucket bounds the server exports."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelserve.observability.statistics import LATENCY_BUCKETS_S
from tests.deploy.promql import (
    ALERT_RULES,
    ALERT_TESTS,
    OPTIONAL_PREFIXES,
    PROMETHEUS_CONFIG,
    exported_names,
    metric_names,
    unknown_names,
    wire_samples,
)

PROMTOOL = Path("/usr/bin/promtool")
needs_promtool = pytest.mark.skipif(
    not PROMTOOL.exists(),
    reason="/usr/bin/promtool is missing: `make system-deps` (run by `make unit`) installs Debian's prometheus package",
)

ALERTS = {
    "ModelserveHighP99Latency",
    "ModelserveHighErrorRate",
    "ModelserveQueueBacklog",
    "ModelserveInputDrift",
    "ModelservePredictionLogDropping",
}


def promtool(*args: str) -> str:
    result = subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} exited {result.returncode}:\n{output}"
    return output


def alert_rules() -> list[dict[str, Any]]:
    (group,) = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    assert group["name"] == "modelserve"
    return list(group["rules"])


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", str(ALERT_RULES))
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        for text in rule["annotations"].values():
            assert "{{ $labels.model }}" in text, f"{rule['alert']}: annotations must name the model"


@needs_promtool
def test_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(ALERT_TESTS))
    # Every alert has an evaluation where it fires and one where it stays quiet.
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == ALERTS
    assert quiet == ALERTS


@needs_promtool
def test_example_prometheus_config_passes_promtool_check() -> None:
    output = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert "SUCCESS: 1 rule files found" in output
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8000"]  # the default REST port


def test_rules_name_only_exported_families(examples_exposition: str) -> None:
    exported = exported_names(examples_exposition)
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert not unknown_names(names, exported), f"{rule['alert']} names series the server does not export"


_SERIES = re.compile(r"^([A-Za-z_:][\w:]*)\{(.*)\}$")


def test_rule_tests_use_the_exported_format(examples_exposition: str) -> None:
    """The promtool test series have the names, label names and bucket bounds of the server's own series."""
    server_labels: dict[str, set[frozenset[str]]] = defaultdict(set)
    server_bounds: dict[str, list[str]] = {}
    for name, labels, _ in wire_samples(examples_exposition):
        server_labels[name].add(frozenset(labels))
        if name.endswith("_bucket") and labels.get("model") == "iris":
            server_bounds.setdefault(name, []).append(labels["le"])
    expected_bounds = [repr(float(b)) for b in LATENCY_BUCKETS_S] + ["+Inf"]
    assert server_bounds["modelserve_request_duration_seconds_bucket"] == expected_bounds

    exported = exported_names(examples_exposition)
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        bounds: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        for series in case["input_series"]:
            match = _SERIES.match(series["series"])
            assert match, series["series"]
            name, labels = match.group(1), dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            if name in server_labels:
                assert frozenset(labels) in server_labels[name], f"{series['series']}: not the server's label names"
            else:  # declared with no sample yet (drift, alerts), or optional (see OPTIONAL_PREFIXES)
                assert name in exported or name.startswith(OPTIONAL_PREFIXES), (
                    f"{name}: the server exports no such series"
                )
            if name.endswith("_bucket"):
                bounds[(name, labels["model"], labels["version"])].append(labels["le"])
        for (name, model, _), les in bounds.items():
            assert les == server_bounds[name], f"{case['name']}: {name} for {model} has other bucket bounds"
