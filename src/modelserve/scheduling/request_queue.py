"""The dynamic batcher's queue: one FIFO per priority level, each with its own policy, plus the
"delayed" tier for requests whose timeout passed under ``timeout_action: DELAY``.

Triton's names and semantics (``dynamic_batching.priority_levels``, ``default_priority_level``,
``default_queue_policy``, ``priority_queue_policy``):

- Level 1 is the highest; a request's ``priority`` 0 means the default level. A priority above the
  number of levels is refused (400) rather than silently changed.
- ``max_queue_size`` bounds each level; a full level refuses at once (503 + Retry-After). Triton's 0
  ("unbounded") becomes the server's ``scheduling.max_queue_size``: no queue here is unbounded.
- ``max_queue_time_ns`` (``scheduling.max_queue_time_ms``) bounds it by time too: while the level's oldest
  request has waited longer, a new one is refused at once (it would wait at least as long, FIFO).
- ``default_timeout_microseconds`` gives every request of the level a deadline; a request's own
  ``timeout`` parameter may shorten it only if ``allow_timeout_override`` (never lengthen it).
- At the deadline, ``REJECT`` answers DEADLINE_EXCEEDED; ``DELAY`` moves the request behind the requests
  of its level that have not timed out (so after every such request at that or a higher priority),
  where it waits with no deadline.

Deadlines are absolute monotonic nanoseconds, computed once at enqueue.
Used only from the event loop thread.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from modelserve.core.errors import ErrorCode, QueueError, ValidationError
from modelserve.core.inference import InferRequest

__all__ = ["LevelPolicy", "PriorityQueues", "QueueEntry", "deadline_error", "queue_time_error"]


@dataclass(frozen=True, slots=True)
class LevelPolicy:
    max_queue_size: int
    max_queue_time_ns: int = 0
    default_timeout_us: int = 0
    delay_on_timeout: bool = False
    allow_timeout_override: bool = False


@dataclass(eq=False, slots=True)
class QueueEntry:
    request: InferRequest
    output_names: tuple[str, ...]
    rows: int
    shape_key: Hashable
    enqueued_ns: int
    deadline_ns: int | None
    level: int
    # Thread-safe: settled on the loop, waited for on the loop or on a gRPC thread (``core/steps.py``).
    future: concurrent.futures.Future[dict[str, np.ndarray]]
    delayed: bool = False
    # The deadline is the caller's own (gRPC deadline, in-process timeout_s), not the queue policy's: at
    # it the request is refused even under timeout_action DELAY, since nobody waits for it any more.
    is_client_deadline: bool = False


class PriorityQueues:
    def __init__(self, *, levels: int, default_level: int, policies: dict[int, LevelPolicy], owner: str) -> None:
        self._levels = levels
        self._default_level = default_level
        self._policies = policies
        self._owner = owner
        self._queues: dict[int, deque[QueueEntry]] = {level: deque() for level in range(1, levels + 1)}
        self._delayed: dict[int, deque[QueueEntry]] = {level: deque() for level in range(1, levels + 1)}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values()) + sum(len(q) for q in self._delayed.values())

    def depth(self, level: int) -> int:
        return len(self._queues[level])

    def level_for(self, priority: int) -> int:
        if priority == 0:
            return self._default_level
        if priority > self._levels:
            raise ValidationError(
                f"{self._owner}: priority {priority} is outside 1..{self._levels} (dynamic_batching.priority_levels); "
                "1 is the highest, 0 means the default level"
            )
        return priority

    def deadline_for(self, level: int, request_timeout_us: int, now_ns: int) -> int | None:
        """The queue policy's deadline for a request of ``level`` queued at ``now_ns`` (None: none)."""
        policy = self._policies[level]
        timeout_us = policy.default_timeout_us
        if request_timeout_us > 0 and policy.allow_timeout_override:
            timeout_us = request_timeout_us if timeout_us == 0 else min(timeout_us, request_timeout_us)
        return now_ns + timeout_us * 1000 if timeout_us > 0 else None

    def push(self, entry: QueueEntry) -> None:
        """Queue ``entry`` at the back of its level. Raises :class:`QueueError` when the level is full."""
        refused = self.refusal(entry.enqueued_ns, entry.level)
        if refused is not None:
            raise refused
        self._queues[entry.level].append(entry)

    def refusal(self, now_ns: int, level: int | None = None) -> QueueError | None:
        """The error :meth:`push` would raise at ``now_ns`` for a request of ``level`` (None: the default
        level). Also read from other threads as a snapshot (refusing before a body is read)."""
        level = self._default_level if level is None else level
        policy, queue = self._policies[level], self._queues[level]
        if len(queue) >= policy.max_queue_size:
            return QueueError(
                f"{self._owner}: queue for priority level {level} is full ({policy.max_queue_size} requests "
                "waiting; dynamic_batching queue policy max_queue_size, or scheduling.max_queue_size when unset); "
                "retry later",
                retry_after_s=1,
            )
        if policy.max_queue_time_ns and queue:
            try:
                waited_ns = now_ns - queue[0].enqueued_ns
            except IndexError:  # emptied by the loop since the check above (a snapshot from another thread)
                return None
            if waited_ns > policy.max_queue_time_ns:
                return queue_time_error(self._owner, waited_ns, policy.max_queue_time_ns)
        return None

    def ordered(self) -> list[QueueEntry]:
        """Every queued entry in service order: level 1 first; within a level FIFO, then its delayed ones."""
        out: list[QueueEntry] = []
        for level in range(1, self._levels + 1):
            out.extend(self._queues[level])
            out.extend(self._delayed[level])
        return out

    def remove(self, entries: Sequence[QueueEntry]) -> None:
        doomed = {id(e) for e in entries}
        for queues in (self._queues, self._delayed):
            for level, queue in queues.items():
                if any(id(e) in doomed for e in queue):
                    queues[level] = deque(e for e in queue if id(e) not in doomed)

    def drop_abandoned(self) -> int:
        """Remove entries whose caller is gone (future cancelled or already answered)."""
        gone = [e for e in self._all() if e.future.done()]
        if gone:
            self.remove(gone)
        return len(gone)

    def expire(self, now_ns: int) -> list[QueueEntry]:
        """Apply deadlines: REJECT entries are removed and returned; DELAY entries move to the delayed tier."""
        rejected: list[QueueEntry] = []
        for level, queue in self._queues.items():
            if not any(e.deadline_ns is not None and e.deadline_ns <= now_ns for e in queue):
                continue
            keep: deque[QueueEntry] = deque()
            for entry in queue:
                if entry.deadline_ns is None or entry.deadline_ns > now_ns:
                    keep.append(entry)
                elif self._policies[level].delay_on_timeout and not entry.is_client_deadline:
                    entry.delayed, entry.deadline_ns = True, None
                    self._delayed[level].append(entry)
                else:
                    rejected.append(entry)
            self._queues[level] = keep
        return rejected

    def drain_all(self) -> list[QueueEntry]:
        entries = list(self._all())
        for queues in (self._queues, self._delayed):
            for queue in queues.values():
                queue.clear()
        return entries

    def _all(self) -> Iterator[QueueEntry]:
        for level in self._queues:
            yield from self._queues[level]
            yield from self._delayed[level]


def queue_time_error(owner: str, waited_ns: int, limit_ns: int) -> QueueError:
    return QueueError(
        f"{owner}: the queue is backed up (its oldest request has waited {waited_ns // 1_000_000} ms, over "
        f"scheduling.max_queue_time_ms={limit_ns // 1_000_000}); retry later, add instances (instance_group "
        "count) or raise the limit",
        retry_after_s=1,
    )


def deadline_error(owner: str, entry: QueueEntry, now_ns: int) -> QueueError:
    waited_us = (now_ns - entry.enqueued_ns) // 1000
    if entry.is_client_deadline:
        return QueueError(
            f"{owner}: the request's deadline passed after {waited_us} µs in the queue, before it ran (the "
            "client's gRPC deadline or the in-process timeout_s); retry with a longer deadline or send less load",
            code=ErrorCode.DEADLINE_EXCEEDED,
        )
    return QueueError(
        f"{owner}: request timed out after {waited_us} µs in the queue without running "
        "(request parameter 'timeout' or the queue policy's default_timeout_microseconds); "
        "retry with a longer timeout or send less load",
        code=ErrorCode.DEADLINE_EXCEEDED,
    )
