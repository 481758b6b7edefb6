"""What the deploy/ files query and what the server exports, as sets of metric names.

A PromQL expression names a series by its stored name (``nv_inference_request_success``,
``modelserve_request_duration_seconds_bucket``); the exposition text declares families (``# TYPE``). Both
sides are reduced to the names Prometheus stores, so a dashboard or rule that names a series the server does
not export (a typo, a ``_total`` Triton's counters do not have) is caught.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "modelserve-dashboard.json"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERT_RULES = PROMETHEUS_DIR / "modelserve-alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "modelserve-alerts.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"

# Families the deploy/ files may name although a server with default settings does not export them:
# drift gauges need a reference profile, the prediction log is opt-in, and alert gauges need configured rules
# (and all three are being built beside this). ALERTS is Prometheus' own series for the rules it evaluates.
OPTIONAL_PREFIXES = ("modelserve_drift_", "modelserve_prediction_log_", "modelserve_alerts_")
PROMETHEUS_OWN = frozenset({"ALERTS", "ALERTS_FOR_STATE"})

_KEYWORDS = frozenset(
    {
        # aggregation operators (may be followed by `by (...)` before their parenthesis)
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
        "count_values",
        # binary operators, modifiers and literals
        "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
        "inf", "nan",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'" + r"|`[^`]*`")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w$.])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_SAMPLE_NAME = re.compile(r"[A-Za-z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (strings, label matchers, ranges and label lists removed)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def exported_names(exposition: str) -> set[str]:
    """Series names Prometheus stores from this exposition text, declared families included even when they
    have no sample yet. prometheus_client's parser reports every counter as ``<name>_total``; Prometheus keeps
    the name on the wire, so a counter's stored name is taken from its ``# TYPE`` line."""
    declared = {m.group(1): m.group(2) for m in re.finditer(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE)}
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        elif family.type == "counter":
            names.add(family.name + "_total" if f"{family.name}_total" in declared else family.name)
        else:
            names.add(family.name)
    on_the_wire = {
        match.group()
        for line in exposition.splitlines()
        if line and not line.startswith("#") and (match := _SAMPLE_NAME.match(line))
    }
    missing = on_the_wire - names - {n for n in on_the_wire if n.endswith("_created")}
    assert not missing, f"samples whose family the parser did not report: {sorted(missing)}"
    return names


def unknown_names(names: set[str], exported: set[str]) -> set[str]:
    """Names neither exported nor allowed as optional or Prometheus' own."""
    return {n for n in names - exported - PROMETHEUS_OWN if not n.startswith(OPTIONAL_PREFIXES)}


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, nested rows included, and every query variable (the series
    selector of its ``label_values()``)."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield f"variable {variable['name']!r}", label_values_selector(text)


def label_values_selector(query: str) -> str:
    """The series selector inside Grafana's ``label_values(<selector>, <label>)``."""
    match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
    assert match, f"not a label_values() query: {query}"
    return match.group(1)


def expand_macros(expr: str, rate_interval: str = "1m") -> str:
    """Grafana's macros and this dashboard's variables replaced by values Prometheus accepts (all models)."""
    values = {"$__rate_interval": rate_interval, "$__interval": "15s", "$__range": "1h", "$model": ".*"}
    for macro, value in values.items():
        expr = expr.replace(macro, value)
    return expr


_SAMPLE_LINE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def wire_samples(exposition: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line, exactly as written (no renaming)."""
    samples = []
    for line in exposition.splitlines():
        match = _SAMPLE_LINE.match(line)
        if match and not line.startswith("#"):
            name, labels, value = match.groups()
            samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples
