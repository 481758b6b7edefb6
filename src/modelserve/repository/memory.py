"""The memory budget: which models to unload so that another one fits. A pure function of the models'
sizes, their last use and whether they may go; ``eviction.py`` gathers those facts and unloads.

Rules: pinned models never go; models with requests in flight never go; among the rest the least
recently used go first, only as many as needed. If unloading every candidate would still not make room,
nothing is unloaded and the load is refused (the caller says why).

Sizes are what each runtime instance reports it holds (``Runtime.memory_bytes``: a worker's RSS, the
model files' size, an estimator's pickled size, or the runtime's floor), summed per version by
:func:`version_memory`. They are never the growth of the server's resident memory while a version
loads: that counted scikit-learn's import (~100 MB) against the first sklearn model and 0 against a
model reloaded into pages an earlier unload had freed, so after some churn the budget counted nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelserve.runtimes.base import MemoryFootprint

__all__ = ["ModelUsage", "VersionMemory", "choose_evictions", "version_memory"]


@dataclass(frozen=True, slots=True)
class ModelUsage:
    name: str
    memory_bytes: int
    last_used_ns: int
    is_pinned: bool = False
    is_busy: bool = False


def choose_evictions(models: Sequence[ModelUsage], *, budget_bytes: int, needed_bytes: int) -> list[str] | None:
    """Names to unload (least recently used first) so that ``needed_bytes`` more fit in ``budget_bytes``;
    ``[]`` when it fits already; None when it cannot fit even after every allowed unload."""
    used = sum(m.memory_bytes for m in models)
    if used + needed_bytes <= budget_bytes:
        return []
    chosen: list[str] = []
    for model in sorted(models, key=lambda m: m.last_used_ns):
        if model.is_pinned or model.is_busy:
            continue
        chosen.append(model.name)
        used -= model.memory_bytes
        if used + needed_bytes <= budget_bytes:
            return chosen
    return None


@dataclass(frozen=True, slots=True)
class VersionMemory:
    size_bytes: int
    source: str  # the instances' sources, sorted and joined with "+" when they differ


def version_memory(instances: Sequence[MemoryFootprint]) -> VersionMemory:
    """A version holds what its instances hold: the sum, and how the sizes were measured."""
    return VersionMemory(
        size_bytes=sum(f.size_bytes for f in instances),
        source="+".join(sorted({f.source for f in instances})),
    )
