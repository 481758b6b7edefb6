"""The live dashboard through the real server: its JSON (``/v2/dashboard/summary``), its static files
(an allow-list, never a path), and the page itself in a real headless Chromium driven by Selenium while
a client sends traffic: the numbers move, the models table shows the states, and a drift alert appears
after a shifted stream.

The browser is Debian's ``chromium`` through ``chromedriver`` (``make system-deps`` installs both); the
driver path is given explicitly so Selenium Manager never downloads anything. Every wait is bounded.
Screenshots go to the test's tmp dir, and to ``docs/dashboard.png`` when ``MODELSERVE_SCREENSHOT`` is set.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.model_builders import iris_repository
from tests.server_process import EXAMPLES, REPO_ROOT, ServerProcess, running_server
from tests.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver: run `make system-deps`",
)

IRIS_ROWS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.0, 3.4, 1.5, 0.2]], dtype=np.float32
)


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    # Samples five times a second so a window moves within the test's waits (the default is once a second).
    path.write_text(yaml.safe_dump({"monitor": {"sample_interval_s": 0.2}, **settings}))
    return path


def infer_body(rows: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.flatten().tolist()}]
    }


def strict_json(text: str) -> Any:
    """Parse as a browser does: NaN and Infinity are not JSON."""

    def reject(constant: str) -> None:
        raise AssertionError(f"the summary holds {constant}, which JSON.parse rejects")

    return json.loads(text, parse_constant=reject)


def raw_get(server: ServerProcess, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (httpx would resolve '..' before sending)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = write_config(tmp_path_factory.mktemp("dashboard") / "config.yaml", {})
    with running_server(EXAMPLES, config=config) as process:
        yield process


@contextmanager
def traffic(url: str, model: str, rows: np.ndarray) -> Iterator[None]:
    """A client thread sending ``rows`` to ``model`` back to back until the block ends."""
    stop = threading.Event()
    failures: list[str] = []

    def send() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                response = client.post(f"{url}/v2/models/{model}/infer", json=infer_body(rows))
                if response.status_code != 200:
                    failures.append(response.text)
                    return
                stop.wait(0.005)

    thread = threading.Thread(target=send, name="dashboard-traffic", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive(), "the traffic thread did not stop"
    assert not failures, failures[:1]


@contextmanager
def chromium(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1440,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(15)
        driver.set_script_timeout(5)
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, timeout_s: float, condition: Callable[[], Any], message: str) -> Any:
    return WebDriverWait(
        driver,
        timeout_s,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(lambda _: condition(), message)


def displayed(driver: webdriver.Chrome, selector: str, attribute: str | None = None) -> str:
    element = driver.find_element(By.CSS_SELECTOR, selector)
    return (element.get_attribute(attribute) or "") if attribute else element.text


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """Script errors and CSP violations the page logged (Chromium reports both as SEVERE)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: webdriver.Chrome, path: Path, *, for_docs: bool = False) -> None:
    """The whole page and no more: the window is resized until its viewport is the body's height (the
    window's size includes the browser's own frame, whose height differs between Chromium versions)."""
    for _ in range(3):
        viewport, content = driver.execute_script(
            "return [window.innerHeight, Math.ceil(document.body.getBoundingClientRect().height)]"
        )
        if viewport == content:
            break
        size = driver.get_window_size()
        driver.set_window_size(size["width"], max(400, min(size["height"] + content - viewport, 6000)))
    driver.execute_script("return new Promise(requestAnimationFrame)")  # charts redraw at the new size
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    print(f"dashboard screenshot: {path}")
    if for_docs and os.environ.get("MODELSERVE_SCREENSHOT"):
        docs = REPO_ROOT / "docs" / "dashboard.png"
        docs.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, docs)
        print(f"dashboard screenshot: {docs}")


# ---- the JSON ---------------------------------------------------------------------------------------


def test_summary_shape(server: ServerProcess) -> None:
    for _ in range(5):
        assert httpx.post(f"{server.http_url}/v2/models/iris/infer", json=infer_body(IRIS_ROWS)).status_code == 200

    def iris_window() -> dict[str, Any] | None:
        response = httpx.get(f"{server.http_url}/v2/dashboard/summary", params={"window": "30"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        document = strict_json(response.text)
        window = next(v for v in document["versions"] if v["model"] == "iris")
        return document if window["requests"] >= 5 else None

    document = wait_until(iris_window, timeout_s=5, interval_s=0.1, what="the monitor to count iris' 5 requests")
    assert document["window_s"] == 30
    assert isinstance(document["server_time_ms"], int)
    assert {"name": "iris", "version": "1", "state": "READY", "reason": ""} in document["models"]
    assert {m["name"] for m in document["models"]} >= {"iris", "iris_sklearn", "digits_mlp"}
    iris = next(v for v in document["versions"] if v["model"] == "iris")
    assert set(iris) == {
        "model",
        "version",
        "span_s",
        "requests",
        "failures",
        "throughput",
        "error_rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "queue_depth",
        "mean_batch_size",
        "batch_sizes",
        "drift",
    }
    assert iris["throughput"] > 0 and iris["failures"] == 0 and iris["error_rate"] == 0
    assert 0 < iris["p50_ms"] <= iris["p95_ms"] <= iris["p99_ms"]
    assert iris["mean_batch_size"] == 4  # every request carried 4 rows, and iris has no dynamic batcher
    assert {"le": "4", "count": iris["requests"]} in iris["batch_sizes"]
    assert iris["batch_sizes"][-1]["le"] == "+Inf"
    # A model nobody called has no latency: null, never NaN.
    idle = next(v for v in document["versions"] if v["model"] == "digits_mlp")
    assert idle["requests"] == 0 and idle["p50_ms"] is None and idle["p99_ms"] is None
    assert set(document["alerts"]) == {"firing", "pending", "resolved"}


@pytest.mark.parametrize("window", ["abc", "0", "0.5", "601", "nan", "inf", "-3", ""])
def test_bad_window_is_400_naming_it(server: ServerProcess, window: str) -> None:
    response = httpx.get(f"{server.http_url}/v2/dashboard/summary?window={window}")
    assert response.status_code == 400
    message = response.json()["error"]
    assert "'window'" in message and "1 to 600" in message and "?window=10" in message
    assert httpx.get(f"{server.http_url}/v2/dashboard/summary?window=600").status_code == 200


def test_methods(server: ServerProcess) -> None:
    for path in ("/dashboard", "/dashboard/dashboard.js", "/v2/dashboard/summary"):
        response = httpx.post(f"{server.http_url}{path}")
        assert response.status_code == 405, path
        assert response.headers["allow"] == "GET"


# ---- the static files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "cache_control"),
    [
        ("/dashboard", "text/html; charset=utf-8", "no-cache"),
        ("/dashboard/", "text/html; charset=utf-8", "no-cache"),
        ("/dashboard/dashboard.js", "text/javascript; charset=utf-8", "no-cache"),
        ("/dashboard/dashboard.css", "text/css; charset=utf-8", "no-cache"),
        ("/dashboard/uPlot.iife.min.js", "text/javascript; charset=utf-8", "public, max-age=86400"),
        ("/dashboard/uPlot.min.css", "text/css; charset=utf-8", "public, max-age=86400"),
        ("/dashboard/uPlot.LICENSE", "text/plain; charset=utf-8", "public, max-age=86400"),
    ],
)
def test_assets(server: ServerProcess, path: str, content_type: str, cache_control: str) -> None:
    response = httpx.get(f"{server.http_url}{path}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == cache_control
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content
    etag = response.headers["etag"]
    again = httpx.get(f"{server.http_url}{path}", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag


def test_page_loads_nothing_from_elsewhere(server: ServerProcess) -> None:
    response = httpx.get(f"{server.http_url}/dashboard")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "http://" not in response.text and "https://" not in response.text and "//cdn" not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/../config.py",
        "/dashboard/..%2Fconfig.py",
        "/dashboard/%2e%2e/%2e%2e/app.py",
        "/dashboard/..%2F..%2F..%2Fpyproject.toml",
        "/dashboard//etc/passwd",
        "/dashboard/%2Fetc%2Fpasswd",
        "/dashboard/VENDORED.md",  # in the folder, not in the allow-list
        "/dashboard/nope.js",
        "/dashboard/dashboard.js/",
        "/dashboard/DASHBOARD.JS",
    ],
)
def test_only_allow_listed_files(server: ServerProcess, path: str) -> None:
    status, body = raw_get(server, path)
    assert status == 404, (path, body[:200])
    assert b"the page is at /dashboard" in body or b"Not Found" in body
    assert b"import" not in body and b"root:" not in body


def test_dashboard_disabled_is_404(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    config = write_config(tmp_path / "config.yaml", {"dashboard": {"enabled": False}})
    with running_server(repo, config=config) as disabled:
        for path in ("/dashboard", "/dashboard/dashboard.js", "/v2/dashboard/summary"):
            response = httpx.get(f"{disabled.http_url}{path}")
            assert response.status_code == 404, path
            assert "dashboard.enabled: true" in response.json()["error"]
        # The rest of the server is unaffected.
        assert httpx.get(f"{disabled.http_url}/v2/health/ready").status_code == 200


# ---- the page in a browser --------------------------------------------------------------------------


@needs_browser
def test_page_shows_live_traffic(server: ServerProcess, tmp_path: Path) -> None:
    iris = '.panel[data-model="iris"]'
    with traffic(server.http_url, "iris", IRIS_ROWS[:2]), chromium(tmp_path) as driver:
        driver.get(f"{server.http_url}/dashboard")
        wait_for(
            driver,
            10,
            lambda: displayed(driver, '#models tr[data-model="iris"] [data-field="state"]') == "READY",
            "the models table never showed iris READY",
        )

        def throughput() -> float:
            raw = displayed(driver, f'{iris} [data-metric="throughput"]', "data-value")
            return float(raw) if raw else 0.0

        first = wait_for(driver, 10, lambda: throughput() or None, "iris' throughput never rose above 0")
        assert first > 0
        wait_for(driver, 10, lambda: throughput() not in (0.0, first), "iris' throughput never changed")
        # The tile shows the number as text (not only in its data attribute), and the charts exist.
        assert displayed(driver, f"{iris} [data-metric='throughput'] .value") not in ("", "\u2013", "0")
        assert driver.find_elements(By.CSS_SELECTOR, f'{iris} [data-chart="throughput"] canvas')
        assert driver.find_elements(By.CSS_SELECTOR, f'{iris} [data-chart="latency"] canvas')
        assert float(displayed(driver, f'{iris} [data-metric="p99_ms"]', "data-value")) > 0
        assert displayed(driver, "#status", "data-state") == "live"
        assert displayed(driver, "#alerts", "data-firing") == "0"
        assert console_errors(driver) == []
        screenshot(driver, tmp_path / "dashboard.png")


@needs_browser
def test_drift_alert_appears_after_shifted_stream(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris  # the bundled copy: no download

    repo = iris_repository(tmp_path)
    train = tmp_path / "train.npy"
    np.save(train, load_iris().data.astype(np.float32))
    profile = subprocess.run(
        [
            *(sys.executable, "-m", "modelserve", "profile", "iris", str(train)),
            *("--model-repository", str(repo), "--feature-names", "sepal_length,sepal_width,petal_length,petal_width"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert profile.returncode == 0, profile.stderr
    config = write_config(
        tmp_path / "config.yaml",
        {
            "drift": {"window_rows": 50},
            "alerts": {
                "evaluation_interval_s": 0.2,
                "rules": [{"name": "iris-drift", "metric": "drift_psi", "threshold": 0.2, "model": "iris"}],
            },
        },
    )
    shifted = IRIS_ROWS + 3.0  # every feature moved well outside most of the reference's bins
    with running_server(repo, config=config) as drifting, chromium(tmp_path) as driver:
        driver.get(f"{drifting.http_url}/dashboard")
        wait_for(
            driver,
            10,
            lambda: displayed(driver, "#status", "data-state") == "live",
            "the page never loaded the summary",
        )
        assert displayed(driver, "#alerts", "data-firing") == "0"
        with traffic(drifting.http_url, "iris", shifted):
            alert = '#alerts li[data-alert="iris-drift"][data-state="firing"]'
            wait_for(driver, 15, lambda: driver.find_elements(By.CSS_SELECTOR, alert), "the drift alert never appeared")
            assert "iris" in displayed(driver, alert)
            assert int(displayed(driver, "#alerts", "data-firing")) >= 1
            drifted = driver.find_elements(By.CSS_SELECTOR, '.panel[data-model="iris"] tr[data-drifted="true"]')
            assert drifted, "the drift table shows no feature above the threshold"
            summary = strict_json(httpx.get(f"{drifting.http_url}/v2/dashboard/summary").text)
            drift = next(v for v in summary["versions"] if v["model"] == "iris")["drift"]
            assert drift["drifted"] and drift["threshold"] == 0.2 and drift["rows"] == 50 and drift["window"] >= 1
            features = {f["feature"]: f for f in drift["features"]}
            assert set(features) == {"sepal_length", "sepal_width", "petal_length", "petal_width"}
            assert all(f["drifted"] == (f["psi"] > 0.2) for f in features.values())
            assert all(0 <= f["ks_pvalue"] < 0.01 for f in features.values())  # continuous: KS is given
            assert {f["feature"] for f in features.values() if f["drifted"]} == {
                row.get_attribute("data-feature") for row in drifted
            }
            assert console_errors(driver) == []
            if os.environ.get("MODELSERVE_SCREENSHOT"):
                time.sleep(10)  # for the README's picture only: let the charts draw ten seconds of history
            screenshot(driver, tmp_path / "dashboard-drift.png", for_docs=True)
        # The server goes away: the page says so, keeps the last numbers, and keeps trying.
        assert drifting.stop() == 0
        wait_for(
            driver,
            10,
            lambda: displayed(driver, "#status", "data-state") == "error",
            "the page did not show that it cannot reach the server",
        )
        assert "retrying" in displayed(driver, "#status")
        assert driver.find_elements(By.CSS_SELECTOR, alert)
