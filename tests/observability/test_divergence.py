"""PSI and KS against scipy on fixed and generated data, and the drift window against simulated streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import rel_entr
from scipy.stats import entropy, ks_2samp

from modelserve.observability.divergence import PSI_FLOOR, bin_counts, ks_two_sample, psi
from modelserve.observability.drift import VersionDrift
from modelserve.observability.drift_profile import Profile
from modelserve.observability.observation import Observation


def test_psi_is_the_symmetrised_kl_divergence_scipy_computes() -> None:
    reference = np.array([0.1, 0.2, 0.3, 0.4])
    live = np.array([0.15, 0.25, 0.25, 0.35])
    assert psi(live, reference) == pytest.approx(entropy(live, reference) + entropy(reference, live), rel=1e-12)
    # The textbook form too, written out.
    assert psi(live, reference) == pytest.approx(float(np.sum((live - reference) * np.log(live / reference))))
    # Counts and proportions give the same value.
    assert psi(live * 1000, reference * 50) == pytest.approx(psi(live, reference), rel=1e-12)


def test_psi_floors_empty_bins_instead_of_going_infinite() -> None:
    live = np.array([0, 5, 5])
    reference = np.array([4, 3, 3])
    floored = np.maximum(live / live.sum(), PSI_FLOOR)
    floored /= floored.sum()
    expected = float(np.sum(rel_entr(floored, reference / 10) + rel_entr(reference / 10, floored)))
    assert psi(live, reference) == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(psi(live, reference))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 1000), min_size=2, max_size=20).flatmap(
        lambda a: st.tuples(st.just(a), st.lists(st.integers(1, 1000), min_size=len(a), max_size=len(a)))
    )
)
def test_psi_matches_scipy_for_any_nonempty_bins(pair: tuple[list[int], list[int]]) -> None:
    live, reference = (np.array(v, dtype=np.float64) for v in pair)
    a, e = live / live.sum(), reference / reference.sum()
    if min(a.min(), e.min()) < PSI_FLOOR:
        return  # the floor changes such bins on purpose; covered by the test above
    assert psi(live, reference) == pytest.approx(entropy(a, e) + entropy(e, a), rel=1e-9, abs=1e-12)


def test_ks_statistic_and_pvalue_match_scipy_on_fixed_data() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(size=800)
    for live in (rng.normal(size=500), rng.normal(0.3, 1.0, size=500), rng.uniform(-1, 1, size=300)):
        statistic, pvalue = ks_two_sample(np.sort(reference), live)
        expected = ks_2samp(reference, live, method="asymp")
        assert statistic == pytest.approx(expected.statistic, abs=1e-12)
        assert pvalue == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-15)
        # The default (exact for these sizes) agrees on the statistic; p-values differ only slightly.
        assert statistic == pytest.approx(ks_2samp(reference, live).statistic, abs=1e-12)


def test_ks_with_ties_matches_scipy() -> None:
    reference = np.repeat(np.arange(10.0), 30)
    live = np.repeat(np.arange(2.0, 12.0), 20)
    statistic, pvalue = ks_two_sample(np.sort(reference), live)
    expected = ks_2samp(reference, live, method="asymp")
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert pvalue == pytest.approx(expected.pvalue, rel=1e-9)


def test_bins_are_closed_on_the_right() -> None:
    edges = np.array([1.0, 2.0])
    assert bin_counts(np.array([0.5, 1.0, 1.5, 2.0, 2.5]), edges).tolist() == [2, 2, 1]


def _observation(rows: np.ndarray) -> Observation:
    return Observation("m", "1", "", None, {"x": rows.astype(np.float32)}, {}, {}, 0, 0)


def _stream(profile: Profile, batches: list[np.ndarray], window_rows: int) -> list[bool]:
    state = VersionDrift("m", "1", profile, window_rows, psi_threshold=0.2)
    drifted = []
    for batch in batches:
        completed = state.add(_observation(batch))
        assert completed is not None
        drifted += [result.drifted for result in completed]
    return drifted


def test_a_stationary_stream_stays_quiet_and_a_shifted_one_triggers_in_its_first_window() -> None:
    rng = np.random.default_rng(11)
    training = rng.normal(size=(20_000, 3))
    profile = Profile.build(training, model="m", version="1", input_name="x")
    window = 500
    # 40 windows from the training distribution, in batches of 25 rows: with 10 bins and 500 rows the PSI
    # of a window is ~ (bins - 1) / rows = 0.018 on average; 0.2 is far in its tail.
    quiet = _stream(profile, [rng.normal(size=(25, 3)) for _ in range(40 * window // 25)], window)
    assert len(quiet) == 40 and not any(quiet)
    # The same stream with one feature shifted by 0.75 standard deviations (PSI 0.57 on average, sd 0.08,
    # lowest 0.41 in 200 simulated windows): the first window made only of shifted rows must drift, and every one after it.
    shifted = [rng.normal(size=(25, 3)) + np.array([0.75, 0.0, 0.0]) for _ in range(10 * window // 25)]
    results = _stream(profile, shifted, window)
    assert results == [True] * 10


def test_a_window_straddling_a_batch_boundary_counts_every_row_once() -> None:
    profile = Profile.build(np.arange(100.0).reshape(-1, 1), model="m", version="1", input_name="x")
    state = VersionDrift("m", "1", profile, window_rows=30, psi_threshold=0.2)
    completed = []
    for _ in range(7):
        out = state.add(_observation(np.arange(13.0).reshape(-1, 1)))
        assert out is not None
        completed += out
    assert [r.rows for r in completed] == [30, 30, 30]  # 91 rows: three windows, one row left open
    assert [r.window for r in completed] == [1, 2, 3]


def test_rows_that_do_not_fit_the_profile_are_refused_not_misread() -> None:
    profile = Profile.build(np.ones((10, 3)) * np.arange(10.0)[:, None], model="m", version="1", input_name="x")
    state = VersionDrift("m", "1", profile, window_rows=10, psi_threshold=0.2)
    assert state.add(_observation(np.ones((2, 2)))) is None  # 4 values for 3 features
    assert state.add(Observation("m", "1", "", None, {"other": np.ones((1, 3))}, {}, {}, 0, 0)) is None
    assert (
        state.add(Observation("m", "1", "", None, {"x": np.array([b"a", b"b", b"c"], dtype=object)}, {}, {}, 0, 0))
        is None
    )


def test_predicted_class_drift() -> None:
    rng = np.random.default_rng(3)
    training = rng.normal(size=(3000, 2))
    labels = rng.integers(0, 3, size=3000)
    profile = Profile.build(training, model="m", version="1", input_name="x", labels=labels, prediction_output="label")
    state = VersionDrift("m", "1", profile, window_rows=300, psi_threshold=0.2)
    balanced = Observation(
        "m", "1", "", None, {"x": rng.normal(size=(300, 2))}, {"label": rng.integers(0, 3, 300)}, {}, 0, 0
    )
    (same,) = state.add(balanced) or []
    assert same.prediction_psi is not None and same.prediction_psi < 0.05
    skewed = Observation("m", "1", "", None, {"x": rng.normal(size=(300, 2))}, {"label": np.full(300, 2)}, {}, 0, 0)
    (moved,) = state.add(skewed) or []
    assert moved.prediction_psi is not None and moved.prediction_psi > 1.0
    assert not moved.drifted  # inputs did not move: the event is about inputs; the gauge shows predictions
