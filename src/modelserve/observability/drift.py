"""Input drift: served rows compared window by window with each version's reference profile (PSI, KS).

A version takes part once ``<model>/<version>.profile.json`` exists (``modelserve profile``); the profile
is read on the drift thread when the version's first request arrives, and looked for again every
``_RECHECK_S`` seconds while absent, so a profile written next to a running server is picked up. Rows of
the profiled input are gathered until ``window_rows`` are in; then each feature's PSI (and KS for
continuous features) against the reference is computed, and the predicted-class PSI when the profile has a
class distribution. A window whose largest feature PSI exceeds the threshold is a drift event: logged,
counted, and kept in a short history for the dashboard and alerts.

The request path only makes a dict lookup, a random draw and a ``deque.append`` (``handoff.py``); when the
drift thread falls behind, requests are skipped (counted) rather than slowed.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelserve.core.clock import wall_time_ms
from modelserve.observability.divergence import bin_counts, ks_two_sample, psi
from modelserve.observability.drift_profile import Profile, ProfileError, profile_path
from modelserve.observability.drift_results import DriftWindowResult, FeatureDrift
from modelserve.observability.handoff import Handoff
from modelserve.observability.observation import Observation

__all__ = ["DriftCounts", "DriftMonitor", "VersionDrift"]

log = logging.getLogger(__name__)

_RECHECK_S = 10.0
_EVENT_HISTORY = 100
_POLL_S = 0.05


@dataclass(slots=True)
class DriftCounts:
    """Per version: completed windows, drift events, and observations whose input did not fit the profile."""

    windows: int = 0
    events: int = 0
    mismatched: int = 0


@dataclass(slots=True)
class VersionDrift:
    """The open window of one version: rows gathered so far, compared when ``window_rows`` are in."""

    model: str
    version: str
    profile: Profile
    window_rows: int
    psi_threshold: float
    window: int = 0
    _rows: list[np.ndarray] = field(default_factory=list)
    _row_count: int = 0
    _classes: list[np.ndarray] = field(default_factory=list)

    def add(self, observation: Observation) -> list[DriftWindowResult] | None:
        """Adds the observation's rows; returns the windows it completed, or None when the input does not fit
        the profile (a missing input, a non-numeric one, or a size that is not a multiple of the features)."""
        rows = self._rows_of(observation)
        if rows is None:
            return None
        classes = self._classes_of(observation)
        if classes is not None:
            self._classes.append(classes)
        self._rows.append(rows)
        self._row_count += len(rows)
        completed = []
        while self._row_count >= self.window_rows:
            gathered = np.concatenate(self._rows).astype(np.float64, copy=False)
            current, rest = gathered[: self.window_rows], gathered[self.window_rows :]
            self._rows = [rest] if len(rest) else []
            self._row_count = len(rest)
            predicted = np.concatenate(self._classes).astype(np.int64, copy=False) if self._classes else None
            self._classes = []
            completed.append(self._compare(current, predicted))
        return completed

    def _rows_of(self, observation: Observation) -> np.ndarray | None:
        tensor = observation.inputs.get(self.profile.input)
        if tensor is None or tensor.dtype.kind not in "fiub" or tensor.size == 0:
            return None
        width = len(self.profile.features)
        # A row is what follows the batch dimension; a 1-D tensor is one row, or rows of one value. Only a
        # whole number of values was checked before, so 64-value digits rows "fitted" a 4-feature profile
        # as 16 rows each, and PSI was computed on the wrong columns.
        fits = math.prod(tensor.shape[1:]) == width if tensor.ndim >= 2 else width in (1, tensor.size)
        if not fits:
            return None
        return tensor.reshape(-1, width)  # converted to float64 once per window, not per request

    def mismatch(self, observation: Observation) -> str:
        """Why :meth:`add` returned None for ``observation``, for the log."""
        tensor = observation.inputs.get(self.profile.input)
        if tensor is None:
            return f"the requests do not send input '{self.profile.input}', which the profile is for"
        if tensor.dtype.kind not in "fiub":
            return f"input '{self.profile.input}' is {tensor.dtype}, not numeric"
        return (
            f"input '{self.profile.input}' has shape {list(tensor.shape)}, which is not rows of the "
            f"{len(self.profile.features)} features the profile has"
        )

    def _classes_of(self, observation: Observation) -> np.ndarray | None:
        prediction = self.profile.prediction
        if prediction is None:
            return None
        output = observation.outputs.get(prediction.output)
        if output is None or output.size == 0:
            return None
        if output.dtype.kind in "iu":
            return output.reshape(-1)
        if output.dtype.kind == "f" and output.ndim >= 1:
            return np.asarray(np.argmax(output.reshape(-1, output.shape[-1]), axis=-1), dtype=np.int64)
        return None

    def _compare(self, rows: np.ndarray, predicted: np.ndarray | None) -> DriftWindowResult:
        self.window += 1
        features = []
        for index, feature in enumerate(self.profile.features):
            column = rows[:, index]
            value = psi(bin_counts(column, feature.edges), feature.proportions)
            statistic = pvalue = None
            if feature.continuous and len(feature.sample):
                statistic, pvalue = ks_two_sample(feature.sample, column)
            features.append(FeatureDrift(feature.name, value, statistic, pvalue))
        prediction_psi = None
        profile_prediction = self.profile.prediction
        if profile_prediction is not None and predicted is not None and len(predicted):
            known = np.asarray(profile_prediction.classes, dtype=np.int64)
            position = np.searchsorted(known, predicted)
            position = np.where(
                (position < len(known)) & (known[np.minimum(position, len(known) - 1)] == predicted),
                position,
                len(known),  # a class the reference never saw gets its own bin
            )
            counts = np.bincount(position, minlength=len(known) + 1)
            prediction_psi = psi(counts, np.append(profile_prediction.proportions, 0.0))
        psis = [f.psi for f in features]
        max_psi = max(psis) if psis else 0.0
        return DriftWindowResult(
            model=self.model,
            version=self.version,
            window=self.window,
            rows=len(rows),
            ended_ms=wall_time_ms(),
            features=tuple(features),
            max_psi=max_psi,
            mean_psi=float(np.mean(psis)) if psis else 0.0,
            prediction_psi=prediction_psi,
            drifted=max_psi > self.psi_threshold,
        )


class DriftMonitor:
    """Runs drift detection on its own thread; ``start()`` before use, ``stop()`` at shutdown."""

    def __init__(
        self,
        repository: Path,
        *,
        enabled: bool,
        window_rows: int,
        psi_threshold: float,
        sample_rate: float,
        queue_size: int,
        allow_symlinks: bool = False,
    ) -> None:
        self._repository = repository
        self._allow_symlinks = allow_symlinks  # repository.allow_symlinks, for the profiles' jail check
        self._enabled = enabled
        self._window_rows = window_rows
        self._psi_threshold = psi_threshold
        self._sample_rate = sample_rate
        self._handoff: Handoff[Observation] = Handoff(queue_size, _POLL_S)
        self._versions: dict[tuple[str, str], VersionDrift] = {}
        # Versions with no profile, and when to look again (read on the request path: a plain dict).
        self._absent: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], DriftWindowResult] = {}
        self._events: deque[DriftWindowResult] = deque(maxlen=_EVENT_HISTORY)
        self._counts: dict[tuple[str, str], DriftCounts] = {}
        self.skipped = 0
        self._started = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    # -- request path -----------------------------------------------------------------------------

    def wants(self, model: str, version: str) -> bool:
        if not self._enabled or (model, version) in self._absent:
            return False
        return self._sample_rate >= 1.0 or random.random() < self._sample_rate  # noqa: S311 - sampling, not security

    def submit(self, observation: Observation) -> None:
        if not self._handoff.offer(observation):
            self.skipped += 1  # approximate under races; only read for a metric

    # -- readers ----------------------------------------------------------------------------------

    def latest(self) -> list[DriftWindowResult]:
        with self._lock:
            return [self._latest[key] for key in sorted(self._latest)]

    def events(self) -> list[DriftWindowResult]:
        with self._lock:
            return list(self._events)

    def counts(self) -> dict[tuple[str, str], DriftCounts]:
        with self._lock:
            return {key: DriftCounts(c.windows, c.events, c.mismatched) for key, c in self._counts.items()}

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._enabled and not self._started:
            self._started = True
            self._handoff.start("drift", self._handle, self._forget_stale_absences)

    def stop(self, timeout_s: float = 2.0) -> None:
        if self._started:
            self._started = False
            self._handoff.stop(timeout_s)

    # -- the drift thread -------------------------------------------------------------------------

    def _handle(self, batch: list[Observation]) -> None:
        self._forget_stale_absences()
        for observation in batch:
            try:
                self._observe(observation)
            except Exception:  # a bug here must not end drift detection for every model
                log.exception(
                    "drift detection failed on a request to %s version %s", observation.model, observation.version
                )

    def _forget_stale_absences(self) -> None:
        now = time.monotonic()
        for key, recheck_at in list(self._absent.items()):
            if recheck_at <= now:
                self._absent.pop(key, None)

    def _observe(self, observation: Observation) -> None:
        key = (observation.model, observation.version)
        state = self._versions.get(key)
        if state is None:
            state = self._open(key)
            if state is None:
                return
        completed = state.add(observation)
        if completed is None:
            with self._lock:
                counts = self._counts.setdefault(key, DriftCounts())
                counts.mismatched += 1
                first = counts.mismatched == 1
            if first:  # once per version: the metric counts the rest
                log.warning(
                    "drift: model %s version %s: %s; such requests are left out of drift detection and counted "
                    "in modelserve_drift_mismatched_requests_total: rebuild the profile with 'modelserve profile'",
                    observation.model,
                    observation.version,
                    state.mismatch(observation),
                )
            return
        with self._lock:
            counts = self._counts.setdefault(key, DriftCounts())
            for result in completed:
                counts.windows += 1
                self._latest[key] = result
                if result.drifted:
                    counts.events += 1
                    self._events.append(result)
        for result in completed:
            if result.drifted:
                worst = max(result.features, key=lambda f: f.psi)
                log.warning(
                    "drift: model %s version %s window %d: PSI %.3f on %s (threshold %.2f)",
                    result.model,
                    result.version,
                    result.window,
                    worst.psi,
                    worst.feature,
                    self._psi_threshold,
                )

    def _open(self, key: tuple[str, str]) -> VersionDrift | None:
        model, version = key
        path = profile_path(self._repository / model, version)
        if not path.is_file():
            self._absent[key] = time.monotonic() + _RECHECK_S
            return None
        try:
            profile = Profile.load(path, repository=self._repository, allow_symlinks=self._allow_symlinks)
        except ProfileError as exc:
            log.warning("drift: %s; drift detection is off for this version until it is fixed", exc)
            self._absent[key] = time.monotonic() + _RECHECK_S
            return None
        state = VersionDrift(model, version, profile, self._window_rows, self._psi_threshold)
        self._versions[key] = state
        log.info(
            "drift: model %s version %s compared with %s (%d features)", model, version, path, len(profile.features)
        )
        return state
