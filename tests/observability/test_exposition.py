"""Merging several workers' ``/metrics`` texts (``observability/exposition.py``): counters and histograms
summed series by series under their exact names, additive gauges summed, other gauges kept per worker."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from modelserve.observability.exposition import merge_expositions

WORKER_TEXT = """# HELP nv_inference_request_success Successful requests.
# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="iris",version="1"}} {success}
# HELP modelserve_rejection_duration_seconds Refusals.
# TYPE modelserve_rejection_duration_seconds histogram
modelserve_rejection_duration_seconds_bucket{{transport="http",le="0.001"}} {fast}
modelserve_rejection_duration_seconds_bucket{{transport="http",le="+Inf"}} {fast}
modelserve_rejection_duration_seconds_sum{{transport="http"}} 0.5
modelserve_rejection_duration_seconds_count{{transport="http"}} {fast}
# HELP modelserve_inflight_requests Requests in flight.
# TYPE modelserve_inflight_requests gauge
modelserve_inflight_requests{{model="iris",version="1"}} 2.0
# HELP modelserve_drift_psi PSI of the last window.
# TYPE modelserve_drift_psi gauge
modelserve_drift_psi{{model="iris",feature="petal_width"}} {psi}
# HELP nv_cpu_utilization CPU utilization (0-1).
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization {cpu}
"""


def test_counters_and_histograms_add_up_and_keep_their_exact_names() -> None:
    merged = merge_expositions(
        {
            0: WORKER_TEXT.format(success=3.0, fast=1.0, psi=0.1, cpu=0.5),
            1: WORKER_TEXT.format(success=4.0, fast=2.0, psi=0.7, cpu=0.25),
        }
    )
    lines = merged.splitlines()
    assert 'nv_inference_request_success{model="iris",version="1"} 7.0' in lines  # not renamed to ..._total
    assert "# TYPE nv_inference_request_success counter" in lines
    assert 'modelserve_rejection_duration_seconds_bucket{transport="http",le="+Inf"} 3.0' in lines
    assert 'modelserve_rejection_duration_seconds_sum{transport="http"} 1.0' in lines
    assert 'modelserve_inflight_requests{model="iris",version="1"} 4.0' in lines
    assert 'modelserve_drift_psi{model="iris",feature="petal_width",worker="0"} 0.1' in lines
    assert 'modelserve_drift_psi{model="iris",feature="petal_width",worker="1"} 0.7' in lines
    assert 'nv_cpu_utilization{worker="1"} 0.25' in lines
    # Still a valid exposition: Prometheus's own parser reads it, each family once.
    names = [family.name for family in text_string_to_metric_families(merged)]
    assert len(names) == len(set(names)) == 5


def test_one_worker_alone_is_unchanged_but_for_the_worker_label_on_gauges() -> None:
    text = WORKER_TEXT.format(success=3.0, fast=1.0, psi=0.1, cpu=0.5)
    merged = merge_expositions({0: text}).splitlines()
    assert 'nv_inference_request_success{model="iris",version="1"} 3.0' in merged
    assert 'nv_cpu_utilization{worker="0"} 0.5' in merged
