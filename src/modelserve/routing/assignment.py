"""Sticky assignment of units (users, sessions, devices) to the arms of a split: pure, no I/O.

A unit's bucket, reproducible by any service in any language::

    digest = SHA-256(salt_utf8 + b"\\x00" + unit_id_utf8)      # salt: the policy's salt, else the model's name
    bucket = int.from_bytes(digest[:8], "big") % 10000

Each arm owns a set of the 10,000 buckets (a :class:`BucketTable`), so a unit keeps its arm for as long as
the table does. Python's ``hash()`` is never used: it is salted per process.

A fresh table gives each arm ``weight * 100`` buckets (largest-remainder rounding, so the counts sum to
10,000), in contiguous ranges in the order of the split. When the weights change the new table is derived
from the previous one (:func:`rebalance`): an arm that shrinks releases its highest buckets, an arm that
is removed releases all of them, and the arms that grow (or are new) take the released buckets lowest
first, in split order. Only ``sum(max(0, w_old - w_new))`` percent of the buckets change hands, the least
any assignment can move. Cumulative ranges recomputed from the weights (GrowthBook's way) would move more:
80/10/10 -> 60/20/20 moves 30 % of units where 20 % is enough.

Because the derived table depends on the history of changes, it is persisted with the policy
(``routing.json``, as run-length ranges: :meth:`BucketTable.ranges`), so a restart, another process or
another worker gives every unit the same arm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["BUCKETS", "BucketTable", "bucket_counts", "bucket_of", "rebalance"]

BUCKETS = 10_000


def bucket_of(salt: str, unit_id: str) -> int:
    """The unit's bucket in ``[0, BUCKETS)``: the first 8 bytes of SHA-256(salt, 0x00, unit id), big-endian,
    modulo 10,000. Pure; thread-safe."""
    digest = hashlib.sha256(salt.encode("utf-8") + b"\x00" + unit_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def bucket_counts(weights: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Buckets per arm for ``(arm, weight in percent)`` pairs summing to 100: ``weight * 100`` rounded by the
    largest-remainder method (ties go to the arm listed first), so the counts sum to exactly 10,000."""
    total = sum(weight for _, weight in weights)
    if not weights or total <= 0:
        raise ValueError("a split needs at least one arm with a positive weight")
    exact = [(arm, weight * BUCKETS / total) for arm, weight in weights]
    counts = {arm: int(share) for arm, share in exact}
    left = BUCKETS - sum(counts.values())
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i][1] - int(exact[i][1])), i))
    for i in by_remainder[:left]:
        counts[exact[i][0]] += 1
    return counts


@dataclass(frozen=True, slots=True)
class BucketTable:
    """Which arm owns each bucket: ``owners[bucket]`` is the arm's name. Immutable; thread-safe."""

    owners: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.owners) != BUCKETS:
            raise ValueError(f"a bucket table has {BUCKETS} buckets, got {len(self.owners)}")

    @classmethod
    def fresh(cls, weights: Sequence[tuple[str, float]]) -> BucketTable:
        """The deterministic table for a split with no history: contiguous ranges in split order."""
        owners: list[str] = []
        for arm, count in bucket_counts(weights).items():
            owners.extend([arm] * count)
        return cls(tuple(owners))

    def arm(self, bucket: int) -> str:
        return self.owners[bucket]

    def counts(self) -> dict[str, int]:
        """Buckets per arm (arms with none are absent)."""
        counts: dict[str, int] = {}
        for arm in self.owners:
            counts[arm] = counts.get(arm, 0) + 1
        return counts

    def ranges(self) -> dict[str, list[list[int]]]:
        """Run-length form, for the persisted file: arm -> ``[[start, end), ...]`` in bucket order."""
        ranges: dict[str, list[list[int]]] = {}
        start = 0
        for bucket in range(1, BUCKETS + 1):
            if bucket == BUCKETS or self.owners[bucket] != self.owners[start]:
                ranges.setdefault(self.owners[start], []).append([start, bucket])
                start = bucket
        return ranges

    @classmethod
    def from_ranges(cls, ranges: Mapping[str, Iterable[Sequence[int]]]) -> BucketTable:
        """The inverse of :meth:`ranges`. Raises ``ValueError`` naming the problem when the ranges do not
        cover every bucket exactly once."""
        owners: list[str | None] = [None] * BUCKETS
        for arm, spans in ranges.items():
            for span in spans:
                if len(span) != 2 or not 0 <= span[0] < span[1] <= BUCKETS:
                    raise ValueError(f"arm '{arm}': bucket range {list(span)} is not [start, end) within 0..{BUCKETS}")
                for bucket in range(span[0], span[1]):
                    if owners[bucket] is not None:
                        raise ValueError(f"bucket {bucket} is owned by both '{owners[bucket]}' and '{arm}'")
                    owners[bucket] = arm
        missing = sum(owner is None for owner in owners)
        if missing:
            raise ValueError(f"{missing} of {BUCKETS} buckets have no arm")
        return cls(tuple(owner for owner in owners if owner is not None))


def rebalance(previous: BucketTable, weights: Sequence[tuple[str, float]]) -> BucketTable:
    """The table for the new ``weights`` derived from ``previous``, moving the fewest buckets: each arm
    keeps ``min(old, new)`` of its buckets (its lowest), releases the rest, and arms short of their share
    take released buckets, lowest first, in split order. Deterministic: the same previous table and
    weights give the same table in every process."""
    wanted = bucket_counts(weights)
    owners = list(previous.owners)
    kept: dict[str, int] = {}
    released: list[int] = []
    for bucket, arm in enumerate(owners):
        if kept.get(arm, 0) < wanted.get(arm, 0):
            kept[arm] = kept.get(arm, 0) + 1
        else:
            released.append(bucket)
    pool = iter(released)
    for arm, count in wanted.items():
        for _ in range(count - kept.get(arm, 0)):
            owners[next(pool)] = arm
    return BucketTable(tuple(owners))
