"""Resolve a request's model name and version to a loaded version.

The version slot holds a number, an alias (``production``, ``canary``, ...), or nothing: then the
``production`` alias when it is set and its version is loaded, else the highest loaded version. With
``load_on_demand`` a known model that is not loaded is loaded by its first request (once, however many
requests race for it). Canary weights and header overrides (the routing issue) hook in here, reading
the request's :class:`~modelserve.core.context.RequestContext`.
"""

from __future__ import annotations

import asyncio
from functools import partial

from modelserve.core import triton_texts
from modelserve.core.context import EMPTY_CONTEXT, RequestContext
from modelserve.core.errors import ErrorCode, ModelServeError, RoutingError, ValidationError
from modelserve.core.names import check_model_name, check_version
from modelserve.core.steps import OnLoop, RunBlocking, Steps
from modelserve.repository.loaded import LoadedVersion
from modelserve.repository.manager import ModelManager
from modelserve.routing.aliases import DEFAULT_ALIAS, Alias, AliasStore, check_alias_name

__all__ = ["Router"]


class Router:
    def __init__(self, manager: ModelManager, aliases: AliasStore, *, load_on_demand: bool) -> None:
        self._manager = manager
        self._aliases = aliases
        self._load_on_demand = load_on_demand

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

    def resolve(self, name: str, version: str, context: RequestContext = EMPTY_CONTEXT) -> Steps[LoadedVersion]:
        """The steps that find the version to run (driven on the loop or on a gRPC thread); ``context``
        carries the headers and caller that traffic rules route on (none yet: the routing issue). Raises
        ``ValidationError`` for a malformed name/version, ``RoutingError`` for an unknown or unavailable
        one, ``ModelLoadError`` when an on-demand load fails."""
        check_model_name(name)
        check_version(version)
        manager = self._manager
        if self._load_on_demand and not manager.is_loaded(name) and manager.is_known(name):
            yield OnLoop(partial(manager.ensure_loaded, name))
        if self._must_read_aliases(name, version):
            yield RunBlocking(partial(self._aliases.aliases, name))  # the first look reads a file: off the loop
        return self._pick(name, version)

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
