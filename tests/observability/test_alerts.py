"""Alerts through the real server: one end-to-end smoke test of a rule firing and resolving from real
traffic (GET /v2/alerts, the modelserve_alerts_firing gauge), the webhook retries with backoff and gives up
when told to, a broken webhook never slows inference or shutdown, and bad alert settings stop
``modelserve serve`` by name. The states themselves (pending, for_s, resolution, history, each metric) are
tested in process with a manual clock in ``test_alert_states.py``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelserve.config import SettingsError, load_settings
from tests.model_builders import write_python_model
from tests.observability.webhook_receiver import serving_webhook
from tests.server_process import ServerProcess, free_port, port_is_free, running_server
from tests.waiting import wait_until

# Sleeps for `seconds`, or fails inside the model (a BACKEND failure in the statistics) when negative.
WORKER_MODEL = """
    import time

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def infer(self, inputs):
            seconds = float(inputs["seconds"][0])
            if seconds < 0:
                raise ValueError("failing on purpose")
            time.sleep(seconds)
            return {"ok": np.array([1], dtype=np.int32)}
"""

WORKER_CONFIG = """
    backend: "python"
    input [ { name: "seconds" data_type: TYPE_FP32 dims: [ 1 ] } ]
    output [ { name: "ok" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

ERROR_RULE = {"name": "HighErrorRate", "metric": "error_rate", "threshold": 0.2, "window_s": 1.0}


def _repository(tmp_path: Path, models: tuple[str, ...] = ("worker",)) -> Path:
    repo = tmp_path / "repo"
    for model in models:
        write_python_model(repo / model, WORKER_MODEL, WORKER_CONFIG)
    return repo


def _config(tmp_path: Path, alerts: dict[str, Any]) -> Path:
    path = tmp_path / "modelserve.yaml"
    settings = {"monitor": {"sample_interval_s": 0.2}, "alerts": {"evaluation_interval_s": 0.2, **alerts}}
    path.write_text(yaml.safe_dump(settings))
    return path


def _infer(url: str, seconds: float, timeout_s: float = 10.0, model: str = "worker") -> httpx.Response:
    body = {"inputs": [{"name": "seconds", "shape": [1], "datatype": "FP32", "data": [seconds]}]}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=timeout_s)


def _alerts(url: str) -> dict[str, list[dict[str, Any]]]:
    response = httpx.get(f"{url}/v2/alerts", timeout=5)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _wait_for(
    what: str, check: Callable[[], Any], timeout_s: float = 15.0, between: Callable[[], None] = lambda: None
) -> Any:
    def attempt() -> Any:
        result = check()
        if not result:
            between()
        return result

    return wait_until(attempt, timeout_s=timeout_s, interval_s=0.05, what=what)


def _metric(url: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def _fail_some(url: str, count: int = 5, model: str = "worker") -> None:
    for _ in range(count):
        assert _infer(url, -1, model=model).status_code == 500


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server, three models: flaky and hooked have a rule each (the rules never see each other's
    traffic), slow has none; and a webhook that refuses connections: every notification fails, and nothing
    else may notice."""
    tmp_path = tmp_path_factory.mktemp("alerts")
    rules = [
        {**ERROR_RULE, "model": "flaky", "severity": "critical"},
        {**ERROR_RULE, "name": "HookedErrors", "model": "hooked"},
    ]
    refused = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    config = _config(tmp_path, {"rules": rules, **_webhook(refused, webhook_max_attempts=4)})
    with running_server(_repository(tmp_path, ("flaky", "slow", "hooked")), config=config) as server:
        yield server


def test_error_rate_alert_fires_then_resolves_into_history(shared_server: ServerProcess) -> None:
    url = shared_server.http_url
    assert httpx.post(f"{url}/v2/alerts").status_code == 405
    gauge = {"alert": "HighErrorRate", "model": "flaky", "severity": "critical"}
    assert _metric(url, "modelserve_alerts_firing", **gauge) == 0  # a named model's series exists from the start
    _fail_some(url, model="flaky")
    firing = _wait_for("error-rate alert firing", lambda: _named(_alerts(url)["firing"], "HighErrorRate"))
    assert firing["model"] == "flaky" and firing["version"] == "1"
    assert firing["metric"] == "error_rate" and firing["severity"] == "critical" and firing["state"] == "firing"
    assert firing["threshold"] == 0.2 and firing["value"] > 0.2
    assert "error_rate of model flaky" in firing["summary"]
    assert _metric(url, "modelserve_alerts_firing", **gauge) == 1
    # Only good requests from now on: once the 1 s window slides past the failures, it resolves.
    resolved = _wait_for(
        "error-rate alert resolved",
        lambda: _named(_alerts(url)["resolved"], "HighErrorRate"),
        between=lambda: _infer(url, 0, model="flaky").raise_for_status(),
    )
    assert resolved["state"] == "resolved" and resolved["resolved_ms"] >= resolved["since_ms"] == firing["since_ms"]
    assert resolved["value"] is None or resolved["value"] <= 0.2
    assert _named(_alerts(url)["firing"], "HighErrorRate") is None
    assert _metric(url, "modelserve_alerts_firing", **gauge) == 0


def _named(alerts: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((a for a in alerts if a["name"] == name), None)


def _webhook(url: str, **overrides: Any) -> dict[str, Any]:
    return {"webhook_url": url, "webhook_backoff_s": 0.05, "webhook_timeout_s": 2, **overrides}


def test_webhook_retries_until_delivered_once(tmp_path: Path) -> None:
    with serving_webhook([500, 500, 200]) as hook:
        config = _config(tmp_path, {"rules": [ERROR_RULE], **_webhook(hook.url, webhook_max_attempts=5)})
        with running_server(_repository(tmp_path), config=config) as server:
            url = server.http_url
            _fail_some(url)
            # The resolved notification queues behind the firing one: once it arrives, the firing one is done.
            _wait_for("resolved notification", lambda: hook.delivered("resolved"), between=lambda: _infer(url, 0))
            [firing] = hook.delivered("firing")
            assert firing["alert"]["name"] == "HighErrorRate" and firing["alert"]["state"] == "firing"
            assert firing["alert"]["value"] > 0.2 and firing["alert"]["threshold"] == 0.2
            assert [status for status, _ in hook.hits[:3]] == [500, 500, 200]
            assert hook.count() == 4  # 3 tries of the firing one, 1 of the resolved one
            assert _metric(url, "modelserve_alert_notifications_total", outcome="sent") == 2
            assert _metric(url, "modelserve_alert_notifications_total", outcome="failed") == 0


def test_webhook_that_always_fails_is_given_up_after_max_attempts(tmp_path: Path) -> None:
    rule = {**ERROR_RULE, "window_s": 60}  # stays firing: no resolved notification during the test
    with serving_webhook([503]) as hook:
        config = _config(tmp_path, {"rules": [rule], **_webhook(hook.url, webhook_max_attempts=3)})
        with running_server(_repository(tmp_path), config=config) as server:
            url = server.http_url
            _fail_some(url)
            # The counter moves only after the last try has come back, so every hit is in by then.
            _wait_for(
                "notification given up",
                lambda: _metric(url, "modelserve_alert_notifications_total", outcome="failed") == 1,
            )
            assert hook.count() == 3
            assert _alerts(url)["firing"][0]["name"] == "HighErrorRate"
            assert _infer(url, 0).status_code == 200
            assert hook.count() == 3
            assert _metric(url, "modelserve_alert_notifications_total", outcome="sent") == 0


def test_unreachable_webhook_does_not_delay_inference(shared_server: ServerProcess) -> None:
    url = shared_server.http_url
    failed_before = _metric(url, "modelserve_alert_notifications_total", outcome="failed") or 0
    _fail_some(url, model="hooked")
    _wait_for("alert firing", lambda: _named(_alerts(url)["firing"], "HookedErrors"))
    # While the notifier retries (and gives up), inference answers within a short client timeout.
    _wait_for(
        "notification given up",
        lambda: (_metric(url, "modelserve_alert_notifications_total", outcome="failed") or 0) > failed_before,
        between=lambda: _infer(url, 0, timeout_s=1.0, model="slow").raise_for_status(),
    )
    assert _metric(url, "modelserve_alert_notifications_total", outcome="sent") == 0


def test_hanging_webhook_delays_neither_inference_nor_shutdown(tmp_path: Path) -> None:
    with serving_webhook([0]) as hook:
        config = _config(tmp_path, {"rules": [ERROR_RULE], **_webhook(hook.url, webhook_timeout_s=30)})
        server = ServerProcess(_repository(tmp_path), config=config)
        server.start()
        try:
            _fail_some(server.http_url)
            _wait_for("webhook called", lambda: hook.count() >= 1)
            for _ in range(5):
                assert _infer(server.http_url, 0, timeout_s=1.0).status_code == 200
            # The POST hangs for up to 30 s (webhook_timeout_s); shutdown must not wait for it.
            assert server.stop(timeout_s=10) == 0
        finally:
            if server.process is not None and server.process.poll() is None:
                server.process.kill()
                server.process.wait(timeout=10)
        assert port_is_free(server.http_port) and port_is_free(server.grpc_port)


def test_bad_alert_settings_stop_serve_naming_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "modelserve.yaml"
    alerts = {"rules": [{"name": "x", "metric": "p42_latency_ms", "threshold": 1}], "webhook_url": "ftp://h/hook"}
    config.write_text(yaml.safe_dump({"alerts": alerts}))
    result = subprocess.run(
        [sys.executable, "-m", "modelserve", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "alerts.rules.0.metric" in result.stderr and "'p99_latency_ms'" in result.stderr  # the valid names
    assert "alerts.webhook_url" in result.stderr and "http:// or https://" in result.stderr


@pytest.mark.parametrize(
    ("alerts", "named", "advice"),
    [
        ({"webhook_url": "http:///hook"}, "alerts.webhook_url", "with a host"),
        ({"webhook_url": "file:///etc/passwd"}, "alerts.webhook_url", "http:// or https://"),
        ({"rules": [{"name": "x", "metric": "error_rate", "threshold": 1}] * 2}, "alerts", "rename the rules named x"),
        (
            {"rules": [{"name": "x", "metric": "error_rate", "threshold": 1, "window_s": 3600}]},
            "alerts.rules.0.window_s",
            "monitor.horizon_s",
        ),
    ],
)
def test_bad_alert_settings_are_refused_naming_the_setting(alerts: dict[str, Any], named: str, advice: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(None, {"alerts": alerts})
    assert named in str(refused.value) and advice in str(refused.value)
