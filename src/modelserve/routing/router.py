"""Resolve a request's model name and version to a loaded version.

The version slot holds a number, an alias (``production``, ``canary``, ...), or nothing: then the
``production`` alias when it is set and its version is loaded, else the highest loaded version. With
``load_on_demand`` a known model that is not loaded is loaded by its first request (once, however many
requests race for it). A request that names no version, for a model whose policy has a split, goes to
the target (alias or version) of the arm ``routing/decision.py`` picks from the request's
:class:`~modelserve.core.context.RequestContext` headers and parameters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import partial
from types import MappingProxyType

from pydantic import ValidationError as PydanticValidationError

from modelserve.core import triton_texts
from modelserve.core.context import EMPTY_CONTEXT, RequestContext
from modelserve.core.errors import ErrorCode, ModelServeError, RoutingError, ValidationError
from modelserve.core.names import check_model_name, check_version
from modelserve.core.steps import OnLoop, RunBlocking, Steps
from modelserve.repository.loaded import LoadedVersion
from modelserve.repository.manager import ModelManager
from modelserve.routing.aliases import DEFAULT_ALIAS, Alias, AliasStore, check_alias_name
from modelserve.routing.assignment import BucketTable, rebalance
from modelserve.routing.decision import RouteDecision, decide
from modelserve.routing.fallback import check_policy
from modelserve.routing.policies import PolicyStore
from modelserve.routing.policy import RoutingPolicy
from modelserve.routing.policy_files import PolicyFiles, StoredPolicy, describe_errors

__all__ = ["Router"]

_NO_PARAMETERS: Mapping[str, object] = MappingProxyType({})


class Router:
    def __init__(
        self,
        manager: ModelManager,
        aliases: AliasStore,
        *,
        load_on_demand: bool,
        policies: PolicyStore | None = None,
        policy_files: PolicyFiles | None = None,
    ) -> None:
        self._manager = manager
        self._aliases = aliases
        self._load_on_demand = load_on_demand
        self.policies = policies if policies is not None else PolicyStore()
        # None: policies live in memory only (an engine without a repository to write to).
        self._policy_files = policy_files
        self._policy_changes = asyncio.Lock()  # one change at a time: each derives from the table before it

    def _pick(self, name: str, version: str) -> LoadedVersion:
        manager = self._manager
        if version.isdigit():
            return manager.get(name, version)
        aliases = self._aliases.aliases(name) if manager.is_known(name) else {}
        if not version:
            production = aliases.get(DEFAULT_ALIAS)
            if production is not None and manager.has_version(name, production.version):
                return manager.get(name, production.version)
            return manager.get(name, "")
        alias = aliases.get(version)
        if alias is None:
            manager.get(name, "")  # an unknown or unloaded model says so first
            raise RoutingError(f"model '{name}' has no version or alias '{version}'; its aliases are {sorted(aliases)}")
        if not manager.has_version(name, alias.version):
            raise RoutingError(
                f"model '{name}': alias '{version}' points at version {alias.version}, which is not loaded",
                code=ErrorCode.UNAVAILABLE,
            )
        return manager.get(name, alias.version)

    def _pick_arm(self, name: str, decision: RouteDecision) -> LoadedVersion:
        """The loaded version of the arm's target; UNAVAILABLE naming the arm and target when it is not."""
        manager = self._manager
        target = decision.target
        if target.isdigit():
            version = target
        else:
            alias = self._aliases.aliases(name).get(target) if manager.is_known(name) else None
            if alias is None:
                manager.get(name, "")  # an unknown or unloaded model says so first
                raise RoutingError(
                    f"model '{name}': routing arm '{decision.arm}' goes to alias '{target}', which is not set; "
                    f"set it (POST /v2/models/{name}/aliases/{target}) or change the policy",
                    code=ErrorCode.UNAVAILABLE,
                )
            version = alias.version
        if not manager.has_version(name, version):
            manager.get(name, "")
            via = "" if target == version else f" (alias '{target}')"
            raise RoutingError(
                f"model '{name}': routing arm '{decision.arm}' goes to version {version}{via}, which is not "
                f"loaded; load it or change the policy (PUT /v2/models/{name}/routing)",
                code=ErrorCode.UNAVAILABLE,
            )
        return manager.get(name, version)

    def route(
        self,
        name: str,
        version: str,
        context: RequestContext = EMPTY_CONTEXT,
        parameters: Mapping[str, object] = _NO_PARAMETERS,
    ) -> Steps[tuple[LoadedVersion, RouteDecision]]:
        """The steps that find the version to run (driven on the loop or on a gRPC thread) and the routing
        decision that chose it: the model's policy reads ``context.headers`` and the request's
        ``parameters``. Raises ``ValidationError`` for a malformed name/version, ``RoutingError`` for an
        unknown or unavailable one (an arm whose target is not loaded is UNAVAILABLE, naming both),
        ``ModelLoadError`` when an on-demand load fails."""
        yield from self._prepare(name, version)
        decision = decide(self.policies.plan(name), version, context.headers, parameters)
        if decision.arm:
            return self._pick_arm(name, decision), decision
        return self._pick(name, version), decision

    def resolve(self, name: str, version: str, context: RequestContext = EMPTY_CONTEXT) -> Steps[LoadedVersion]:
        """The version the usual route gives (``production``, else the highest loaded), without the model's
        split: for metadata, readiness and the precheck, which must not flap between arms. Raises as
        :meth:`route` does."""
        yield from self._prepare(name, version)
        return self._pick(name, version)

    def _prepare(self, name: str, version: str) -> Steps[None]:
        check_model_name(name)
        check_version(version)
        manager = self._manager
        if self._load_on_demand and not manager.is_loaded(name) and manager.is_known(name):
            yield OnLoop(partial(manager.ensure_loaded, name))
        if self._must_read_aliases(name, version):
            yield RunBlocking(partial(self._aliases.aliases, name))  # the first look reads a file: off the loop

    def _must_read_aliases(self, name: str, version: str) -> bool:
        """The request names no version number and the model's aliases are not read yet (a file read)."""
        return not version.isdigit() and not self._aliases.is_cached(name) and self._manager.is_known(name)

    def loaded_now(self, name: str, version: str) -> LoadedVersion | None:
        """The version :meth:`resolve` would pick, if it can be known now without waiting (no load, no first
        alias read) and the request names a valid, loaded one; else None. Never raises: for a glance
        before a body is read, after which :meth:`resolve` decides and reports errors."""
        if not self._manager.is_loaded(name) or self._must_read_aliases(name, version):
            return None
        try:
            return self._pick(check_model_name(name), check_version(version))
        except ModelServeError:
            return None

    # -- aliases (admin) ---------------------------------------------------------------------------

    async def aliases(self, name: str) -> dict[str, Alias]:
        check_model_name(name)
        if not self._manager.is_known(name):
            raise RoutingError(triton_texts.unknown_model(name, "no such model in the repository"))
        return dict(await asyncio.to_thread(self._aliases.aliases, name))

    async def reload_aliases(self, name: str) -> None:
        """Read ``name``'s aliases from its file again (another worker moved one)."""
        check_model_name(name)
        self._aliases.forget(name)
        await asyncio.to_thread(self._aliases.aliases, name)

    async def set_alias(self, name: str, alias: str, version: str) -> Alias:
        """Point ``alias`` at a loaded ``version`` (persisted). Raises when the version is not loaded."""
        check_model_name(name)
        check_alias_name(alias)
        if not version.isdigit():
            raise ValidationError(f"an alias points at a version number, got '{version[:32]}'")
        self._manager.get(name, version)  # raises NOT_FOUND / UNAVAILABLE naming what is loaded
        return await asyncio.to_thread(self._aliases.set, name, alias, version)

    async def rollback(self, name: str, alias: str) -> Alias:
        """Point ``alias`` back at its previous version, which must be loaded."""
        check_model_name(name)
        aliases = await self.aliases(name)
        current = aliases.get(check_alias_name(alias))
        if current is not None and current.history and not self._manager.has_version(name, current.history[-1]):
            raise RoutingError(
                f"model '{name}': cannot roll '{alias}' back to version {current.history[-1]}: it is not loaded "
                "(keep it loaded with version_policy { latest { num_versions: 2 } } or { all { } })",
                code=ErrorCode.UNAVAILABLE,
            )
        return await asyncio.to_thread(self._aliases.rollback, name, alias)

    # -- routing policies (admin) ------------------------------------------------------------------

    def routing(self, name: str) -> StoredPolicy | None:
        """``name``'s policy and bucket table, or None (it routes as before)."""
        check_model_name(name)
        if not self._manager.is_known(name):
            raise RoutingError(triton_texts.unknown_model(name, "no such model in the repository"))
        plan = self.policies.plan(name)
        return None if plan is None else StoredPolicy(plan.policy, plan.table)

    async def set_routing(self, name: str, document: object) -> StoredPolicy:
        """Validate ``document`` as a :class:`RoutingPolicy`, persist it with its bucket table (derived from
        the current one: the fewest units move) and apply it. Raises ``ValidationError`` naming the field,
        ``RoutingError`` for an unknown model."""
        self.routing(name)  # an unknown model says so
        try:
            policy = RoutingPolicy.model_validate(document)
        except PydanticValidationError as exc:
            raise ValidationError(f"model '{name}': invalid routing policy: {describe_errors(exc)}") from exc
        check_policy(name, policy, self._manager)  # a fallback model must accept this model's inputs
        async with self._policy_changes:
            table = None
            if policy.split:
                weights = [(arm.arm, arm.weight) for arm in policy.split]
                previous = self.policies.table(name)
                table = BucketTable.fresh(weights) if previous is None else rebalance(previous, weights)
            if self._policy_files is not None:
                await asyncio.to_thread(self._policy_files.write, name, policy, table)
            self.policies.set(name, policy, table)
        return StoredPolicy(policy, table)

    async def clear_routing(self, name: str) -> None:
        """Remove ``name``'s policy and its file: it routes as before (until a restart brings back a
        settings-file policy for it)."""
        self.routing(name)
        async with self._policy_changes:
            if self._policy_files is not None:
                await asyncio.to_thread(self._policy_files.delete, name)
            self.policies.clear(name)

    async def reload_routing(self, name: str) -> None:
        """Read ``name``'s policy from its file again (another worker changed it)."""
        check_model_name(name)
        if self._policy_files is None:
            return
        async with self._policy_changes:
            stored = await asyncio.to_thread(self._policy_files.read, name)
            if stored is None:
                self.policies.clear(name)
            else:
                self.policies.set(name, stored.policy, stored.table)

    async def load_routing(self, initial: Mapping[str, RoutingPolicy]) -> None:
        """At start: every persisted policy, then ``initial`` (the settings file's) for the models that have
        no file. Raises ``ModelServeError`` naming a file that is not a valid policy."""
        files = self._policy_files
        persisted = await asyncio.to_thread(files.models) if files is not None else []
        for name in persisted:
            assert files is not None
            stored = await asyncio.to_thread(files.read, name)
            if stored is not None:
                self.policies.set(name, stored.policy, stored.table)
        for name, policy in initial.items():
            if name not in persisted:
                self.policies.set(name, policy)
