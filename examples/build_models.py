"""Build the example model artefacts under ``examples/models`` (a Triton model repository).

Model files are not committed; this script regenerates them. It only uses datasets that ship
inside scikit-learn, so it needs no downloads. Every estimator has a fixed ``random_state``,
so a rerun gives the same models. A model whose artefact already exists is skipped unless
``--force`` is given. The ``config.pbtxt`` files and ``text_stats/1/model.py`` are committed
by hand and are never written here.

Usage: ``.venv/bin/python examples/build_models.py [--out examples/models] [--force]``

Other scripts (e.g. benchmarks that need a joblib copy for another server) can load this file
by path and call :func:`build_iris_estimator`.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import skops.io as sio
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import ClassifierMixin
from sklearn.datasets import load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

DEFAULT_OUT = Path(__file__).resolve().parent / "models"
INPUT_NAME = "input-0"
OUTPUT_NAMES = ("label", "probabilities")
# Opsets the installed onnxruntime supports (kept low for portability).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# Chosen so one row costs ~115 µs in onnxruntime on one thread (compute-heavy on purpose).
DIGITS_HIDDEN = (1024, 1024)
DIGITS_MAX_ITER = 3


def iris_data() -> tuple[np.ndarray, np.ndarray]:
    """Iris features as float32 (what clients send) and integer labels."""
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Digits features scaled to [0, 1] as float32 and integer labels."""
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def build_iris_estimator() -> LogisticRegression:
    """The fitted iris classifier shared by the ``iris`` and ``iris_sklearn`` models."""
    x, y = iris_data()
    return LogisticRegression(max_iter=1000).fit(x, y)


def build_digits_estimator() -> MLPClassifier:
    """A deliberately wide MLP on digits, trained for a few epochs only (accuracy is secondary)."""
    x, y = digits_data()
    clf = MLPClassifier(hidden_layer_sizes=DIGITS_HIDDEN, max_iter=DIGITS_MAX_ITER, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        clf.fit(x, y)
    return clf


def rename_value(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename a graph value everywhere it is produced or consumed."""
    graph = model.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def classifier_to_onnx(clf: ClassifierMixin, n_features: int) -> onnx.ModelProto:
    """Convert to ONNX with input ``input-0`` and outputs ``label`` (int64) and ``probabilities``."""
    model: onnx.ModelProto = to_onnx(
        clf,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(clf): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    # skl2onnx sanitises "input-0" to "input_0"; restore the name clients use.
    for value in model.graph.input:
        if value.name != INPUT_NAME:
            rename_value(model, value.name, INPUT_NAME)
    for value, wanted in zip(list(model.graph.output), OUTPUT_NAMES, strict=True):
        if value.name != wanted:
            rename_value(model, value.name, wanted)
    onnx.checker.check_model(model)
    return model


def ort_session(path: Path) -> ort.InferenceSession:
    """A single-threaded CPU session, as used for verification and timing."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_onnx(path: Path, clf: ClassifierMixin, x: np.ndarray) -> None:
    """Check names, dtypes and shapes, and that ONNX agrees with scikit-learn."""
    session = ort_session(path)
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    label, proba = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    n_classes = len(clf.classes_)
    assert label.dtype == np.int64 and label.shape == (len(x),), (label.dtype, label.shape)
    assert proba.dtype == np.float32 and proba.shape == (len(x), n_classes), (proba.dtype, proba.shape)
    agreement = float(np.mean(label == clf.predict(x)))
    assert agreement >= 0.99, f"ONNX/sklearn label agreement {agreement:.3f}"
    np.testing.assert_allclose(proba, clf.predict_proba(x), atol=1e-4)


def us_per_row(session: ort.InferenceSession, x: np.ndarray, seconds: float = 1.0) -> float:
    """Best-of-5 mean latency per row for repeated runs on the batch ``x``."""
    feed = {INPUT_NAME: x}
    for _ in range(20):
        session.run(None, feed)
    best = float("inf")
    for _ in range(5):
        runs, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            session.run(None, feed)
            runs += 1
        best = min(best, elapsed / runs / len(x) * 1e6)
    return best


def save_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary sibling so an interrupted build leaves no partial artefact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    save_atomic(path, lambda tmp: onnx.save_model(model, tmp))


def build_iris(path: Path) -> None:
    clf = build_iris_estimator()
    x, y = iris_data()
    save_onnx(classifier_to_onnx(clf, x.shape[1]), path)
    verify_onnx(path, clf, x)
    print(f"  train accuracy {clf.score(x, y):.3f}")


def build_iris_sklearn(path: Path) -> None:
    clf = build_iris_estimator()
    save_atomic(path, lambda tmp: sio.dump(clf, tmp))
    untrusted = sio.get_untrusted_types(file=path)
    assert not untrusted, f"skops file needs trusted types: {untrusted}"


def build_digits_mlp(path: Path) -> None:
    clf = build_digits_estimator()
    x, y = digits_data()
    save_onnx(classifier_to_onnx(clf, x.shape[1]), path)
    verify_onnx(path, clf, x)
    session = ort_session(path)
    print(f"  train accuracy {clf.score(x, y):.3f}")
    print(
        f"  onnxruntime (1 thread): batch 1 {us_per_row(session, x[:1]):.1f} µs/row, "
        f"batch 32 {us_per_row(session, x[:32]):.1f} µs/row"
    )


def build_iris_profile(path: Path) -> None:
    """The drift reference of iris version 1: its training inputs and the classifier's predictions on them
    (what ``modelserve profile iris iris_train.npy --labels iris_predictions.npy`` writes), and those two
    arrays under examples/data for trying the command."""
    from modelserve.observability.drift_profile import Profile

    clf = build_iris_estimator()
    x, _ = iris_data()
    predictions = clf.predict(x)
    data = path.parent.parent.parent / "data"
    data.mkdir(exist_ok=True)
    np.save(data / "iris_train.npy", x)
    np.save(data / "iris_predictions.npy", predictions)
    profile = Profile.build(
        x,
        model="iris",
        version="1",
        input_name=INPUT_NAME,
        feature_names=["sepal_length", "sepal_width", "petal_length", "petal_width"],
        labels=predictions,
        prediction_output="label",
    )
    profile.save(path)


BUILDERS: list[tuple[str, str, Callable[[Path], None]]] = [
    ("iris", "1/model.onnx", build_iris),
    ("iris", "1.profile.json", build_iris_profile),
    ("iris_sklearn", "1/model.skops", build_iris_sklearn),
    ("digits_mlp", "1/model.onnx", build_digits_mlp),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model repository directory")
    parser.add_argument("--force", action="store_true", help="rebuild artefacts that already exist")
    args = parser.parse_args(argv)
    for name, artefact, build in BUILDERS:
        path = args.out / name / artefact
        if path.exists() and not args.force:
            print(f"{name}: exists, skipped ({path})")
            continue
        start = time.perf_counter()
        print(f"{name}: building {path}")
        build(path)
        print(f"  done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
