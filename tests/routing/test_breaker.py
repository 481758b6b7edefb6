"""The circuit breaker's state machine (routing/breaker.py), driven by a fake clock: no model, no waiting."""

from __future__ import annotations

import pytest

from modelserve.core.errors import (
    CircuitOpenError,
    DecodeError,
    ErrorCode,
    QueueError,
    RoutingError,
    RuntimeFailure,
    ValidationError,
)
from modelserve.routing.breaker import BreakerBoard, BreakerState, CircuitBreaker, counts_as_failure
from modelserve.routing.policy import BreakerSettings
from tests.fakes import ManualClock

SETTINGS = BreakerSettings(
    consecutive_failures=5, failure_ratio=0.5, min_requests=20, window_s=10, open_s=30, half_open_probes=3
)
BOOM = RuntimeFailure("model 'x' raised ValueError: boom")


def breaker(clock: ManualClock, settings: BreakerSettings = SETTINGS) -> CircuitBreaker:
    return CircuitBreaker("x", "2", settings, clock)


def state(b: CircuitBreaker) -> BreakerState:
    return b.state  # read through a call: mypy would narrow a property between two reads


def fail(b: CircuitBreaker, times: int, error: BaseException = BOOM) -> None:
    for _ in range(times):
        assert b.admit() is None
        b.record(error)


def test_it_opens_after_exactly_n_failures_in_a_row_and_then_refuses_naming_itself() -> None:
    clock = ManualClock()
    b = breaker(clock)
    fail(b, 4)
    assert state(b) is BreakerState.CLOSED
    fail(b, 1)
    assert state(b) is BreakerState.OPEN
    refused = b.admit()
    assert isinstance(refused, CircuitOpenError)
    assert refused.code is ErrorCode.UNAVAILABLE and refused.retry_after_s == 30
    assert refused.message.startswith(
        "circuit breaker for model 'x' version 2 is open after 5 failures in a row; retry in 30 s"
    )
    clock.advance(12.5)
    again = b.admit()
    assert again is not None and again.retry_after_s == 18 and "retry in 18 s" in again.message


def test_a_success_resets_the_run_of_failures() -> None:
    b = breaker(ManualClock(), SETTINGS.model_copy(update={"failure_ratio": 1.0}))  # a ratio above 1 never happens
    for _ in range(10):
        fail(b, 4)
        assert b.admit() is None
        b.record(None)
    assert state(b) is BreakerState.CLOSED


@pytest.mark.parametrize(
    "error",
    [
        ValidationError("input 'x' has shape [3], the model expects [4]"),
        DecodeError("malformed JSON"),
        RoutingError("model 'x' has no version 9"),
        QueueError("the queue of model 'x' is full (max_queue_size 8)", retry_after_s=1),
        QueueError("the request was cancelled: its client went away", code=ErrorCode.CANCELLED),
    ],
)
def test_client_errors_overload_refusals_and_cancellations_never_trip_it(error: Exception) -> None:
    b = breaker(ManualClock())
    assert not counts_as_failure(error)
    fail(b, 100, error)
    assert state(b) is BreakerState.CLOSED
    fail(b, 4)  # nor do they break a run of real failures
    fail(b, 3, error)
    fail(b, 1)
    assert state(b) is BreakerState.OPEN


def test_timeouts_and_dead_workers_count() -> None:
    deadline = QueueError("the request's deadline passed", code=ErrorCode.DEADLINE_EXCEEDED)
    dead = RuntimeFailure("the worker of model 'x' died", code=ErrorCode.UNAVAILABLE)
    assert counts_as_failure(deadline) and counts_as_failure(dead)
    b = breaker(ManualClock())
    fail(b, 3, deadline)
    fail(b, 2, dead)
    assert state(b) is BreakerState.OPEN


def test_the_failure_ratio_opens_it_once_the_window_holds_min_requests() -> None:
    clock = ManualClock()
    b = breaker(clock, SETTINGS.model_copy(update={"consecutive_failures": 1000}))
    for _ in range(9):  # 9 failures, 9 successes, alternating: 50 %, not above it
        fail(b, 1)
        assert b.admit() is None
        b.record(None)
    assert state(b) is BreakerState.CLOSED
    clock.advance(11)  # the window slides past all of them
    for _ in range(10):
        fail(b, 1)
    assert state(b) is BreakerState.CLOSED  # 10 of 10 failed, but only 10 requests: below min_requests
    for _ in range(9):
        assert b.admit() is None
        b.record(None)
    fail(b, 1)  # 11 of 20 failed in the window: above 0.5
    assert state(b) is BreakerState.OPEN
    refused = b.admit()
    assert refused is not None and "11 of its last 20 requests failed in 10 s" in refused.message


def test_half_open_admits_the_probes_only_and_closes_when_they_all_succeed() -> None:
    clock = ManualClock()
    b = breaker(clock)
    fail(b, 5)
    clock.advance(29.9)
    assert b.admit() is not None
    clock.advance(0.1)
    assert state(b) is BreakerState.HALF_OPEN
    assert [b.admit() for _ in range(3)] == [None, None, None]
    extra = b.admit()
    assert extra is not None and "half-open" in extra.message
    b.record(None)
    b.record(None)
    assert state(b) is BreakerState.HALF_OPEN
    b.record(None)
    assert state(b) is BreakerState.CLOSED
    assert b.admit() is None


def test_a_failed_probe_reopens_it_for_twice_as_long_capped_at_max_open_s() -> None:
    clock = ManualClock()
    b = breaker(clock, SETTINGS.model_copy(update={"max_open_s": 100}))
    fail(b, 5)
    stays = []
    for _ in range(4):
        before = b.snapshot().retry_in_s
        stays.append(before)
        clock.advance(before)
        assert b.admit() is None  # a probe
        b.record(BOOM)
        assert state(b) is BreakerState.OPEN
    assert stays == [30, 60, 100, 100]
    assert "a half-open probe failed" in (b.admit() or QueueError("")).message
    clock.advance(100)
    for _ in range(3):
        assert b.admit() is None
        b.record(None)
    assert state(b) is BreakerState.CLOSED
    fail(b, 5)  # closed again: the next trip starts from open_s
    assert b.snapshot().retry_in_s == 30 and b.snapshot().trips == 6


def test_a_probe_that_ends_without_a_verdict_gives_its_slot_back() -> None:
    clock = ManualClock()
    b = breaker(clock, SETTINGS.model_copy(update={"half_open_probes": 1}))
    fail(b, 5)
    clock.advance(30)
    assert b.admit() is None
    assert b.admit() is not None  # the only probe is out
    b.record(QueueError("cancelled", code=ErrorCode.CANCELLED))
    assert state(b) is BreakerState.HALF_OPEN
    assert b.admit() is None
    b.record(None)
    assert state(b) is BreakerState.CLOSED


def test_open_s_must_fit_under_max_open_s() -> None:
    with pytest.raises(ValueError, match=r"open_s \(600\) is longer than max_open_s \(300\)"):
        BreakerSettings(open_s=600)


def test_transitions_are_reported_and_the_board_keeps_one_breaker_per_version() -> None:
    clock = ManualClock()
    seen: list[tuple[str, str, str, str]] = []
    board = BreakerBoard(clock, lambda m, v, a, b: seen.append((m, v, a.value, b.value)))
    one = board.breaker("x", "1", SETTINGS)
    assert board.breaker("x", "1", SETTINGS) is one
    assert board.breaker("x", "2", SETTINGS) is not one
    fail(one, 5)
    clock.advance(30)
    for _ in range(3):
        assert one.admit() is None
        one.record(None)
    assert seen == [("x", "1", "closed", "open"), ("x", "1", "open", "half_open"), ("x", "1", "half_open", "closed")]
    changed = SETTINGS.model_copy(update={"consecutive_failures": 2})
    assert board.breaker("x", "1", changed) is not one  # new settings: a fresh, closed breaker
    assert [(s.version, s.state) for s in board.snapshots("x")] == [
        ("1", BreakerState.CLOSED),
        ("2", BreakerState.CLOSED),
    ]
