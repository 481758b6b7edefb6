"""PriorityQueues without a batcher: levels, bounds, service order, deadlines (REJECT and DELAY),
abandoned entries. Time is plain integer nanoseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from modelserve.core.errors import ErrorCode, QueueError, ValidationError
from modelserve.core.inference import InferRequest
from modelserve.scheduling.request_queue import LevelPolicy, PriorityQueues, QueueEntry, deadline_error

OWNER = "model 'm' version 1"

MakeEntry = Callable[..., QueueEntry]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def entry(loop: asyncio.AbstractEventLoop) -> MakeEntry:
    def make(level: int = 1, *, at: int = 0, deadline: int | None = None, rows: int = 1) -> QueueEntry:
        return QueueEntry(
            request=InferRequest(model_name="m", model_version="1", inputs={}, input_datatypes={}),
            output_names=(),
            rows=rows,
            shape_key=(),
            enqueued_ns=at,
            deadline_ns=deadline,
            level=level,
            future=loop.create_future(),
        )

    return make


def queues(levels: int = 2, default_level: int = 1, **policies: LevelPolicy) -> PriorityQueues:
    """``policies`` by level name ``l1``, ``l2``...; unnamed levels get a roomy REJECT policy."""
    by_level = {level: policies.get(f"l{level}", LevelPolicy(max_queue_size=100)) for level in range(1, levels + 1)}
    return PriorityQueues(levels=levels, default_level=default_level, policies=by_level, owner=OWNER)


# -- levels ----------------------------------------------------------------------------------------------


def test_priority_zero_is_the_default_level_and_others_are_kept() -> None:
    q = queues(levels=3, default_level=2)
    assert q.level_for(0) == 2
    assert [q.level_for(p) for p in (1, 2, 3)] == [1, 2, 3]


def test_a_priority_above_the_levels_is_refused_naming_the_setting() -> None:
    q = queues(levels=3)
    with pytest.raises(ValidationError) as caught:
        q.level_for(4)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "priority 4" in caught.value.message
    assert "1..3" in caught.value.message
    assert "priority_levels" in caught.value.message
    assert q.level_for(3) == 3  # the next good request is fine


# -- bounds ----------------------------------------------------------------------------------------------


def test_a_full_level_refuses_at_once_naming_the_level_and_other_levels_still_accept(entry: MakeEntry) -> None:
    q = queues(l1=LevelPolicy(max_queue_size=5), l2=LevelPolicy(max_queue_size=2))
    first, second = entry(2), entry(2)
    q.push(first)
    q.push(second)
    with pytest.raises(QueueError) as caught:
        q.push(entry(2))
    error = caught.value
    assert error.code is ErrorCode.UNAVAILABLE
    assert error.retry_after_s == 1
    assert "priority level 2" in error.message
    assert "max_queue_size" in error.message
    assert "(2 requests waiting" in error.message
    assert OWNER in error.message
    assert q.depth(2) == 2
    assert len(q) == 2
    # The bound is per level, and room comes back when an entry leaves.
    q.push(entry(1))
    q.remove([first])
    q.push(entry(2))
    assert q.depth(2) == 2


def test_a_level_refuses_while_its_oldest_request_has_waited_past_the_time_bound(entry: MakeEntry) -> None:
    q = queues(l1=LevelPolicy(max_queue_size=100, max_queue_time_ns=100_000_000))
    oldest = entry(1, at=0)
    q.push(oldest)
    q.push(entry(1, at=90_000_000))  # the head has waited 90 ms: admitted
    with pytest.raises(QueueError) as caught:
        q.push(entry(1, at=150_000_000))
    assert caught.value.code is ErrorCode.UNAVAILABLE and caught.value.retry_after_s == 1
    assert "waited 150 ms" in caught.value.message and "scheduling.max_queue_time_ms=100" in caught.value.message
    assert q.refusal(150_000_000, 1) is not None and q.refusal(150_000_000, 2) is None  # per level
    q.remove([oldest])
    assert q.refusal(150_000_000, 1) is None  # the head is now 60 ms old


def test_a_level_with_size_zero_refuses_everything(entry: MakeEntry) -> None:
    q = queues(levels=1, l1=LevelPolicy(max_queue_size=0))
    with pytest.raises(QueueError, match="priority level 1 is full"):
        q.push(entry(1))
    assert len(q) == 0


# -- service order ---------------------------------------------------------------------------------------


def test_ordered_serves_level_one_first_fifo_within_a_level_and_delayed_entries_last(entry: MakeEntry) -> None:
    q = queues(levels=3, l3=LevelPolicy(max_queue_size=10, delay_on_timeout=True))
    late = entry(3, deadline=50)
    a, b, c, d, e = entry(2), entry(1), entry(3), entry(2), entry(1)
    for item in (late, a, b, c, d, e):
        q.push(item)
    assert q.ordered() == [b, e, a, d, late, c]
    assert q.expire(50) == []
    assert q.ordered() == [b, e, a, d, c, late]


# -- deadlines -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default_us", "allow_override", "request_us", "expected_us"),
    [
        (0, False, 0, None),  # 0 = no deadline
        (0, False, 500, None),  # the request's timeout is ignored without allow_timeout_override
        (1000, False, 0, 1000),
        (1000, False, 500, 1000),
        (1000, True, 0, 1000),
        (1000, True, 500, 500),  # shortened
        (1000, True, 5000, 1000),  # never lengthened
        (0, True, 500, 500),  # no default: any timeout is shorter than none
    ],
)
def test_deadline_for(default_us: int, allow_override: bool, request_us: int, expected_us: int | None) -> None:
    policy = LevelPolicy(max_queue_size=10, default_timeout_us=default_us, allow_timeout_override=allow_override)
    q = queues(l2=policy)
    now = 7_000_000
    expected = None if expected_us is None else now + expected_us * 1000
    assert q.deadline_for(2, request_us, now) == expected
    # Level 1 keeps its own (untimed) policy.
    assert q.deadline_for(1, request_us, now) is None


def test_reject_entries_expire_exactly_at_their_deadline(entry: MakeEntry) -> None:
    q = queues()
    soon, later, never, other = entry(1, deadline=1000), entry(1, deadline=2000), entry(1), entry(2, deadline=1500)
    for item in (soon, later, never, other):
        q.push(item)
    assert q.expire(999) == []
    assert len(q) == 4
    assert q.expire(1000) == [soon]
    assert q.ordered() == [later, never, other]
    assert q.expire(1999) == [other]
    assert q.expire(2000) == [later]
    assert q.expire(10**18) == []
    assert q.ordered() == [never]
    assert not soon.delayed


def test_delay_entries_move_behind_their_level_with_no_deadline(entry: MakeEntry) -> None:
    """Triton: a DELAYed request runs after every request at its own or a higher priority that has not
    timed out, but before lower priorities."""
    q = queues(l1=LevelPolicy(max_queue_size=10, default_timeout_us=1, delay_on_timeout=True))
    timed_out, waiting, low = entry(1, deadline=1000), entry(1), entry(2)
    rejected = entry(2, deadline=1000)
    for item in (timed_out, waiting, low, rejected):
        q.push(item)
    assert q.expire(1000) == [rejected]  # level 2 keeps REJECT
    assert timed_out.delayed
    assert timed_out.deadline_ns is None
    assert q.ordered() == [waiting, timed_out, low]
    assert q.depth(1) == 1
    assert len(q) == 3
    assert q.expire(10**18) == []
    assert q.ordered() == [waiting, timed_out, low]


def test_deadline_error_names_the_wait_in_microseconds(entry: MakeEntry) -> None:
    error = deadline_error(OWNER, entry(1, at=1_000), 2_501_999)
    assert error.code is ErrorCode.DEADLINE_EXCEEDED
    assert "2500 µs" in error.message
    assert OWNER in error.message
    assert "timeout" in error.message
    assert "default_timeout_microseconds" in error.message


# -- leaving the queue -----------------------------------------------------------------------------------


def test_drop_abandoned_removes_cancelled_and_answered_entries(entry: MakeEntry) -> None:
    q = queues(l1=LevelPolicy(max_queue_size=10, delay_on_timeout=True))
    cancelled, answered, alive, delayed_gone = entry(1), entry(2), entry(2), entry(1, deadline=5)
    for item in (cancelled, answered, alive, delayed_gone):
        q.push(item)
    q.expire(5)
    cancelled.future.cancel()
    answered.future.set_result({})
    delayed_gone.future.cancel()
    assert q.drop_abandoned() == 3
    assert q.ordered() == [alive]
    assert q.drop_abandoned() == 0


def test_remove_takes_entries_from_any_level_and_the_delayed_tier(entry: MakeEntry) -> None:
    q = queues(l2=LevelPolicy(max_queue_size=10, delay_on_timeout=True))
    a, b, c, late = entry(1), entry(2), entry(1), entry(2, deadline=0)
    for item in (a, b, c, late):
        q.push(item)
    q.expire(0)
    q.remove([c, late, entry(1)])  # an entry that is not queued is ignored
    assert q.ordered() == [a, b]
    assert (q.depth(1), q.depth(2), len(q)) == (1, 1, 2)


def test_drain_all_returns_everything_and_leaves_the_queue_usable(entry: MakeEntry) -> None:
    q = queues(l1=LevelPolicy(max_queue_size=2, delay_on_timeout=True))
    a, b, late = entry(2), entry(1), entry(1, deadline=0)
    for item in (a, b, late):
        q.push(item)
    q.expire(0)
    assert q.drain_all() == [b, late, a]
    assert len(q) == 0
    assert q.ordered() == []
    assert q.drain_all() == []
    fresh = entry(1)
    q.push(fresh)
    assert q.ordered() == [fresh]
