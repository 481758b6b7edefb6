"""Resolve a request's model name and version to a loaded version.

Today: the explicit version, else the highest loaded one; with ``load_on_demand`` a known model that is
not loaded is loaded by its first request (once, however many requests race for it). Aliases, canary
weights and header overrides (later issues) hook in here without the layers above changing.
"""

from __future__ import annotations

import asyncio

from modelserve.core.names import check_model_name, check_version
from modelserve.repository.loaded import LoadedVersion
from modelserve.repository.manager import ModelManager

__all__ = ["Router"]


class Router:
    def __init__(self, manager: ModelManager, *, load_on_demand: bool) -> None:
        self._manager = manager
        self._load_on_demand = load_on_demand

    async def resolve(self, name: str, version: str) -> LoadedVersion:
        """The version to run. Raises ``ValidationError`` for a malformed name/version, ``RoutingError``
        for an unknown or unavailable one, ``ModelLoadError`` when an on-demand load fails."""
        check_model_name(name)
        check_version(version)
        manager = self._manager
        if self._load_on_demand and not manager.is_loaded(name) and manager.is_known(name):
            await manager.ensure_loaded(name)
        return manager.get(name, version)

    def resolve_blocking(self, name: str, version: str, loop: asyncio.AbstractEventLoop) -> LoadedVersion:
        """:meth:`resolve` from a thread other than ``loop``'s; an on-demand load runs on ``loop``."""
        check_model_name(name)
        check_version(version)
        manager = self._manager
        if self._load_on_demand and not manager.is_loaded(name) and manager.is_known(name):
            asyncio.run_coroutine_threadsafe(manager.ensure_loaded(name), loop).result()
        return manager.get(name, version)
