"""What drift detection reports: one result per completed window of a model version.

Kept apart from the detector so that readers (metrics, alerts, the dashboard) depend on plain values only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["DriftReader", "DriftWindowResult", "FeatureDrift"]


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One input feature in one window. KS is given for continuous features only (None otherwise)."""

    feature: str
    psi: float
    ks_statistic: float | None
    ks_pvalue: float | None


@dataclass(frozen=True, slots=True)
class DriftWindowResult:
    """A completed window of ``rows`` served rows compared with the version's reference profile.

    ``max_psi`` is the largest feature PSI, ``mean_psi`` the overall figure (mean over features);
    ``drifted`` is ``max_psi`` above the configured threshold. ``prediction_psi`` compares the predicted
    class distribution with the reference's, when the profile has one.
    """

    model: str
    version: str
    window: int
    rows: int
    ended_ms: int
    features: tuple[FeatureDrift, ...]
    max_psi: float
    mean_psi: float
    prediction_psi: float | None
    drifted: bool


class DriftReader(Protocol):
    def latest(self) -> list[DriftWindowResult]:
        """The last completed window of every version that has a reference profile."""
        ...

    def events(self) -> list[DriftWindowResult]:
        """Recent windows that drifted, oldest first (bounded)."""
        ...
