"""The memory budget: which models to unload so that another one fits. A pure function of the models'
measured sizes, their last use and whether they may go; the manager measures and unloads.

Rules: pinned models never go; models with requests in flight never go; among the rest the least
recently used go first, only as many as needed. If unloading every candidate would still not make room,
nothing is unloaded and the load is refused (the caller says why).

Sizes are measured as the growth of the server's resident memory (its own and its worker processes')
while a version loads: a close, cheap estimate; loads that run at the same moment blur each other's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psutil

__all__ = ["ModelUsage", "choose_evictions", "resident_bytes"]


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


def resident_bytes() -> int:
    """RSS of this process and its children (python-runtime workers)."""
    process = psutil.Process()
    total = int(process.memory_info().rss)
    for child in process.children(recursive=True):
        try:
            total += int(child.memory_info().rss)
        except psutil.Error:
            continue  # exited in between
    return total
