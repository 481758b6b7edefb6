"""The windowed monitor in process: real statistics objects, a manual clock, ``sample()`` called by the test.
Windows are differences of cumulative samples, so every number here is exact: rates, error rates, latency
quantiles (Prometheus' ``histogram_quantile`` over bucket deltas), horizon trimming, short data."""

from __future__ import annotations

import math

import pytest

from modelserve.observability.monitor import Monitor, VersionWindow, histogram_quantile
from modelserve.observability.statistics import LATENCY_BUCKETS_S, ModelVersionStatistics
from tests.fakes import ManualClock

MS = 1_000_000  # ns


class Served:
    """What the server's monitor reads: every loaded version's statistics and queue depth."""

    def __init__(self, *versions: ModelVersionStatistics) -> None:
        self.versions = list(versions)
        self.queue_depth = 0

    def __call__(self) -> list[tuple[ModelVersionStatistics, int]]:
        return [(statistics, self.queue_depth) for statistics in self.versions]


def succeed(statistics: ModelVersionStatistics, count: int, latency_ms: float = 3.0) -> None:
    for _ in range(count):
        statistics.record_request(succeeded=True, total_ns=round(latency_ms * MS))


def fail(statistics: ModelVersionStatistics, count: int) -> None:
    for _ in range(count):
        statistics.record_request(succeeded=False, total_ns=MS, failure_reason="BACKEND", failure_cause="model")


def only(windows: list[VersionWindow]) -> VersionWindow:
    (window,) = windows
    return window


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=5_000 * 1_000 * MS)  # nothing may assume the clock starts at 0


def test_rate_and_error_rate_over_the_last_seconds(clock: ManualClock) -> None:
    iris = ModelVersionStatistics("iris", "1")
    monitor = Monitor(Served(iris), clock, horizon_s=60)
    monitor.sample()
    # Ten one-second ticks: 10 requests a second, the last three seconds with 2 failures each.
    for second in range(10):
        succeed(iris, 8 if second >= 7 else 10)
        fail(iris, 2 if second >= 7 else 0)
        clock.advance(1)
        monitor.sample()
    last3 = only(monitor.windows(3))
    assert (last3.model, last3.version) == ("iris", "1")
    assert last3.seconds == 3.0
    assert (last3.requests, last3.failures) == (30, 6)
    assert last3.request_rate == 10.0
    assert last3.error_rate == pytest.approx(0.2)
    everything = only(monitor.windows(10))
    assert everything.seconds == 10.0 and everything.requests == 100 and everything.failures == 6
    assert everything.error_rate == pytest.approx(0.06)
    earlier = only(monitor.windows(2.5))  # no sample 2.5 s back: the window reaches to the one before it
    assert earlier.seconds == 3.0 and earlier.requests == 30


def test_a_window_without_requests_has_no_quantiles_and_no_error_rate(clock: ManualClock) -> None:
    iris = ModelVersionStatistics("iris", "1")
    monitor = Monitor(Served(iris), clock, horizon_s=60)
    monitor.sample()
    fail(iris, 3)
    clock.advance(5)
    monitor.sample()
    clock.advance(5)
    monitor.sample()
    quiet = only(monitor.windows(5))
    assert quiet.requests == 0 and quiet.request_rate == 0.0 and quiet.error_rate == 0.0
    assert math.isnan(quiet.p50_ms) and math.isnan(quiet.p99_ms)
    assert quiet.mean_batch_size == 0.0


def test_quantiles_come_from_the_window_bucket_deltas(clock: ManualClock) -> None:
    iris = ModelVersionStatistics("iris", "1")
    monitor = Monitor(Served(iris), clock, horizon_s=60)
    monitor.sample()
    succeed(iris, 50, latency_ms=900.0)  # slow, but before the window below
    fail(iris, 50)  # failures have no latency in the quantiles
    clock.advance(10)
    monitor.sample()
    succeed(iris, 90, latency_ms=3.0)  # bucket (2.5 ms, 5 ms]
    succeed(iris, 10, latency_ms=200.0)  # bucket (100 ms, 250 ms]
    clock.advance(10)
    monitor.sample()
    window = only(monitor.windows(10))
    assert window.requests == 100 and window.failures == 0
    # histogram_quantile: linear inside the bucket holding the rank.
    assert window.p50_ms == pytest.approx(2.5 + 2.5 * 50 / 90)
    assert window.p95_ms == pytest.approx(100 + 150 * 5 / 10)
    assert window.p99_ms == pytest.approx(100 + 150 * 9 / 10)
    both = only(monitor.windows(20))
    assert both.requests == 200 and both.failures == 50
    assert both.p99_ms == pytest.approx(500 + 500 * (0.99 * 150 - 100) / 50)  # the slow ones are in (0.5 s, 1 s]


def test_quantile_rule_edges() -> None:
    bounds = LATENCY_BUCKETS_S
    nothing = [0] * (len(bounds) + 1)
    assert math.isnan(histogram_quantile(0.99, bounds, nothing))
    beyond = [*nothing[:-1], 7]  # all in +Inf: the highest finite bound
    assert histogram_quantile(0.5, bounds, beyond) == bounds[-1]
    first = [4, *nothing[1:]]  # the first bucket's lower edge is 0
    assert histogram_quantile(0.5, bounds, first) == pytest.approx(bounds[0] / 2)


def test_the_horizon_keeps_just_enough_samples(clock: ManualClock) -> None:
    iris = ModelVersionStatistics("iris", "1")
    monitor = Monitor(Served(iris), clock, horizon_s=5)
    monitor.sample()
    for second in range(20):
        succeed(iris, second)  # second s serves s requests
        clock.advance(1)
        monitor.sample()
    # Asked for a minute, the monitor has the horizon: the last 5 seconds (15 + 16 + ... + 19 requests).
    window = only(monitor.windows(60))
    assert window.seconds == 5.0
    assert window.requests == sum(range(15, 20))
    assert only(monitor.windows(2)).requests == 18 + 19


def test_a_window_longer_than_the_data_covers_what_there_is(clock: ManualClock) -> None:
    iris = ModelVersionStatistics("iris", "1")
    succeed(iris, 4)  # served before the monitor first saw the version: counted in its first window
    monitor = Monitor(Served(iris), clock, horizon_s=300)
    monitor.sample()
    succeed(iris, 6)
    clock.advance(2)
    monitor.sample()
    window = only(monitor.windows(60))
    assert window.seconds == 2.0
    assert window.requests == 10
    assert window.request_rate == 5.0


def test_batch_sizes_queue_depth_and_versions_that_come_and_go(clock: ManualClock) -> None:
    iris = ModelVersionStatistics("iris", "1")
    iris2 = ModelVersionStatistics("iris", "2")
    digits = ModelVersionStatistics("digits", "1")
    served = Served(iris, digits)
    monitor = Monitor(served, clock, horizon_s=60)
    monitor.sample()
    for batch_size in (4, 4, 1, 1):
        iris.record_execution(batch_size, input_ns=0, infer_ns=MS, output_ns=0, requests=batch_size)
    served.queue_depth = 3
    clock.advance(1)
    monitor.sample()
    window = only(monitor.windows(10, model="iris"))
    assert window.mean_batch_size == 2.5
    assert dict(window.batch_buckets)["1"] == 2 and dict(window.batch_buckets)["4"] == 2
    assert window.queue_depth == 3  # the newest sample's, not a difference
    # Version 2 is loaded and version 1 unloaded: 1 disappears, 2 starts from zero.
    served.versions = [iris2, digits]
    succeed(iris2, 5)
    clock.advance(1)
    monitor.sample()
    assert [(w.model, w.version) for w in monitor.windows(10)] == [("digits", "1"), ("iris", "2")]
    assert only(monitor.windows(10, model="iris")).requests == 5


def test_a_version_reloaded_between_two_samples_counts_from_its_new_statistics(clock: ManualClock) -> None:
    # Found by schemathesis: unload + load between two samples gave a window of -3 requests.
    before = ModelVersionStatistics("iris", "1")
    served = Served(before)
    monitor = Monitor(served, clock, horizon_s=60)
    succeed(before, 10)
    monitor.sample()
    clock.advance(1)
    reloaded = ModelVersionStatistics("iris", "1")  # the reload's fresh counters
    succeed(reloaded, 4, latency_ms=2.0)
    served.versions = [reloaded]
    monitor.sample()
    for seconds in (1, 60):  # the last second spans the reload; the whole horizon too
        window = only(monitor.windows(seconds))
        assert window.requests == 4, seconds
        assert 0 < window.p99_ms <= 2.5
