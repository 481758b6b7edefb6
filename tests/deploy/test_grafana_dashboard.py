"""deploy/grafana/modelserve-dashboard.json: importable JSON with a Prometheus datasource variable and a model
variable, the panels the operations guide promises, PromQL that Prometheus parses, and only series the
server exports."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import (
    dashboard_queries,
    expand_macros,
    exported_names,
    load_dashboard,
    metric_names,
    unknown_names,
)

PROMTOOL = Path("/usr/bin/promtool")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# What each required panel queries (a fragment of its PromQL).
REQUIRED_QUERIES = {
    "request rate": "rate(nv_inference_request_success{",
    "error rate by reason": "sum by (model, reason) (rate(nv_inference_request_failure{",
    "p50 latency": "histogram_quantile(0.5, sum by (model, le) (rate(modelserve_request_duration_seconds_bucket{",
    "p95 latency": "histogram_quantile(0.95, sum by (model, le) (rate(modelserve_request_duration_seconds_bucket{",
    "p99 latency": "histogram_quantile(0.99, sum by (model, le) (rate(modelserve_request_duration_seconds_bucket{",
    "queue time p99": "histogram_quantile(0.99, sum by (model, le) (rate(modelserve_queue_duration_seconds_bucket{",
    "Triton's Helm autoscaling rule": (
        "avg(delta(nv_inference_queue_duration_us[30s]) / (1 + delta(nv_inference_request_success[30s])))"
    ),
    "queue depth": "nv_inference_pending_request_count{",
    "average batch size": "rate(nv_inference_exec_count{",
    "batch size histogram": "modelserve_batch_size_bucket{",
    "drift PSI": "modelserve_drift_psi{",
    "prediction-log drops": 'modelserve_prediction_log_records_total{outcome="dropped"',
    "firing alerts": "modelserve_alerts_firing",
    "CPU": "nv_cpu_utilization",
    "memory": "nv_cpu_memory_used_bytes",
    "model load duration": "nv_model_load_duration_secs{",
}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for panel in dashboard["panels"]:
        flat.append(panel)
        flat.extend(panel.get("panels", []))
    return flat


def test_dashboard_is_importable_json() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "modelserve" and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query" and model["datasource"] == DATASOURCE
    assert model["definition"] == "label_values(nv_inference_request_success, model)"
    assert model["includeAll"] and model["multi"] and model["allValue"] == ".*"

    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]

    queries = [expr for _, expr in dashboard_queries(dashboard)]
    for what, fragment in REQUIRED_QUERIES.items():
        assert any(fragment in expr for expr in queries), f"no panel shows {what} ({fragment})"


@pytest.mark.skipif(
    not PROMTOOL.exists(),
    reason="/usr/bin/promtool is missing: `make system-deps` (run by `make unit`) installs Debian's prometheus package",
)
def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses every query (as a recording rule), Grafana's macros replaced by literal values."""
    queries = list(dashboard_queries(load_dashboard()))
    rules = [{"record": f"dashboard:query_{i}", "expr": expand_macros(expr)} for i, (_, expr) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool rejects a dashboard query:\n{result.stdout}{result.stderr}"
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_dashboard_names_only_exported_families(examples_exposition: str) -> None:
    exported = exported_names(examples_exposition)
    for where, expr in dashboard_queries(load_dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = unknown_names(names, exported)
        assert not unknown, f"{where} names {sorted(unknown)}, which the server does not export"
