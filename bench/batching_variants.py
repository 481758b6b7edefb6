"""The variants ``run_batching.py`` measures and the model repositories they are served from.

One model per repository under ``.bench/batching/repos/`` (the ONNX file hard-linked from
``examples/models``, ``config.pbtxt`` written here with the variant's ``dynamic_batching`` and batch policy)
and MLServer's under ``.bench/batching/mlserver-models/``; :func:`spec_for` turns a variant and its
repository into the server to start.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlserver_repo
import numpy as np
from common import (
    ROOT,
    ServerSpec,
    mlserver_spec,
    modelserve_spec,
)

EXAMPLES = ROOT / "examples" / "models"
WORK = ROOT / ".bench" / "batching"
DIGITS = "digits_mlp"


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    server: str  # "modelserve" or "mlserver"
    model: str
    batched: bool


VARIANTS = {
    v.key: v
    for v in (
        Variant("none", "modelserve digits_mlp, no batching", "modelserve", DIGITS, batched=False),
        Variant("adaptive", "modelserve digits_mlp, batching: adaptive", "modelserve", DIGITS, batched=True),
        Variant("triton", "modelserve digits_mlp, batching: triton", "modelserve", DIGITS, batched=True),
        Variant("triton-pref", "modelserve digits_mlp, batching: triton + preferred", "modelserve", DIGITS, True),
        Variant("mlserver", "MLServer digits MLP (sklearn), adaptive batching", "mlserver", DIGITS, batched=True),
        Variant("iris", "modelserve iris, no batching", "modelserve", "iris", batched=False),
    )
}
MODELSERVE_BATCHED = ("adaptive", "triton", "triton-pref")


# -- repositories ---------------------------------------------------------------------------------------


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def digits_config(key: str, args: argparse.Namespace) -> str:
    """The shipped config.pbtxt, plus the batching settings of variant key."""
    shipped = (EXAMPLES / DIGITS / "config.pbtxt").read_text()
    delay = f"max_queue_delay_microseconds: {args.delay_us}"
    preferred = ", ".join(str(size) for size in args.preferred)
    blocks = {
        "none": None,
        "adaptive": ("dynamic_batching { }", "adaptive"),
        "triton": (f"dynamic_batching {{ {delay} }}", "triton"),
        "triton-pref": (f"dynamic_batching {{ {delay} preferred_batch_size: [ {preferred} ] }}", "triton"),
    }
    block = blocks[key]
    head = f"# Written by bench/run_batching.py (variant '{key}') from examples/models/{DIGITS}/config.pbtxt.\n"
    if block is None:
        return head + shipped
    batching, policy = block
    param = f'parameters {{ key: "batch_policy" value: {{ string_value: "{policy}" }} }}'
    return head + shipped.rstrip("\n") + f"\n{batching}\n{param}\n"


def shipped_max_batch_size() -> int:
    match = re.search(r"^max_batch_size:\s*(\d+)", (EXAMPLES / DIGITS / "config.pbtxt").read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"no max_batch_size in {EXAMPLES / DIGITS / 'config.pbtxt'}")
    return int(match.group(1))


def build_modelserve_repo(variant: Variant, args: argparse.Namespace) -> Path:
    """A one-model repository for variant under .bench/batching/repos/<key>/ (rewritten every run)."""
    repo = WORK / "repos" / variant.key
    shutil.rmtree(repo, ignore_errors=True)
    src = EXAMPLES / variant.model
    onnx_file = src / "1" / "model.onnx"
    if not onnx_file.exists():
        raise SystemExit(f"missing {onnx_file}: run `make examples`")
    link_or_copy(onnx_file, repo / variant.model / "1" / "model.onnx")
    config = (src / "config.pbtxt").read_text() if variant.model != DIGITS else digits_config(variant.key, args)
    (repo / variant.model / "config.pbtxt").write_text(config)
    return repo


def build_models_module() -> Any:
    module = mlserver_repo.load_build_models()
    if module is None or not hasattr(module, "build_digits_estimator"):
        raise SystemExit(f"cannot use {mlserver_repo.BUILD_MODELS} (needs build_digits_estimator)")
    return module


def build_mlserver_repo(args: argparse.Namespace) -> Path:
    """MLServer's repository: the digits MLPClassifier as built by examples/build_models.py, joblib-dumped,
    after checking that it has the weights of the ONNX file modelserve serves."""
    bm = build_models_module()
    started = time.monotonic()
    clf = bm.build_digits_estimator()
    x, _ = bm.digits_data()
    onnx_file = EXAMPLES / DIGITS / "1" / "model.onnx"
    _, proba = bm.ort_session(onnx_file).run(None, {bm.INPUT_NAME: x[:256]})
    np.testing.assert_allclose(proba, clf.predict_proba(x[:256]), atol=1e-4)
    repo = WORK / "mlserver-models"
    shutil.rmtree(repo, ignore_errors=True)
    settings = {
        "name": DIGITS,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "max_batch_size": shipped_max_batch_size(),
        "max_batch_time": args.mlserver_batch_time,
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, x.shape[1]]}],
        "outputs": [{"name": "predict_proba", "datatype": "FP32", "shape": [-1, len(clf.classes_)]}],
        "parameters": {"uri": "./model.joblib", "version": "1"},
    }
    mlserver_repo.write_model(repo, clf, x[:64], settings)
    print(f"mlserver repo: {repo} (sklearn estimator matches {onnx_file.name}; {time.monotonic() - started:.1f} s)")
    return repo


def build_repo(variant: Variant, args: argparse.Namespace) -> Path:
    return build_mlserver_repo(args) if variant.server == "mlserver" else build_modelserve_repo(variant, args)


def spec_for(variant: Variant, repo: Path, name: str) -> ServerSpec:
    """A fresh spec (new free ports) for one start of variant's server; name prefixes its files."""
    if variant.server == "mlserver":
        spec = mlserver_spec(variant.model, repo=repo, name=name)
        # One BLAS thread: the server has one pinned core, as modelserve's one intra-op thread.
        return dataclasses.replace(spec, env={**spec.env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    return modelserve_spec(variant.model, repo=repo, name=name)


# -- statistics ----------------------------------------------------------------------------------------
