"""Triton's classification extension: ``"classification": N`` on a requested output returns, per batch
row, the top N values as BYTES ``"<value>:<index>"``, or ``"<value>:<index>:<label>"`` where the output's
``label_filename`` names that index (repository/labels.py). Values are written as Triton writes them
(C++ ``std::to_string``: six decimals for floats)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelserve.core.errors import ValidationError

__all__ = ["classify"]


def classify(array: np.ndarray, top_n: int, *, batched: bool, name: str, labels: Sequence[str] = ()) -> np.ndarray:
    """Top ``top_n`` of ``array`` per batch row (or overall when not batched), as a BYTES array; ``labels[i]``
    (when there is one, and it is not empty) names class index ``i``."""
    if top_n <= 0:
        raise ValidationError(f"output '{name}': 'classification' must be a positive integer, got {top_n}")
    if array.dtype == object or array.dtype.kind not in ("i", "u", "f", "b"):
        raise ValidationError(f"output '{name}' is not numeric and cannot be classified")
    rows = array.reshape(array.shape[0], -1) if batched and array.ndim > 0 else array.reshape(1, -1)
    count = min(top_n, rows.shape[1])
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :count]
    out = np.empty((rows.shape[0], count), dtype=object)
    for r in range(rows.shape[0]):
        for c in range(count):
            index = int(order[r, c])
            value = rows[r, index]
            text = f"{float(value):f}" if rows.dtype.kind == "f" else str(int(value))
            label = labels[index] if index < len(labels) else ""
            out[r, c] = (f"{text}:{index}:{label}" if label else f"{text}:{index}").encode()
    return out if batched else out.reshape(count)
