"""Build the MLServer model repository that the benchmark compares modelserve against.

Writes ``.bench/mlserver-models/`` (git-ignored)::

    settings.json                 server-wide: parallel_workers 0, debug off, host 127.0.0.1
    iris/model-settings.json      mlserver_sklearn.SKLearnModel, input-0 FP32 [-1, 4]
    iris/model.joblib             the fitted estimator, in MLServer's (joblib) format

The estimator is the very one behind modelserve's ``examples/models/iris``: it comes from
``build_iris_estimator()`` in ``examples/build_models.py``, loaded by file path. Run this with the
project's venv (``.venv/bin/python``), which has that file's imports; the peer's venv only loads the
joblib file, and :func:`check_peer_load` verifies that it predicts the same probabilities there.

Outputs. perf_analyzer asks for every output listed in the model configuration, and MLServer's sklearn
runtime computes one estimator method per requested output name (``predict``, ``predict_proba``).
modelserve's iris returns the label and the class probabilities, so MLServer is configured with both
``predict`` (INT64, [-1, 1]: MLServer adds the trailing dimension) and ``predict_proba`` (FP32, [-1, 3]),
so that both servers do the same work per request. ``bench/mlserver_launcher.py`` turns these
declarations into the Triton model configuration that perf_analyzer reads.

Ports are not written here: ``run_core.py`` passes them as ``MLSERVER_HTTP_PORT`` and friends (settings.json
values would override the environment).

Usage (from the repository root): ``.venv/bin/python bench/mlserver_repo.py [--out .bench/mlserver-models]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import joblib  # type: ignore[import-untyped]
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUILD_MODELS = ROOT / "examples" / "build_models.py"
DEFAULT_OUT = ROOT / ".bench" / "mlserver-models"
PEER_PYTHON = ROOT / ".bench" / "mlserver-venv" / "bin" / "python"
MODEL_NAME = "iris"

SERVER_SETTINGS: dict[str, Any] = {
    # In-process inference: MLServer's default of one worker process is 30-60 % slower here.
    "parallel_workers": 0,
    # debug=True (MLServer's default) turns on uvicorn's per-request access log; production runs without it.
    "debug": False,
    "host": "127.0.0.1",
}

MODEL_SETTINGS: dict[str, Any] = {
    "name": MODEL_NAME,
    "implementation": "mlserver_sklearn.SKLearnModel",
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [
        {"name": "predict", "datatype": "INT64", "shape": [-1, 1]},
        {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 3]},
    ],
    "parameters": {"uri": "./model.joblib", "version": "1"},
}


def load_build_models() -> ModuleType | None:
    """Import examples/build_models.py by path; None if it is missing or its imports fail."""
    if not BUILD_MODELS.is_file():
        return None
    spec = importlib.util.spec_from_file_location("modelserve_example_build_models", BUILD_MODELS)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        warnings.warn(f"cannot import {BUILD_MODELS}: {exc}", stacklevel=2)
        return None
    return module


def build_estimator() -> tuple[Any, np.ndarray, str]:
    """The shared iris estimator, the float32 features, and where the estimator came from."""
    module = load_build_models()
    if module is not None and hasattr(module, "build_iris_estimator"):
        x, _ = module.iris_data()
        return module.build_iris_estimator(), np.asarray(x, dtype=np.float32), "examples/build_models.py"
    # Fallback while examples/build_models.py is unavailable: the same recipe, fitted here.
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    return (
        LogisticRegression(max_iter=1000).fit(x, y),
        x,
        "fallback LogisticRegression (build_models missing)",
    )


def check_peer_load(model_path: Path, x: np.ndarray, expected: np.ndarray) -> None:
    """Load the joblib file with the peer's own Python and compare its probabilities to ours."""
    if not PEER_PYTHON.exists():
        print(f"  note: {PEER_PYTHON} missing, skipped the cross-venv check (run bench/setup.sh)")
        return
    code = (
        "import sys, json, joblib, numpy as np\n"
        "m = joblib.load(sys.argv[1])\n"
        "x = np.asarray(json.load(sys.stdin), dtype=np.float32)\n"
        "print(json.dumps(m.predict_proba(x).tolist()))\n"
    )
    result = subprocess.run(
        [str(PEER_PYTHON), "-W", "error::UserWarning", "-c", code, str(model_path)],
        input=json.dumps(x.tolist()),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"the peer venv cannot load {model_path}:\n{result.stderr[-2000:]}")
    got = np.asarray(json.loads(result.stdout), dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    print("  peer venv loads the estimator and agrees with it")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_model(out: Path, clf: Any, x: np.ndarray, model_settings: dict[str, Any]) -> Path:
    """Write one model (joblib + model-settings.json) and the server settings into the repository out,
    then check that the peer venv loads it and agrees with clf on x. Returns the model's folder."""
    model_dir = out / str(model_settings["name"])
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / "model.joblib"
    tmp = model_path.with_name(".model.joblib.tmp")
    joblib.dump(clf, tmp)
    tmp.replace(model_path)
    write_json(model_dir / "model-settings.json", model_settings)
    write_json(out / "settings.json", SERVER_SETTINGS)
    check_peer_load(model_path, x, clf.predict_proba(x))
    return model_dir


def build(out: Path) -> None:
    clf, x, source = build_estimator()
    print(f"mlserver repo: {out / MODEL_NAME} (estimator from {source})")
    write_model(out, clf, x, MODEL_SETTINGS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="repository folder to (re)write")
    args = parser.parse_args(argv)
    build(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
