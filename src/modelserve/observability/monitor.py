"""A windowed view of the serving statistics: request rate, error rate, latency quantiles, batch sizes and
queue depth over the last N seconds, per model version. The dashboard and the alert rules read it.

The statistics are cumulative (Triton's semantics); a periodic task copies the few numbers needed into a
ring of samples, and a window is the difference between the newest sample and the one N seconds older.
Quantiles (of successful requests) come from the latency histogram's bucket deltas with Prometheus'
``histogram_quantile`` rule (linear inside the bucket), so the dashboard and a Prometheus query over the
same window agree.

Nothing here runs on the request path: sampling reads counters the schedulers keep anyway.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelserve.core.clock import Clock
from modelserve.observability.statistics import BATCH_BUCKETS, LATENCY_BUCKETS_S, ModelVersionStatistics

__all__ = ["Monitor", "VersionWindow", "histogram_quantile"]


@dataclass(frozen=True, slots=True)
class _Sample:
    at_ns: int
    success: int
    fail: int
    inferences: int
    executions: int
    latency_buckets: tuple[int, ...]
    batch_buckets: tuple[int, ...]
    queue_depth: int


@dataclass(frozen=True, slots=True)
class VersionWindow:
    """One version's numbers over a trailing window (``seconds`` is the span actually covered)."""

    model: str
    version: str
    seconds: float
    requests: int
    failures: int
    request_rate: float
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch_size: float
    batch_buckets: tuple[tuple[str, int], ...]
    queue_depth: int


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float:
    """Prometheus' estimate of the q-quantile from per-bucket counts (``counts`` has one more entry than
    ``bounds``: the +Inf bucket). NaN when there are no observations; the highest finite bound when the
    quantile falls in the +Inf bucket."""
    total = sum(counts)
    if total == 0:
        return math.nan
    rank = q * total
    running = 0
    for index, count in enumerate(counts):
        if running + count >= rank and count > 0:
            if index == len(bounds):
                return float(bounds[-1])
            lower = 0.0 if index == 0 else float(bounds[index - 1])
            upper = float(bounds[index])
            return lower + (upper - lower) * (rank - running) / count
        running += count
    return float(bounds[-1])


def _sample(statistics: ModelVersionStatistics, queue_depth: int, at_ns: int) -> _Sample:
    # Plain reads of ints and list copies: a sample may straddle one in-flight update, which a window of
    # thousands of requests does not notice, and the request path never waits for the monitor.
    return _Sample(
        at_ns=at_ns,
        success=statistics.success.count,
        fail=statistics.fail.count,
        inferences=statistics.inference_count,
        executions=statistics.execution_count,
        latency_buckets=tuple(statistics.request_seconds.counts),
        batch_buckets=tuple(statistics.batch_sizes.counts),
        queue_depth=queue_depth,
    )


_EMPTY_LATENCY = (0,) * (len(LATENCY_BUCKETS_S) + 1)
_EMPTY_BATCH = (0,) * (len(BATCH_BUCKETS) + 1)


class Monitor:
    """Keeps samples of every loaded version for ``horizon_s`` seconds; call :meth:`sample` periodically."""

    def __init__(
        self,
        source: Callable[[], list[tuple[ModelVersionStatistics, int]]],
        clock: Clock,
        *,
        horizon_s: float,
    ) -> None:
        self._source = source
        self._clock = clock
        self._horizon_ns = int(horizon_s * 1e9)
        self._rings: dict[tuple[str, str], deque[_Sample]] = {}
        # Whose counters each ring holds: a version unloaded and loaded again between two samples comes
        # back with new statistics counting from zero, and differences across the two would be negative.
        self._counted: dict[tuple[str, str], ModelVersionStatistics] = {}

    def sample(self) -> None:
        now = self._clock.now_ns()
        seen = set()
        for statistics, queue_depth in self._source():
            key = (statistics.name, statistics.version)
            seen.add(key)
            ring = self._rings.setdefault(key, deque())
            if self._counted.get(key) is not statistics:
                ring.clear()
                self._counted[key] = statistics
            if not ring:
                # A version seen for the first time counts from zero: its requests so far are in the window.
                ring.append(_Sample(now, 0, 0, 0, 0, _EMPTY_LATENCY, _EMPTY_BATCH, 0))
            ring.append(_sample(statistics, queue_depth, now))
            while len(ring) > 2 and ring[1].at_ns <= now - self._horizon_ns:
                ring.popleft()
        for key in [k for k in self._rings if k not in seen]:
            del self._rings[key]  # unloaded
            self._counted.pop(key, None)

    def windows(self, seconds: float, model: str | None = None) -> list[VersionWindow]:
        """Each version's numbers over the last ``seconds`` (or as much of it as has been sampled)."""
        out = []
        for (name, version), ring in sorted(self._rings.items()):
            if (model is not None and name != model) or len(ring) < 2:
                continue
            newest = ring[-1]
            oldest = ring[0]
            limit = newest.at_ns - int(seconds * 1e9)
            for candidate in ring:
                if candidate.at_ns > limit:
                    break
                oldest = candidate
            out.append(_window(name, version, oldest, newest))
        return out


def _window(name: str, version: str, old: _Sample, new: _Sample) -> VersionWindow:
    span_s = max((new.at_ns - old.at_ns) / 1e9, 1e-9)
    success = new.success - old.success
    failures = new.fail - old.fail
    requests = success + failures
    latency = [b - a for a, b in zip(old.latency_buckets, new.latency_buckets, strict=True)]
    batches = [b - a for a, b in zip(old.batch_buckets, new.batch_buckets, strict=True)]
    executions = new.executions - old.executions
    labels = [str(b) for b in BATCH_BUCKETS] + ["+Inf"]
    return VersionWindow(
        model=name,
        version=version,
        seconds=span_s,
        requests=requests,
        failures=failures,
        request_rate=requests / span_s,
        error_rate=failures / requests if requests else 0.0,
        p50_ms=histogram_quantile(0.50, LATENCY_BUCKETS_S, latency) * 1000,
        p95_ms=histogram_quantile(0.95, LATENCY_BUCKETS_S, latency) * 1000,
        p99_ms=histogram_quantile(0.99, LATENCY_BUCKETS_S, latency) * 1000,
        mean_batch_size=(new.inferences - old.inferences) / executions if executions else 0.0,
        batch_buckets=tuple(zip(labels, batches, strict=True)),
        queue_depth=new.queue_depth,
    )
