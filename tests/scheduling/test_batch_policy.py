"""The batch policy as a pure function: snapshots of the queue and integer "now" values, no server,
no clock, no threads. Every rule of ``modelserve.scheduling.batch_policy``'s docstring has a test here."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelserve.scheduling.batch_policy import BatchPolicy, Decision, QueuedView, decide

MS = 1_000_000  # nanoseconds
LONG = 10_000 * MS  # a delay nothing in these tests reaches by waiting


def view(rows: int, key: Hashable = "a", at: int = 0, deadline: int | None = None) -> QueuedView:
    return QueuedView(rows=rows, shape_key=key, enqueued_ns=at, deadline_ns=deadline)


def triton(max_batch_size: int = 8, delay_ns: int = LONG, preferred: tuple[int, ...] = ()) -> BatchPolicy:
    return BatchPolicy(
        max_batch_size=max_batch_size, preferred_batch_sizes=preferred, max_queue_delay_ns=delay_ns, adaptive=False
    )


def adaptive(max_batch_size: int = 8, delay_ns: int = LONG, preferred: tuple[int, ...] = ()) -> BatchPolicy:
    return BatchPolicy(
        max_batch_size=max_batch_size, preferred_batch_sizes=preferred, max_queue_delay_ns=delay_ns, adaptive=True
    )


# -- rows, not requests (BentoML #3859) ---------------------------------------------------------------


@pytest.mark.parametrize("policy", [triton(), adaptive()], ids=["triton", "adaptive"])
def test_max_batch_size_counts_rows_and_a_batch_is_full_when_the_next_entry_does_not_fit(policy: BatchPolicy) -> None:
    # 3 + 3 = 6 rows fit in 8, the third 3 would make 9: the batch is full with two requests, and runs
    # at once even though the Triton rule's delay is far away.
    entries = [view(3), view(3), view(3)]
    assert decide(entries, 0, policy, idle_instances=1) == Decision(run=(0, 1))


def test_a_batch_of_exactly_max_rows_runs_at_once_despite_a_long_delay() -> None:
    assert decide([view(4), view(4)], 0, triton(), idle_instances=1) == Decision(run=(0, 1))
    assert decide([view(8)], 0, triton(), idle_instances=1) == Decision(run=(0,))


def test_a_batch_under_max_rows_is_not_full_and_waits_the_delay() -> None:
    entries = [view(3, at=100), view(3, at=300)]
    # Due when the oldest entry has waited the delay, not the newest.
    assert decide(entries, 300, triton(delay_ns=1000), idle_instances=1) == Decision(wake_at_ns=1100)
    assert decide(entries, 1100, triton(delay_ns=1000), idle_instances=1) == Decision(run=(0, 1))


# -- Triton's rule (adaptive=False) -----------------------------------------------------------------


def test_triton_rule_a_lone_request_waits_exactly_the_delay_then_runs() -> None:
    policy = triton(delay_ns=5 * MS)
    entries = [view(1, at=7 * MS)]
    assert decide(entries, 7 * MS, policy, idle_instances=1) == Decision(wake_at_ns=12 * MS)
    assert decide(entries, 12 * MS - 1, policy, idle_instances=1) == Decision(wake_at_ns=12 * MS)
    assert decide(entries, 12 * MS, policy, idle_instances=1) == Decision(run=(0,))
    assert decide(entries, 40 * MS, policy, idle_instances=1) == Decision(run=(0,))


def test_triton_rule_with_zero_delay_runs_at_once() -> None:
    assert decide([view(1, at=5)], 5, triton(delay_ns=0), idle_instances=1) == Decision(run=(0,))


def test_triton_rule_runs_at_once_when_a_prefix_reaches_the_largest_reachable_preferred_size() -> None:
    policy = triton(preferred=(4, 2))
    # 1, 2, 3 rows queued: the prefix reaches 2 but not 4; run those two, leave the third.
    assert decide([view(1), view(1), view(1)], 0, policy, idle_instances=1) == Decision(run=(0, 1))
    # 4 queued: both 2 and 4 are reachable, the larger wins.
    assert decide([view(1)] * 5, 0, policy, idle_instances=1) == Decision(run=(0, 1, 2, 3))
    assert decide([view(2), view(2), view(2)], 0, triton(preferred=(2, 4, 6)), idle_instances=1) == Decision(
        run=(0, 1, 2)
    )


def test_triton_rule_waits_the_delay_when_no_prefix_equals_a_preferred_size() -> None:
    policy = triton(delay_ns=1000, preferred=(2, 4))
    # 3 rows, then 3 + 3 = 6: the prefixes skip over 2 and 4.
    entries = [view(3, at=10), view(3, at=20)]
    assert decide(entries, 20, policy, idle_instances=1) == Decision(wake_at_ns=1010)
    assert decide(entries, 1010, policy, idle_instances=1) == Decision(run=(0, 1))


def test_preferred_sizes_count_only_rows_of_the_leading_shape() -> None:
    policy = triton(preferred=(2,))
    entries = [view(1, "a"), view(1, "b"), view(1, "a")]
    assert decide(entries, 0, policy, idle_instances=1) == Decision(run=(0, 2))
    # The "b" rows would make 2 with the first "a", but they are never merged.
    assert decide([view(1, "a"), view(1, "b")], 0, policy, idle_instances=1) == Decision(wake_at_ns=LONG)


# -- the adaptive rule ----------------------------------------------------------------------------------


def test_adaptive_rule_an_idle_instance_takes_what_is_queued_at_once() -> None:
    policy = adaptive(delay_ns=LONG, preferred=(4,))
    assert decide([view(1, at=50)], 50, policy, idle_instances=1) == Decision(run=(0,))
    assert decide([view(1), view(2), view(1, "b"), view(3)], 0, policy, idle_instances=2) == Decision(run=(0, 1, 3))


@pytest.mark.parametrize("policy", [triton(delay_ns=0), adaptive()], ids=["triton", "adaptive"])
def test_nothing_runs_without_an_idle_instance_and_it_wakes_at_the_earliest_deadline(policy: BatchPolicy) -> None:
    full = [view(8, deadline=900), view(1, "b", deadline=700), view(1)]
    assert decide(full, 0, policy, idle_instances=0) == Decision(wake_at_ns=700)
    assert decide([view(8), view(1)], 0, policy, idle_instances=0) == Decision(wake_at_ns=None)


# -- priorities and shapes --------------------------------------------------------------------------------


def test_the_first_entry_leads_the_batch_even_when_a_later_one_is_older() -> None:
    # Entries come in priority order: a level-1 request that arrived later leads; the older level-2
    # request with the same shape joins only if it fits.
    entries = [view(2, at=500), view(2, at=0)]
    assert decide(entries, 500, adaptive(max_batch_size=3), idle_instances=1) == Decision(run=(0,))
    assert decide(entries, 500, adaptive(max_batch_size=4), idle_instances=1) == Decision(run=(0, 1))


def test_other_shapes_are_skipped_and_form_the_next_batch() -> None:
    policy = adaptive(max_batch_size=4)
    entries = [view(2, "a"), view(2, "b"), view(2, "a"), view(1, "b")]
    first = decide(entries, 0, policy, idle_instances=1)
    assert first == Decision(run=(0, 2))
    rest = [e for i, e in enumerate(entries) if i not in first.run]
    assert decide(rest, 0, policy, idle_instances=1) == Decision(run=(0, 1))


def test_a_skipped_shape_does_not_make_the_batch_full() -> None:
    # The "b" entry would not fit, but it is not compatible, so it does not close the "a" batch.
    entries = [view(2, "a", at=0), view(7, "b", at=0), view(2, "a", at=0)]
    assert decide(entries, 0, triton(delay_ns=100), idle_instances=1) == Decision(wake_at_ns=100)


# -- wake-up time -----------------------------------------------------------------------------------------


def test_wake_at_is_the_earlier_of_the_due_time_and_the_earliest_deadline() -> None:
    policy = triton(delay_ns=1000)
    # A deadline before the due time, even on an entry of another shape, wakes the batcher first.
    assert decide([view(1, at=0), view(1, "b", at=0, deadline=400)], 0, policy, idle_instances=1) == Decision(
        wake_at_ns=400
    )
    assert decide([view(1, at=0, deadline=5000)], 0, policy, idle_instances=1) == Decision(wake_at_ns=1000)


def test_an_empty_queue_decides_nothing() -> None:
    assert decide([], 0, triton(), idle_instances=1) == Decision()
    assert decide([], 0, adaptive(), idle_instances=0) == Decision()


# -- properties -------------------------------------------------------------------------------------------


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[list[QueuedView], int, BatchPolicy, int]:
    max_batch_size = draw(st.integers(1, 16))
    keys = draw(st.integers(1, 3))
    raw = draw(
        st.lists(
            st.tuples(st.integers(1, 8), st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 30_000)),
            max_size=12,
        )
    )
    now = max((at for _, _, at, _ in raw), default=0) + draw(st.integers(0, 20_000))
    entries = [
        view(
            rows=min(rows, max_batch_size),
            key=key % keys,
            at=at,
            # The batcher expires entries before deciding, so any deadline is still ahead (0: none).
            deadline=now + ahead if ahead else None,
        )
        for rows, key, at, ahead in raw
    ]
    policy = BatchPolicy(
        max_batch_size=max_batch_size,
        preferred_batch_sizes=tuple(draw(st.sets(st.integers(1, max_batch_size), max_size=3))),
        max_queue_delay_ns=draw(st.integers(0, 15_000)),
        adaptive=draw(st.booleans()),
    )
    return entries, now, policy, draw(st.integers(0, 3))


@settings(max_examples=100, deadline=None)
@given(snapshots())
def test_any_decided_batch_is_one_shape_within_max_rows_and_led_by_the_first_entry(
    snapshot: tuple[list[QueuedView], int, BatchPolicy, int],
) -> None:
    entries, now, policy, idle = snapshot
    decision = decide(entries, now, policy, idle_instances=idle)
    if decision.run:
        assert idle > 0
        assert decision.run[0] == 0
        assert all(a < b for a, b in zip(decision.run, decision.run[1:], strict=False))
        assert {entries[i].shape_key for i in decision.run} == {entries[0].shape_key}
        assert sum(entries[i].rows for i in decision.run) <= policy.max_batch_size
        # No compatible entry is jumped over: the batch is a prefix of the leading shape's entries.
        compatible = [i for i, e in enumerate(entries) if e.shape_key == entries[0].shape_key]
        assert list(decision.run) == compatible[: len(decision.run)]
    else:
        # Waiting never spins: it wakes in the future, or only when something changes.
        assert decision.wake_at_ns is None or decision.wake_at_ns > now
    if entries and policy.adaptive and idle > 0:
        assert decision.run, "an idle instance must take what is queued under the adaptive rule"
