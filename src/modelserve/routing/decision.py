"""Which arm of a model's split a request goes to: a pure function of the policy, its bucket table, the
request's version slot, headers and parameters, and a random source (injected, so tests draw what they
choose).

Precedence, first match wins:

1. ``explicit``: the request names a version or an alias; the policy is not consulted.
2. ``override``: the policy's override header carries one of the values it lists (others are ignored).
3. ``sticky``: the request carries a unit id (the key's header, else its parameter): the arm owning the
   id's bucket (``routing/assignment.py``).
4. ``random``: no key: a weighted draw over the arms.
5. ``default``: the model has no split: the usual route (``production``, else the highest version).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

from modelserve.routing.assignment import BucketTable, bucket_of
from modelserve.routing.policy import RoutingPolicy

__all__ = ["DEFAULT_DECISION", "RouteDecision", "RoutePlan", "decide"]

Why = Literal["explicit", "override", "sticky", "random", "default"]


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """``arm``: the split's arm ("" when no split chose one); ``target``: the alias or version to serve
    ("" = the usual route); ``why``: which rule decided (reported in metrics, not on the wire)."""

    arm: str
    target: str
    why: Why


DEFAULT_DECISION = RouteDecision("", "", "default")


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """A policy with what deciding needs precomputed: its bucket table, salt and cumulative weights. Built
    once when the policy is set (never per request). Immutable; thread-safe."""

    policy: RoutingPolicy
    table: BucketTable | None
    salt: str
    targets: Mapping[str, str]
    cumulative: tuple[float, ...]
    # Lower-cased once here: the context's header names are lower-case.
    override_header: str | None
    key_header: str | None

    @classmethod
    def build(cls, model: str, policy: RoutingPolicy, table: BucketTable | None) -> RoutePlan:
        return cls(
            policy=policy,
            table=table if policy.split else None,
            salt=policy.salt or model,
            targets={arm.arm: arm.target for arm in policy.split},
            cumulative=tuple(accumulate(arm.weight for arm in policy.split)),
            override_header=policy.override.header.lower() if policy.override is not None else None,
            key_header=policy.key.header.lower() if policy.key is not None and policy.key.header else None,
        )


def decide(
    plan: RoutePlan | None,
    version: str,
    headers: Mapping[str, str],
    parameters: Mapping[str, object],
    draw: Callable[[], float] = random.random,
) -> RouteDecision:
    """The arm for one request. ``draw`` returns a float in ``[0, 1)`` (only called for a request without a
    key). Pure apart from ``draw``; thread-safe when ``draw`` is."""
    if version:
        return RouteDecision("", version, "explicit")
    if plan is None or plan.table is None:
        return DEFAULT_DECISION
    policy = plan.policy
    override = policy.override
    if override is not None and plan.override_header is not None:
        arm = override.arms.get(headers.get(plan.override_header, ""))
        if arm is not None:
            return RouteDecision(arm, plan.targets[arm], "override")
    key = policy.key
    if key is not None:
        unit = headers.get(plan.key_header) if plan.key_header is not None else None
        if unit is None and key.parameter is not None:
            value = parameters.get(key.parameter)
            unit = None if value is None or isinstance(value, bool) else str(value)
        if unit is not None:
            arm = plan.table.arm(bucket_of(plan.salt, unit))
            return RouteDecision(arm, plan.targets[arm], "sticky")
    point = draw() * plan.cumulative[-1]
    index = min(bisect.bisect_right(plan.cumulative, point), len(plan.cumulative) - 1)
    arm = policy.split[index].arm
    return RouteDecision(arm, plan.targets[arm], "random")
