"""A drift profile must fit its model's input: ``modelserve profile`` refuses data with the wrong feature count,
and a served request whose rows are not the profile's width is counted as mismatched, never binned on the
wrong columns (a 4-feature profile once "fitted" 64-value digits rows as 16 rows each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from modelserve.observability.drift import VersionDrift
from modelserve.observability.drift_profile import Profile, ProfileError, features_per_row, profile_path
from modelserve.observability.observation import Observation
from tests.model_builders import write_onnx_add
from tests.observability.test_metrics import scrape
from tests.server_process import REPO_ROOT, running_server
from tests.waiting import wait_until

WIDE = """
    name: "wide"
    platform: "onnxruntime_onnx"
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 8 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 8 ] } ]
"""


def _profile(features: int, *, input_name: str = "x") -> Profile:
    rows = np.random.default_rng(3).normal(size=(200, features))
    return Profile.build(rows, model="wide", version="1", input_name=input_name)


def _observation(tensor: np.ndarray) -> Observation:
    return Observation("wide", "1", "", None, {"x": tensor}, {}, {}, 0, 0)


def _wide_repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    write_onnx_add(repo / "wide" / "1" / "model.onnx", width=8)
    (repo / "wide" / "config.pbtxt").write_text(WIDE)
    return repo


def test_a_row_is_what_follows_the_batch_dimension() -> None:
    assert features_per_row([64], batched=True) == 64
    assert features_per_row([8, 8], batched=True) == 64
    assert features_per_row([-1, 4], batched=False) == 4
    assert features_per_row([4], batched=False) == 4
    assert features_per_row([-1], batched=True) is None  # variable: cannot be checked
    drift = VersionDrift("wide", "1", _profile(4), window_rows=1000, psi_threshold=0.2)
    assert drift.add(_observation(np.ones((3, 4), np.float32))) == []
    assert drift.add(_observation(np.ones(4, np.float32))) == []  # a 1-D tensor of one row
    assert drift.add(_observation(np.ones((2, 64), np.float32))) is None  # 64 is a multiple of 4, not a row of 4
    assert "shape [2, 64], which is not rows of the 4 features" in drift.mismatch(_observation(np.ones((2, 64))))


def test_check_fits_names_both_counts() -> None:
    with pytest.raises(ProfileError, match=r"input 'x' has 64 values a row \(dims \[64\]\), but the data has 4"):
        _profile(4).check_fits([64], batched=True)
    _profile(64).check_fits([64], batched=True)


def _profile_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve", "profile", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def test_profile_command_refuses_data_that_does_not_fit_the_input(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "digits" / "1").mkdir(parents=True)
    (repo / "digits" / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
        'input [ { name: "input-0" data_type: TYPE_FP32 dims: [ 64 ] } ]\n'
        'output [ { name: "label" data_type: TYPE_INT64 dims: [ 1 ] } ]\n'
    )
    rng = np.random.default_rng(1)
    np.save(tmp_path / "four.npy", rng.normal(size=(50, 4)))
    np.save(tmp_path / "sixty_four.npy", rng.normal(size=(50, 64)))
    refused = _profile_command("digits", str(tmp_path / "four.npy"), "--model-repository", str(repo))
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert (
        "model 'digits' input 'input-0' has 64 values a row (dims [64]), but the data has 4 features (columns); "
        "give data of shape [rows, 64]"
    ) in refused.stderr
    assert not profile_path(repo / "digits", "1").exists()
    wrong_input = _profile_command(
        "digits", str(tmp_path / "four.npy"), "--model-repository", str(repo), "--input", "x"
    )
    assert wrong_input.returncode == 1 and "no input 'x'; its inputs: ['input-0']" in wrong_input.stderr
    made = _profile_command("digits", str(tmp_path / "sixty_four.npy"), "--model-repository", str(repo))
    assert made.returncode == 0, made.stderr
    assert "64 features" in made.stdout


def test_served_rows_that_do_not_fit_the_profile_are_counted_not_binned(tmp_path: Path) -> None:
    repo = _wide_repository(tmp_path)
    _profile(2).save(profile_path(repo / "wide", "1"))  # written by hand: the CLI would refuse it
    config = tmp_path / "config.yaml"
    config.write_text("drift:\n  window_rows: 10\n")
    wide = (("model", "wide"), ("version", "1"))
    with running_server(repo, config=config) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        for _ in range(5):
            tensor = grpcclient.InferInput("x", [2, 8], "FP32")
            tensor.set_data_from_numpy(np.ones((2, 8), np.float32))
            client.infer("wide", [tensor])  # inference itself is unaffected

        def mismatched() -> dict | None:  # type: ignore[type-arg]
            samples = scrape(server.http_url)
            return samples if samples.get(("modelserve_drift_mismatched_requests", wide)) == 5 else None

        samples = wait_until(mismatched, timeout_s=20, interval_s=0.1, what="5 mismatched drift requests")
        # Read as 8 rows of 2 each, these requests would have completed 4 windows of 10 rows.
        assert samples.get(("modelserve_drift_windows", wide), 0) == 0
