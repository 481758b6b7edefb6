"""When to run a batch, and which queued requests go in it: a pure function of the queue and "now".

The batcher task only waits and dispatches; every decision is made here, from a snapshot, so it can be
tested with a fake clock and no threads (see ``tests/scheduling/test_batch_policy.py``).

Rules (Triton's dynamic batcher, ``max_batch_size`` counting rows, not requests):

1. Entries are considered in priority order (level 1 first), oldest first within a level.
2. A batch starts with the first entry and takes the following entries whose inputs have the same
   non-batch shapes and datatypes (the ``shape_key``) while the rows fit in ``max_batch_size``.
   Entries with other shapes are never merged with it; they form later batches.
3. Nothing runs while no instance is free.
4. It runs at once when it is full (``max_batch_size`` rows, or the next compatible entry does not fit).
5. Triton's rule (``adaptive=False``): it runs at once when what is queued reaches a preferred size (the
   largest one it can reach); otherwise it waits until the oldest entry has waited ``max_queue_delay``.
   So a lone request always waits the full delay.
6. The adaptive rule (``adaptive=True``): an idle instance takes what is queued at once. Batches then
   form only from requests that arrived while every instance was busy, and grow with the load; a lone
   request never waits for company that is not coming. ``max_queue_delay`` and preferred sizes have no
   effect (there is never a reason to hold an idle instance back).
7. The batcher also wakes at the earliest deadline among queued entries, so an expired request is
   answered when its deadline passes, not when a running batch ends (Triton #7512).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

__all__ = ["BatchPolicy", "Decision", "QueuedView", "decide"]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ns: int = 0
    adaptive: bool = True


@dataclass(frozen=True, slots=True)
class QueuedView:
    """What the policy sees of one queued request."""

    rows: int
    shape_key: Hashable
    enqueued_ns: int
    deadline_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """``run``: indexes into the snapshot to batch now (empty: nothing to run now).
    ``wake_at_ns``: when to decide again at the latest (None: only when something changes)."""

    run: tuple[int, ...] = ()
    wake_at_ns: int | None = None


def _candidate(entries: Sequence[QueuedView], max_rows: int) -> tuple[list[int], int, bool]:
    """The batch the first entry would lead: its indexes, its rows, and whether it is full."""
    first = entries[0]
    chosen = [0]
    rows = first.rows
    for index in range(1, len(entries)):
        entry = entries[index]
        if entry.shape_key != first.shape_key:
            continue
        if rows + entry.rows > max_rows:
            return chosen, rows, True
        chosen.append(index)
        rows += entry.rows
    return chosen, rows, rows >= max_rows


def _trim_to_preferred(
    chosen: list[int], entries: Sequence[QueuedView], preferred: tuple[int, ...]
) -> list[int] | None:
    """The longest prefix of ``chosen`` whose rows equal a preferred size, if any."""
    best: list[int] | None = None
    rows = 0
    for position, index in enumerate(chosen):
        rows += entries[index].rows
        if rows in preferred:
            best = chosen[: position + 1]
    return best


def decide(entries: Sequence[QueuedView], now_ns: int, policy: BatchPolicy, *, idle_instances: int) -> Decision:
    """Decide what to run now. ``entries`` are in priority-then-arrival order and none has expired."""
    if not entries:
        return Decision()
    earliest_deadline = min((e.deadline_ns for e in entries if e.deadline_ns is not None), default=None)
    if idle_instances <= 0:
        return Decision(wake_at_ns=earliest_deadline)
    chosen, _, is_full = _candidate(entries, policy.max_batch_size)
    if is_full:
        return Decision(run=tuple(chosen))
    if policy.adaptive:
        return Decision(run=tuple(chosen))
    if policy.preferred_batch_sizes:
        trimmed = _trim_to_preferred(chosen, entries, policy.preferred_batch_sizes)
        if trimmed is not None:
            return Decision(run=tuple(trimmed))
    oldest = min(entries[i].enqueued_ns for i in chosen)
    due = oldest + policy.max_queue_delay_ns
    if now_ns >= due:
        return Decision(run=tuple(chosen))
    wake = due if earliest_deadline is None else min(due, earliest_deadline)
    return Decision(wake_at_ns=wake)
