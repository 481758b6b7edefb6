"""Sticky bucket assignment (``routing/assignment.py``): the documented hash, shares within 0.5 pp of the
weights over 100,000 unit ids, the minimum movement when weights change, and the persisted table's round
trip. Pure: no server."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelserve.routing.assignment import BUCKETS, BucketTable, bucket_counts, bucket_of, rebalance

UNITS = 100_000
# Fixed ids: a run is reproducible, and a failure names a real regression rather than a bad draw. The
# issue's bounds (10.1 %, 20.1 %) sit about one standard error of a 100,000-id sample above the exact
# bucket movement (10 %, 20 %: asserted exactly below), so a fresh random sample would fail some runs by
# chance alone; these ids measure 10.05 % and 19.87 % (another sample, seeded, measured 9.97 % and 20.12 %).
IDS = [f"user-{i}" for i in range(UNITS)]


def shares(table: BucketTable, salt: str) -> dict[str, float]:
    counts: dict[str, int] = {}
    for unit in IDS:
        arm = table.arm(bucket_of(salt, unit))
        counts[arm] = counts.get(arm, 0) + 1
    return {arm: count / UNITS * 100 for arm, count in counts.items()}


def moved(before: BucketTable, after: BucketTable, salt: str) -> float:
    """Percent of the unit ids whose arm changed."""
    changed = sum(before.arm(b) != after.arm(b) for b in (bucket_of(salt, unit) for unit in IDS))
    return changed / UNITS * 100


def test_the_hash_is_the_documented_one() -> None:
    digest = hashlib.sha256(b"iris\x00user-42").digest()
    assert bucket_of("iris", "user-42") == int.from_bytes(digest[:8], "big") % 10_000
    assert bucket_of("iris", "user-42") == bucket_of("iris", "user-42")
    # A new salt reshuffles: almost every unit lands elsewhere.
    assert sum(bucket_of("iris", u) != bucket_of("other-salt", u) for u in IDS[:1000]) > 990


@given(st.text(max_size=64), st.text(max_size=200))
def test_every_bucket_is_the_documented_hash_of_any_text(salt: str, unit: str) -> None:
    digest = hashlib.sha256(salt.encode("utf-8") + b"\x00" + unit.encode("utf-8")).digest()
    assert bucket_of(salt, unit) == int.from_bytes(digest[:8], "big") % BUCKETS


@pytest.mark.parametrize(
    "weights",
    [[("control", 90.0), ("treatment", 10.0)], [("a", 80.0), ("b", 10.0), ("c", 10.0)], [("a", 33.3), ("b", 66.7)]],
)
def test_each_arm_gets_its_weight_within_half_a_point(weights: list[tuple[str, float]]) -> None:
    table = BucketTable.fresh(weights)
    measured = shares(table, "iris")
    for arm, weight in weights:
        assert abs(measured[arm] - weight) <= 0.5, (arm, measured[arm], weight)


def test_largest_remainder_rounding_sums_to_every_bucket() -> None:
    counts = bucket_counts([("a", 33.333), ("b", 33.333), ("c", 33.334)])
    assert sum(counts.values()) == BUCKETS
    assert counts == {"a": 3333, "b": 3333, "c": 3334}


def test_90_10_to_80_20_moves_only_the_difference() -> None:
    before = BucketTable.fresh([("control", 90.0), ("treatment", 10.0)])
    after = rebalance(before, [("control", 80.0), ("treatment", 20.0)])
    assert sum(a != b for a, b in zip(before.owners, after.owners, strict=True)) == 1_000  # exactly 10 %
    assert moved(before, after, "iris") <= 10.1


def test_80_10_10_to_60_20_20_moves_20_percent_not_30() -> None:
    before = BucketTable.fresh([("a", 80.0), ("b", 10.0), ("c", 10.0)])
    after = rebalance(before, [("a", 60.0), ("b", 20.0), ("c", 20.0)])
    assert sum(a != b for a, b in zip(before.owners, after.owners, strict=True)) == 2_000
    assert moved(before, after, "iris") <= 20.1
    assert shares(after, "iris")["b"] == pytest.approx(20.0, abs=0.5)


def test_removed_arms_release_all_and_new_arms_take() -> None:
    before = BucketTable.fresh([("a", 50.0), ("b", 50.0)])
    after = rebalance(before, [("a", 50.0), ("c", 50.0)])
    assert after.counts() == {"a": 5_000, "c": 5_000}
    assert all(x == y for x, y in zip(before.owners, after.owners, strict=True) if x == "a")


def test_a_fresh_table_is_deterministic_and_round_trips_as_ranges() -> None:
    table = rebalance(BucketTable.fresh([("a", 70.0), ("b", 30.0)]), [("a", 40.0), ("b", 35.0), ("c", 25.0)])
    assert BucketTable.fresh([("a", 70.0), ("b", 30.0)]) == BucketTable.fresh([("a", 70.0), ("b", 30.0)])
    ranges = table.ranges()
    assert sum(len(spans) for spans in ranges.values()) <= 6  # run-length: a few ranges, not 10,000 entries
    assert BucketTable.from_ranges(ranges) == table


def test_ranges_that_do_not_cover_every_bucket_are_refused() -> None:
    with pytest.raises(ValueError, match=r"buckets have no arm"):
        BucketTable.from_ranges({"a": [[0, 9_000]]})
    with pytest.raises(ValueError, match=r"owned by both"):
        BucketTable.from_ranges({"a": [[0, 9_000]], "b": [[8_000, 10_000]]})


weight_lists = st.lists(st.integers(0, 100), min_size=1, max_size=6).filter(lambda ws: sum(ws) > 0)


@given(weight_lists, weight_lists)
def test_rebalancing_moves_the_minimum_and_meets_the_new_counts(old: list[int], new: list[int]) -> None:
    def named(ws: list[int]) -> list[tuple[str, float]]:
        total = sum(ws)
        return [(f"arm{i}", w * 100 / total) for i, w in enumerate(ws)]

    before = BucketTable.fresh(named(old))
    after = rebalance(before, named(new))
    wanted = bucket_counts(named(new))
    assert after.counts() == {arm: count for arm, count in wanted.items() if count}
    old_counts = before.counts()
    minimum = sum(max(0, count - wanted.get(arm, 0)) for arm, count in old_counts.items())
    assert sum(a != b for a, b in zip(before.owners, after.owners, strict=True)) == minimum
