"""A real Prometheus on loopback scrapes the real server every second, loads the alerting rules, and answers
the p99 ``histogram_quantile`` query with the value the server's own buckets give; every dashboard query
evaluates."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.conftest import IRIS_REQUEST
from tests.deploy.promql import (
    ALERT_RULES,
    dashboard_queries,
    expand_macros,
    load_dashboard,
    metric_names,
    wire_samples,
)
from tests.server_process import free_port, running_server
from tests.waiting import WaitTimeout, wait_until

PROMETHEUS = Path("/usr/bin/prometheus")
pytestmark = pytest.mark.skipif(
    not PROMETHEUS.exists(),
    reason="/usr/bin/prometheus is missing: `make system-deps` (run by `make unit`) installs Debian's prometheus package",
)

P99_QUERY = (
    'histogram_quantile(0.99, sum by (le) (rate(modelserve_request_duration_seconds_bucket{model="iris"}[30s])))'
)
TRAFFIC_S = 2.0
WAIT_S = 60.0


class Prometheus:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10.0)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (
            f"Prometheus /api/v1/{path} {params} answered {response.status_code}: {body}\n{self.log_tail()}"
        )
        data: dict[str, Any] = body["data"]
        return data

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def wait_for(self, what: str, check: Callable[[], object], timeout_s: float = WAIT_S) -> None:
        """Polls ``check()`` (truthy when done) for at most ``timeout_s``; fails naming ``what``, with the tail
        of Prometheus' log."""

        def done() -> object:
            assert self.process.poll() is None, f"Prometheus exited with {self.process.returncode}:\n{self.log_tail()}"
            return check()

        try:
            wait_until(done, timeout_s=timeout_s, interval_s=0.2, what=what)
            return
        except WaitTimeout:
            pass
        pytest.fail(f"Prometheus: {what} not seen within {timeout_s} s\n{self.log_tail()}")


@contextmanager
def running_prometheus(config: Path, workdir: Path) -> Iterator[Prometheus]:
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}", log)
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{prometheus.url}/-/ready", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        prometheus.wait_for("/-/ready", ready)
        yield prometheus
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
                raise
    assert process.returncode == 0, (
        f"Prometheus exited with {process.returncode} after SIGTERM\n{prometheus.log_tail()}"
    )


def iris_buckets(exposition: str) -> dict[float, float]:
    """The server's cumulative request-latency buckets for iris (upper bound -> count)."""
    buckets: dict[float, float] = {}
    for name, labels, value in wire_samples(exposition):
        if name == "modelserve_request_duration_seconds_bucket" and labels["model"] == "iris":
            buckets[float(labels["le"])] = buckets.get(float(labels["le"]), 0.0) + value
    return buckets


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative buckets (linear inside the bucket; the highest finite
    bound when the rank falls in +Inf)."""
    bounds = sorted(buckets)
    total = buckets[math.inf]
    if total == 0:
        return math.nan
    rank = q * total
    below, lower = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return bounds[-2]
            return lower + (bound - lower) * (rank - below) / (count - below)
        below, lower = count, bound
    raise AssertionError("unreachable: the +Inf bucket holds every observation")


def scalar(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_prometheus_scrapes_the_server_and_answers_p99(tmp_path: Path) -> None:
    with running_server() as server:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERT_RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "modelserve",
                            "metrics_path": "/metrics",
                            "static_configs": [{"targets": [server.http_address]}],
                        }
                    ],
                }
            )
        )
        with (
            running_prometheus(config, tmp_path) as prometheus,
            httpx.Client(base_url=server.http_url, timeout=10.0) as client,
        ):
            # A scrape before any traffic: the rate windows below start from it.
            prometheus.wait_for("target up", lambda: scalar(prometheus.query('up{job="modelserve"}')) == 1.0)
            before = iris_buckets(client.get("/metrics").text)

            requests = 0
            deadline = time.monotonic() + TRAFFIC_S
            while time.monotonic() < deadline:
                response = client.post("/v2/models/iris/infer", json=IRIS_REQUEST)
                assert response.status_code == 200, response.text
                requests += 1
            after_text = client.get("/metrics").text
            after = iris_buckets(after_text)
            (success,) = [
                value
                for name, labels, value in wire_samples(after_text)
                if name == "nv_inference_request_success" and labels["model"] == "iris"
            ]
            assert after[math.inf] - before[math.inf] == requests

            # Prometheus has the server's final count once it scraped after the traffic.
            prometheus.wait_for(
                f"nv_inference_request_success{{model='iris'}} == {success}",
                lambda: scalar(prometheus.query('nv_inference_request_success{model="iris"}')) == success,
            )
            prometheus.wait_for(
                "a finite positive p99", lambda: 0 < (scalar(prometheus.query(P99_QUERY)) or math.nan) < math.inf
            )
            p99 = scalar(prometheus.query(P99_QUERY))
            assert p99 is not None and 0 < p99 < 10.0, f"p99 {p99} s from {requests} requests"
            # Over a window that reaches back before the traffic, Prometheus' p99 is the one the server's own
            # bucket increments give (rate scales every bucket alike; histogram_quantile is scale-free).
            p99_5m = scalar(prometheus.query(P99_QUERY.replace("[30s]", "[5m]")))
            expected = histogram_quantile(0.99, {le: after[le] - before[le] for le in after})
            assert p99_5m is not None and math.isclose(p99_5m, expected, rel_tol=1e-6), (p99_5m, expected)

            # Every dashboard query evaluates; those over series the server has samples of return data.
            with_samples = {name for name, _, _ in wire_samples(after_text)}
            for where, expr in dashboard_queries(load_dashboard()):
                result = prometheus.query(expand_macros(expr, rate_interval="30s"))
                if metric_names(expr) <= with_samples:
                    assert result, f"{where}: no data from {expr!r}"

            # The alerting rules load and evaluate without error (an error is in the log tail on failure).
            def rules() -> list[dict[str, Any]]:
                (group,) = prometheus.api("rules")["groups"]
                assert group["name"] == "modelserve"
                return list(group["rules"])

            prometheus.wait_for("every alerting rule evaluated", lambda: all(r["health"] == "ok" for r in rules()))
            assert {r["name"] for r in rules()} == {
                "ModelserveHighP99Latency",
                "ModelserveHighErrorRate",
                "ModelserveQueueBacklog",
                "ModelserveInputDrift",
                "ModelservePredictionLogDropping",
            }
