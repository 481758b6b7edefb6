"""A model version's reference profile: what its training inputs looked like, feature by feature.

Built once from training data (``modelserve profile <model> train.npy``) and stored beside the version as
``<model>/<version>.profile.json`` (a file next to the version folder, so a version's SHA256SUMS manifest
and its files stay untouched). Per feature: quantile bin edges and the reference proportion in each bin
(for PSI) and, for continuous features, a sorted sample of at most ``KS_SAMPLE`` values (for KS). A
feature with few distinct values is categorical: one bin per value, no KS. Optionally the class
distribution of the predictions (or labels) on the same data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.core.errors import ModelLoadError
from modelserve.core.paths import inside
from modelserve.observability.divergence import bin_counts

__all__ = [
    "FORMAT",
    "KS_SAMPLE",
    "FeatureProfile",
    "PredictionProfile",
    "Profile",
    "ProfileError",
    "features_per_row",
    "profile_path",
]

FORMAT = "modelserve-drift-profile/1"
KS_SAMPLE = 2000
_CATEGORICAL_MAX_VALUES = 10
_MAX_FEATURES = 4096


class ProfileError(Exception):
    """A profile cannot be built, read or applied; the message says why and what to do."""


def profile_path(model_dir: Path, version: str) -> Path:
    """Where ``version``'s profile lives: ``<model_dir>/<version>.profile.json``. Only names the path;
    :meth:`Profile.load` checks that it stays inside the repository before reading it."""
    return model_dir / f"{version}.profile.json"


def features_per_row(dims: Sequence[int], *, batched: bool) -> int | None:
    """How many values one row of an input holds, from its config ``dims``: all of them when the model
    batches (``max_batch_size`` > 0: the batch dimension is not in ``dims``), else all but the first of two
    or more (``[-1, 4]``: rows of 4) or the one dimension (``[4]``: one row). None when a row's size is
    variable (a -1 in it), so it cannot be checked."""
    row = list(dims) if batched or len(dims) < 2 else list(dims[1:])
    if any(d < 0 for d in row):
        return None
    return math.prod(row)


@dataclass(frozen=True, slots=True)
class FeatureProfile:
    name: str
    continuous: bool
    edges: np.ndarray  # inner bin edges, ascending
    proportions: np.ndarray  # len(edges) + 1
    sample: np.ndarray  # sorted reference values for KS (empty for categorical features)


@dataclass(frozen=True, slots=True)
class PredictionProfile:
    output: str
    classes: tuple[int, ...]
    proportions: np.ndarray


@dataclass(frozen=True, slots=True)
class Profile:
    model: str
    version: str
    input: str
    rows: int
    features: tuple[FeatureProfile, ...]
    prediction: PredictionProfile | None

    @classmethod
    def build(
        cls,
        data: np.ndarray,
        *,
        model: str,
        version: str,
        input_name: str,
        feature_names: list[str] | None = None,
        bins: int = 10,
        labels: np.ndarray | None = None,
        prediction_output: str = "",
    ) -> Profile:
        if data.ndim == 1:
            data = data.reshape(-1, 1)
        if data.ndim != 2 or data.shape[0] < 2:
            raise ProfileError(f"training data must be a 2-D array [rows, features] with rows >= 2, got {data.shape}")
        if not np.issubdtype(data.dtype, np.number):
            raise ProfileError(f"training data must be numeric, got dtype {data.dtype}")
        if data.shape[1] > _MAX_FEATURES:
            raise ProfileError(f"at most {_MAX_FEATURES} features per profile, got {data.shape[1]}")
        if not 2 <= bins <= 100:
            raise ProfileError(f"bins must be between 2 and 100, got {bins}")
        values = data.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ProfileError("training data holds NaN or infinite values; clean them before profiling")
        count = values.shape[1]
        names = feature_names or [f"{input_name}[{i}]" for i in range(count)]
        if len(names) != count:
            raise ProfileError(f"{len(names)} feature names given for {count} features")
        features = tuple(_feature(names[i], values[:, i], bins) for i in range(count))
        prediction = None
        if labels is not None:
            classes, label_counts = np.unique(np.asarray(labels).reshape(-1).astype(np.int64), return_counts=True)
            prediction = PredictionProfile(
                output=prediction_output,
                classes=tuple(int(c) for c in classes),
                proportions=label_counts / label_counts.sum(),
            )
        return cls(model, version, input_name, values.shape[0], features, prediction)

    def check_fits(self, dims: Sequence[int], *, batched: bool) -> None:
        """Refuse a profile whose feature count is not the size of a row of its input, as ``config.pbtxt``
        declares it (``dims``; ``batched``: ``max_batch_size`` > 0). A row of variable size is not checked.
        Raises :class:`ProfileError` naming both counts and the shape the data should have."""
        expected = features_per_row(dims, batched=batched)
        if expected is not None and expected != len(self.features):
            raise ProfileError(
                f"model '{self.model}' input '{self.input}' has {expected} values a row (dims {list(dims)}), but "
                f"the data has {len(self.features)} features (columns); give data of shape [rows, {expected}]"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "rows": self.rows,
            "features": [
                {
                    "name": f.name,
                    "kind": "continuous" if f.continuous else "categorical",
                    "edges": f.edges.tolist(),
                    "proportions": f.proportions.tolist(),
                    "sample": f.sample.tolist(),
                }
                for f in self.features
            ],
            "prediction": None
            if self.prediction is None
            else {
                "output": self.prediction.output,
                "classes": list(self.prediction.classes),
                "proportions": self.prediction.proportions.tolist(),
            },
        }

    def save(self, path: Path) -> None:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.to_json()), encoding="utf-8")
        temporary.replace(path)  # readers never see half a profile

    @classmethod
    def load(cls, path: Path, *, repository: Path | None = None, allow_symlinks: bool = False) -> Profile:
        """Read the profile at ``path`` (a :func:`profile_path`), once it passes the repository's jail check
        (``core/paths.py``): ``repository`` is the root it must stay in (default: the folder above the
        model folder, where :func:`profile_path` puts it), ``allow_symlinks`` is
        ``repository.allow_symlinks``. Raises :class:`ProfileError` saying why and what to do. Blocking."""
        try:
            checked = inside(
                path.parent.parent if repository is None else repository,
                path,
                what="drift profile",
                allow_symlinks=allow_symlinks,
            )
        except ModelLoadError as exc:
            raise ProfileError(f"{exc.message}; drift detection stays off for this version") from exc
        try:
            document = json.loads(checked.read_text(encoding="utf-8"))
            if document.get("format") != FORMAT:
                raise ProfileError(f"{path}: not a {FORMAT} file; rebuild it with 'modelserve profile'")
            features = tuple(
                FeatureProfile(
                    name=str(f["name"]),
                    continuous=f["kind"] == "continuous",
                    edges=np.asarray(f["edges"], dtype=np.float64),
                    proportions=np.asarray(f["proportions"], dtype=np.float64),
                    sample=np.sort(np.asarray(f["sample"], dtype=np.float64)),
                )
                for f in document["features"]
            )
            for f in features:
                if len(f.proportions) != len(f.edges) + 1:
                    raise ProfileError(
                        f"{path}: feature {f.name} has {len(f.edges)} edges and "
                        f"{len(f.proportions)} proportions (want edges + 1)"
                    )
            raw_prediction = document.get("prediction")
            prediction = None
            if raw_prediction:
                prediction = PredictionProfile(
                    output=str(raw_prediction["output"]),
                    classes=tuple(int(c) for c in raw_prediction["classes"]),
                    proportions=np.asarray(raw_prediction["proportions"], dtype=np.float64),
                )
            return cls(
                model=str(document["model"]),
                version=str(document["version"]),
                input=str(document["input"]),
                rows=int(document["rows"]),
                features=features,
                prediction=prediction,
            )
        except ProfileError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProfileError(
                f"{path}: unreadable drift profile ({exc}); rebuild it with 'modelserve profile'"
            ) from exc


def _feature(name: str, column: np.ndarray, bins: int) -> FeatureProfile:
    distinct = np.unique(column)
    if len(distinct) <= _CATEGORICAL_MAX_VALUES:
        # One bin per value: edges halfway between neighbours, so values fall in their own bin.
        edges = (distinct[:-1] + distinct[1:]) / 2
        counts = bin_counts(column, edges)
        return FeatureProfile(name, False, edges, counts / counts.sum(), np.empty(0))
    quantiles = np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique(quantiles)
    counts = bin_counts(column, edges)
    ordered = np.sort(column)
    if len(ordered) > KS_SAMPLE:
        ordered = np.quantile(ordered, np.linspace(0, 1, KS_SAMPLE))
    return FeatureProfile(name, True, edges, counts / counts.sum(), ordered)
