"""Keeping the loaded models within the memory budget, and unloading the ones nobody uses.

- Before a load (:meth:`Eviction.make_room`): the model's size is estimated (its last measurement, else
  the size of its files) and the least recently used idle, unpinned models are unloaded until it fits;
  if nothing can make room the load is refused (RESOURCE_EXHAUSTED, stage "budget") naming what holds it.
- After a load (:meth:`Eviction.enforce_after`): the measurement is what counts. If the estimate was low
  and the server is now over budget, least recently used models go (never the one just loaded); if none
  can, that is logged and the model stays.
- Idle (:meth:`Eviction.unload_idle`): unpinned models with nothing in flight unused for ``idle_s``.

Which models go is decided by the pure :func:`~modelserve.repository.memory.choose_evictions`; this module
gathers the facts it needs (sizes, last use from the injected clock, pinned, busy) and carries it out.
A model is busy while requests are in flight on it or a load of it is running (``loading``).
Use from the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

from modelserve.core.clock import Clock
from modelserve.core.errors import ErrorCode, ModelLoadError
from modelserve.observability.metrics import ServerMetrics
from modelserve.repository.lifecycle import ModelIndex, ModelRecord
from modelserve.repository.memory import ModelUsage, choose_evictions

__all__ = ["Eviction"]

log = logging.getLogger(__name__)


class Eviction:
    """The memory budget (``budget_bytes``; 0: none) and idle unloading over the models in ``index``.

    ``unload`` is how a chosen model goes (the manager's ``unload``: drains, then unloads).
    """

    def __init__(
        self,
        *,
        index: ModelIndex,
        root: Path,
        budget_bytes: int,
        pinned: frozenset[str],
        clock: Clock,
        metrics: ServerMetrics,
        unload: Callable[[str], Awaitable[None]],
    ) -> None:
        if budget_bytes < 0:
            raise ValueError(f"memory budget must be >= 0 bytes (0: none), got {budget_bytes}")
        self._index = index
        self._root = root
        self._budget_bytes = budget_bytes
        self._pinned = pinned
        self._clock = clock
        self._metrics = metrics
        self._unload = unload

    def usage(self, *, excluding: str, loading: Collection[str]) -> list[ModelUsage]:
        """The facts the eviction rule needs about every loaded model but ``excluding``."""
        return [
            ModelUsage(
                name=name,
                memory_bytes=record.memory_bytes,
                last_used_ns=record.last_used_ns,
                is_pinned=name in self._pinned,
                is_busy=name in loading or any(v.scheduler.in_flight for v in record.versions.values()),
            )
            for name, record in self._index.records().items()
            if record.versions and name != excluding
        ]

    def _estimate_bytes(self, name: str, record: ModelRecord) -> int:
        """What loading ``name`` will take: its last measurement, else the size of its files. Blocking."""
        if record.measured_bytes:
            return record.measured_bytes
        # lstat, and links not followed: nothing outside the repository is even looked at (the load checks the
        # links themselves and refuses those that leave it).
        total = 0
        for folder, _, files in os.walk(self._root / name, followlinks=False):
            for file in files:
                info = os.lstat(os.path.join(folder, file))
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
        return total

    async def make_room(self, name: str, record: ModelRecord, *, loading: Collection[str]) -> None:
        """Unload least recently used idle models until ``name`` fits the budget, or refuse the load.

        Raises :class:`ModelLoadError` (RESOURCE_EXHAUSTED, stage "budget") naming the budget, the
        models that hold it and the fix. Does nothing without a budget.
        """
        if not self._budget_bytes:
            return
        needed = await asyncio.to_thread(self._estimate_bytes, name, record)
        usage = self.usage(excluding=name, loading=loading)
        evictions = choose_evictions(usage, budget_bytes=self._budget_bytes, needed_bytes=needed)
        if evictions is None:
            held = ", ".join(
                f"{u.name} {u.memory_bytes / 2**20:.0f} MiB{' (pinned)' if u.is_pinned else ' (busy)'}"
                for u in usage
                if u.is_pinned or u.is_busy
            )
            raise ModelLoadError(
                f"model '{name}' needs about {needed / 2**20:.0f} MiB and the memory budget of "
                f"{self._budget_bytes / 2**20:.0f} MiB (repository.memory_budget_mb) cannot make room: "
                f"{held or 'nothing can be unloaded'}; raise the budget or unpin a model",
                stage="budget",
                code=ErrorCode.RESOURCE_EXHAUSTED,
            )
        for victim in evictions:
            log.info("memory budget: unloading %s (least recently used) to make room for %s", victim, name)
            self._metrics.evictions.labels(victim, "budget").inc()
            await self._unload(victim)

    async def enforce_after(self, name: str, record: ModelRecord, *, loading: Collection[str]) -> None:
        """The estimate before a first load is the model's file size; the measurement after it is what
        counts. Over budget: unload least recently used idle models (never the one just loaded)."""
        if not self._budget_bytes:
            return
        usage = self.usage(excluding=name, loading=loading)
        evictions = choose_evictions(usage, budget_bytes=self._budget_bytes, needed_bytes=record.memory_bytes)
        if evictions is None:
            log.warning(
                "model %s measured %.0f MiB: the loaded models exceed the memory budget of %.0f MiB and none "
                "can be unloaded (pinned or busy); raise repository.memory_budget_mb or unpin a model",
                name,
                record.memory_bytes / 2**20,
                self._budget_bytes / 2**20,
            )
            return
        for victim in evictions:
            log.info("memory budget: unloading %s (least recently used) after %s loaded", victim, name)
            self._metrics.evictions.labels(victim, "budget").inc()
            await self._unload(victim)

    async def unload_idle(self, idle_s: float, *, loading: Collection[str]) -> list[str]:
        """Unload unpinned models with nothing in flight that nobody used for ``idle_s`` seconds (of the
        injected clock). Returns their names, in the order they were unloaded."""
        now = self._clock.now_ns()
        idle = [
            usage.name
            for usage in self.usage(excluding="", loading=loading)
            if not usage.is_pinned and not usage.is_busy and now - usage.last_used_ns >= idle_s * 1e9
        ]
        for name in idle:
            log.info("model %s unused for %.0f s; unloading", name, idle_s)
            self._metrics.evictions.labels(name, "idle").inc()
            await self._unload(name)
        return idle
