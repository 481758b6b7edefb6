"""The two drift statistics, as plain functions over numpy arrays.

PSI (population stability index) over fixed bins: ``sum((a - e) * ln(a / e))`` for live proportions ``a``
and reference proportions ``e``; it equals the symmetrised Kullback-Leibler divergence
``KL(a||e) + KL(e||a)``. Empty bins would make it infinite, so both sides are floored at ``PSI_FLOOR``
and renormalised first (the usual practice; the floor is stated so results can be reproduced).
Rule of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 significant shift.

KS (two-sample Kolmogorov-Smirnov) for continuous features: the largest gap between the two empirical
CDFs, with the asymptotic two-sided p-value (scipy's ``ks_2samp(..., method="asymp")``, imported on first
use so the server does not pay for scipy at start-up).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PSI_FLOOR", "bin_counts", "ks_two_sample", "psi"]

PSI_FLOOR = 1e-4


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin for bins ``(-inf, e0], (e0, e1], ..., (e_last, +inf)`` (``len(edges) + 1`` bins)."""
    index = np.searchsorted(edges, values, side="left")
    return np.bincount(index, minlength=len(edges) + 1)


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    """PSI between two count or proportion vectors over the same bins."""
    a = _floored(np.asarray(actual, dtype=np.float64))
    e = _floored(np.asarray(expected, dtype=np.float64))
    return float(np.sum((a - e) * np.log(a / e)))


def _floored(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    proportions = counts / total if total > 0 else np.full_like(counts, 1.0 / len(counts))
    proportions = np.maximum(proportions, PSI_FLOOR)
    return proportions / proportions.sum()  # type: ignore[no-any-return]


def ks_two_sample(reference_sorted: np.ndarray, live: np.ndarray) -> tuple[float, float]:
    """KS statistic and asymptotic two-sided p-value; ``reference_sorted`` must be sorted ascending."""
    live_sorted = np.sort(np.asarray(live, dtype=np.float64))
    n1, n2 = len(reference_sorted), len(live_sorted)
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    points = np.concatenate([reference_sorted, live_sorted])
    cdf_reference = np.searchsorted(reference_sorted, points, side="right") / n1
    cdf_live = np.searchsorted(live_sorted, points, side="right") / n2
    statistic = float(np.max(np.abs(cdf_reference - cdf_live)))
    from scipy.stats import kstwo

    m, n = max(n1, n2), min(n1, n2)
    effective_n = round(m * n / (m + n))
    pvalue = float(np.clip(kstwo.sf(statistic, effective_n), 0.0, 1.0))
    return statistic, pvalue
