"""The traffic policy of each model (``routing/policy.py``), by model name: what the router and the
service's resilience layer read on every request, and what the routing API changes.

Reads are lock-free (one dict lookup: a policy object is immutable and replaced whole); changes take a lock
so two writers cannot interleave. Persistence beside the model (like ``aliases.json``) and the settings
file's initial policies are loaded into it by its owner.
"""

from __future__ import annotations

import threading

from modelserve.routing.assignment import BucketTable, rebalance
from modelserve.routing.decision import RoutePlan
from modelserve.routing.policy import RoutingPolicy

__all__ = ["PolicyStore"]


class PolicyStore:
    """Thread-safe. A model without a policy routes as before (the ``production`` alias, else the highest
    loaded version), with no breaker, shadow or fallback."""

    def __init__(self) -> None:
        self._policies: dict[str, RoutingPolicy] = {}
        self._plans: dict[str, RoutePlan] = {}
        self._lock = threading.Lock()
        # Every header some policy reads (key and override headers, lower-case): the transports copy these
        # into the RequestContext beside server.context_headers. Replaced whole on each change, so a reader
        # compares it by identity and rebuilds its own set only when it changed.
        self.headers: frozenset[str] = frozenset()

    def policy(self, model: str) -> RoutingPolicy | None:
        return self._policies.get(model)

    def policies(self) -> dict[str, RoutingPolicy]:
        """A snapshot of every policy, by model name."""
        return dict(self._policies)

    def plan(self, model: str) -> RoutePlan | None:
        """The policy with its bucket table, what the router decides on (one dict lookup)."""
        return self._plans.get(model)

    def table(self, model: str) -> BucketTable | None:
        plan = self._plans.get(model)
        return None if plan is None else plan.table

    def set(self, model: str, policy: RoutingPolicy, table: BucketTable | None = None) -> None:
        """Set ``model``'s policy. ``table``: its bucket table as persisted; None derives one from the
        model's current table (the fewest units move, ``routing/assignment.py``), or builds a fresh one."""
        with self._lock:
            if policy.split and table is None:
                weights = [(arm.arm, arm.weight) for arm in policy.split]
                previous = self.table(model)
                table = BucketTable.fresh(weights) if previous is None else rebalance(previous, weights)
            self._policies = {**self._policies, model: policy}
            self._plans = {**self._plans, model: RoutePlan.build(model, policy, table)}
            self._update_headers()

    def clear(self, model: str) -> None:
        with self._lock:
            self._policies = {name: p for name, p in self._policies.items() if name != model}
            self._plans = {name: p for name, p in self._plans.items() if name != model}
            self._update_headers()

    def _update_headers(self) -> None:
        names: set[str] = set()
        for policy in self._policies.values():
            if policy.key is not None and policy.key.header is not None:
                names.add(policy.key.header.lower())
            if policy.override is not None:
                names.add(policy.override.header.lower())
        if names != self.headers:
            self.headers = frozenset(names)
