"""Drift through the real server: ``modelserve profile`` writes the reference, served iris rows fill windows,
PSI/KS land in /metrics, a shifted stream raises drift events and a stationary one does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from sklearn.datasets import load_iris

from tests.model_builders import iris_repository
from tests.observability.test_metrics import scrape
from tests.server_process import EXAMPLES, REPO_ROOT, running_server
from tests.waiting import wait_until


def profile_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve", "profile", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def send(client: grpcclient.InferenceServerClient, rows: np.ndarray, batch: int = 10) -> None:
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch].astype(np.float32)
        tensor = grpcclient.InferInput("input-0", list(chunk.shape), "FP32")
        tensor.set_data_from_numpy(chunk)
        client.infer("iris", [tensor])


def drift_samples(url: str, *, windows: int, timeout_s: float = 20.0) -> dict:  # type: ignore[type-arg]
    """Scrapes until iris has completed ``windows`` windows (the drift thread runs behind the requests)."""

    def completed() -> dict | None:  # type: ignore[type-arg]
        samples = scrape(url)
        done = samples.get(("modelserve_drift_windows", (("model", "iris"), ("version", "1"))), 0)
        return samples if done >= windows else None

    return wait_until(completed, timeout_s=timeout_s, interval_s=0.1, what=f"{windows} completed drift windows")


def test_profile_then_serve_stationary_then_shifted(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    x, _ = load_iris(return_X_y=True)
    train = tmp_path / "train.npy"
    np.save(train, x.astype(np.float32))
    made = profile_command("iris", str(train), "--model-repository", str(repo), "--feature-names", "sl,sw,pl,pw")
    assert made.returncode == 0, made.stderr
    assert "4 features (4 continuous)" in made.stdout
    assert (repo / "iris" / "1.profile.json").is_file()

    config = tmp_path / "config.yaml"
    config.write_text("drift:\n  window_rows: 150\n")
    with running_server(repo, config=config) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        rng = np.random.default_rng(5)
        # Stationary: the training rows themselves, shuffled, two windows of 150.
        send(client, np.concatenate([rng.permutation(x), rng.permutation(x)]))
        samples = drift_samples(server.http_url, windows=2)
        iris = (("model", "iris"), ("version", "1"))
        for feature in ("sl", "sw", "pl", "pw"):
            key = tuple(sorted((*iris, ("feature", feature))))
            assert samples[("modelserve_drift_psi", key)] < 0.05  # the same rows: PSI ~ 0
            assert samples[("modelserve_drift_ks_statistic", key)] < 0.05
            assert samples[("modelserve_drift_ks_pvalue", key)] > 0.9
        assert samples[("modelserve_drift_events", iris)] == 0

        # Shifted: petal length +2 cm on every row; the next window must be a drift event.
        shifted = x.copy()
        shifted[:, 2] += 2.0
        send(client, shifted)
        samples = drift_samples(server.http_url, windows=3)
        pl = tuple(sorted((*iris, ("feature", "pl"))))
        assert samples[("modelserve_drift_psi", pl)] > 0.2
        assert samples[("modelserve_drift_ks_pvalue", pl)] < 1e-6
        assert samples[("modelserve_drift_events", iris)] == 1
        assert samples[("modelserve_drift_psi", tuple(sorted((*iris, ("feature", "sw")))))] < 0.05
        # Inference itself was never affected.
        assert samples[("nv_inference_request_failure", (*iris[:1], ("reason", "BACKEND"), iris[1]))] == 0


def test_a_profile_written_while_serving_is_picked_up(tmp_path: Path) -> None:
    """No profile at start: drift is off for iris; a profile written beside the running version is read on
    the drift thread's next look (every 10 s) and windows start filling."""
    repo = iris_repository(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("drift:\n  window_rows: 20\n")
    x, _ = load_iris(return_X_y=True)
    with running_server(repo, config=config) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        send(client, x[:40])
        assert not any(name == "modelserve_drift_windows" for name, _ in scrape(server.http_url))
        np.save(tmp_path / "train.npy", x)
        assert profile_command("iris", str(tmp_path / "train.npy"), "--model-repository", str(repo)).returncode == 0

        def picked_up() -> float:
            windows = scrape(server.http_url).get(("modelserve_drift_windows", (("model", "iris"), ("version", "1"))))
            if not windows:
                send(client, x[:20])  # traffic for the windows to fill once the profile is read
            return windows or 0.0

        wait_until(picked_up, timeout_s=25, interval_s=0.5, what="the new profile to be picked up")


def test_the_bundled_iris_example_has_a_profile() -> None:
    """``make examples`` writes iris' profile (with the classifier's predicted classes) and its data."""
    from modelserve.observability.drift_profile import Profile

    profile = Profile.load(EXAMPLES / "iris" / "1.profile.json")
    assert [f.name for f in profile.features] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert profile.prediction is not None and profile.prediction.classes == (0, 1, 2)
    assert (REPO_ROOT / "examples" / "data" / "iris_train.npy").is_file()


def test_profile_command_errors_name_the_problem(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    good = tmp_path / "train.npy"
    np.save(good, np.ones((10, 4), np.float32) * np.arange(10)[:, None])
    cases = [
        (("nope", str(good)), "no model 'nope'"),
        (("../etc", str(good)), "model name"),
        (("iris", str(good), "--version", "9"), "no version folder '9'"),
        (("iris", str(tmp_path / "missing.npy")), "missing.npy"),
        (("iris", str(good), "--feature-names", "a,b"), "2 feature names given for 4 features"),
        (("iris", str(good), "--bins", "1"), "bins must be between 2 and 100"),
    ]
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((5, 4), np.nan))
    cases.append((("iris", str(nan)), "NaN"))
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases.append((("iris", str(pickled)), "allow_pickle"))
    for args, message in cases:
        result = profile_command(*args, "--model-repository", str(repo))
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (repo / "iris" / "1.profile.json").exists()


def test_a_corrupt_profile_is_reported_and_serving_goes_on(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    (repo / "iris" / "1.profile.json").write_text("{not json")
    with running_server(repo) as server:
        response = httpx.post(
            f"{server.http_url}/v2/models/iris/infer",
            json={"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]},
        )
        assert response.status_code == 200


def test_profile_refuses_to_write_through_a_link_out_of_the_repository(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    (repo / "iris" / "1.profile.json").symlink_to(outside)
    x, _ = load_iris(return_X_y=True)
    train = tmp_path / "train.npy"
    np.save(train, x.astype(np.float32))
    made = profile_command("iris", str(train), "--model-repository", str(repo))
    assert made.returncode == 1
    assert "symbolic link that leaves the model repository" in made.stderr, made.stderr
    assert outside.read_text() == "precious", "the file outside the repository was not written"
