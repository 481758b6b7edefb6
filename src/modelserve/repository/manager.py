"""The model manager: the one object the other layers hold to ask about, load and unload models.

It composes the parts, each with one job, and adds only unloading and shutdown:

- ``lifecycle.ModelIndex``: the per-model records, their states, and the queries (``get``, ``index``...).
- ``loader.Loader``: single-flight loads; ``loader.VersionBuilder``: the blocking build of a version.
- ``eviction.Eviction``: the memory budget (make room before a load, enforce it after) and idle unloading.
- ``retire.retire``: drain, then unload.

The invariants (one load per model at a time, publish only what is complete, drain before unload) are
stated in ``loader.py`` and ``lifecycle.py``. Use from the event loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from pathlib import Path

from modelserve.config import ControlMode
from modelserve.core import triton_texts
from modelserve.core.clock import Clock
from modelserve.core.errors import ModelLoadError, RoutingError
from modelserve.core.names import check_model_name
from modelserve.observability.metrics import ServerMetrics
from modelserve.repository.config_override import config_from_json
from modelserve.repository.eviction import Eviction
from modelserve.repository.lifecycle import IndexEntry, ModelIndex
from modelserve.repository.loaded import LoadedVersion, VersionState
from modelserve.repository.loader import Loader, VersionBuilder
from modelserve.repository.retire import retire
from modelserve.repository.scheduler_config import SchedulingDefaults
from modelserve.repository.uploads import UploadedModels

__all__ = ["IndexEntry", "ModelManager"]


class ModelManager:
    """Owns every loaded model version. Use from the event loop thread only.

    ``memory_budget_bytes``: what the loaded versions may hold together (0: no budget), as their runtimes
    report it (``Runtime.memory_bytes``). ``pinned``: models the budget and idle unloading never unload.
    ``allow_symlinks`` (``repository.allow_symlinks``): follow symbolic links that stay inside ``root``;
    False refuses every link, and a link out of ``root`` is always refused (``core/paths.py``).
    ``control_mode`` (``repository.control_mode``) words the hint of a "not loaded" error only.
    ``uploads`` (``repository.allow_load_files``): where model files sent with a load are staged; None
    refuses them.
    """

    def __init__(
        self,
        *,
        root: Path,
        scheduling: SchedulingDefaults,
        load_concurrency: int,
        clock: Clock,
        memory_budget_bytes: int = 0,
        pinned: frozenset[str] = frozenset(),
        metrics: ServerMetrics | None = None,
        allow_symlinks: bool = False,
        control_mode: ControlMode = ControlMode.EXPLICIT,
        uploads: UploadedModels | None = None,
    ) -> None:
        metrics = metrics or ServerMetrics()
        self._index = ModelIndex(root, clock, control_mode=control_mode)
        self._eviction = Eviction(
            index=self._index,
            root=root,
            budget_bytes=memory_budget_bytes,
            pinned=pinned,
            clock=clock,
            metrics=metrics,
            unload=self.unload,
        )
        self._loader = Loader(
            index=self._index,
            builder=VersionBuilder(root=root, scheduling=scheduling, clock=clock, allow_symlinks=allow_symlinks),
            eviction=self._eviction,
            load_concurrency=load_concurrency,
            clock=clock,
            metrics=metrics,
        )
        # The load API's ``config`` of each model's last load that had one; forgotten when it unloads.
        self._load_configs: dict[str, str] = {}
        self._uploads = uploads

    # -- queries (see ModelIndex) -----------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Models in the repository folder, whether loaded or not. Costs one stat of the repository
        folder; it is listed again only when that folder changed."""
        return self._index.model_names()

    def is_known(self, name: str) -> bool:
        return self._index.is_known(name)

    def is_loaded(self, name: str) -> bool:
        return self._index.is_loaded(name)

    def get(self, name: str, version: str) -> LoadedVersion:
        """The loaded version to serve ``name``/``version`` ("" = the highest ready version).

        Raises :class:`RoutingError`: NOT_FOUND for an unknown model or version, UNAVAILABLE for a known
        model that is not loaded or not ready.
        """
        return self._index.get(name, version)

    def has_version(self, name: str, version: str) -> bool:
        return self._index.has_version(name, version)

    def loaded_versions(self, name: str | None = None) -> list[LoadedVersion]:
        return self._index.loaded_versions(name)

    def all_ready(self) -> bool:
        """Strict readiness: every model asked to load is loaded and every loaded version can serve."""
        return self._index.all_ready()

    def not_ready(self) -> list[tuple[str, VersionState, str]]:
        """The models that keep :meth:`all_ready` false, as (name, state, reason), by name. Safe from any
        thread (plain reads of the records)."""
        return self._index.not_ready()

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """One entry per version that serves or is on its way in or out, with its lifecycle state; a model
        with none gets one entry without a version (UNKNOWN, UNLOADED, FAILED with the reason)."""
        return self._index.index(ready_only=ready_only)

    # -- loading (see Loader) ---------------------------------------------------------------------

    async def load(self, name: str, config_json: str | None = None, files: Mapping[str, bytes] | None = None) -> None:
        """Load (or reload) ``name``. Concurrent calls share one load. Raises :class:`ModelLoadError`
        (its ``stage`` says where it stopped), or :class:`RoutingError` for a model with no folder.

        ``config_json`` (the load API's ``config``: a Triton ModelConfig as JSON) is used for this load
        instead of config.pbtxt (``repository/config_override.py``); ``files`` (its ``file:`` parameters,
        by relative name) make the model folder instead of the repository's (``repository/uploads.py``;
        only when the manager was given ``uploads``)."""
        override = None if config_json is None else config_from_json(config_json, name)
        staged: Path | None = None
        if files:
            try:
                if self._uploads is None:
                    raise ModelLoadError("model files inside a load request are not accepted", stage="config")
                if override is None:
                    raise ModelLoadError("model files sent with a load need its 'config' parameter too", stage="config")
                staged = await asyncio.to_thread(self._uploads.stage, name, files)
            except ModelLoadError as exc:
                raise ModelLoadError(triton_texts.failed_to_load(name, exc.message), stage="config") from None
        try:
            await self._loader.load(name, override, None if staged is None else staged.parent)
        except BaseException:
            if staged is not None and self._uploads is not None:
                self._uploads.discard(staged)
            raise
        if self._uploads is not None:
            self._uploads.keep(name, staged)
        if config_json is None:
            self._load_configs.pop(name, None)
        else:
            self._load_configs[name] = config_json

    @property
    def accepts_files(self) -> bool:
        """Whether a load may bring its own model files (``repository.allow_load_files``)."""
        return self._uploads is not None

    def load_config_json(self, name: str) -> str | None:
        """The ``config`` the last successful load of ``name`` used, if it had one (a worker that joins
        late loads the model as its siblings did)."""
        return self._load_configs.get(name)

    async def ensure_loaded(self, name: str) -> None:
        """Load ``name`` unless it is loaded already (the on-demand path); the wait shows in the index."""
        await self._loader.ensure_loaded(name)

    async def load_all(self, names: Iterable[str]) -> None:
        """Load ``names`` in parallel (bounded by ``load_concurrency``). A failure is logged and leaves
        that model FAILED with the reason in the index; the others still load. Never raises for a failed
        load (only for cancellation)."""
        results = await asyncio.gather(*(self.load(n) for n in names), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result

    # -- unloading ---------------------------------------------------------------------------------

    async def unload(self, name: str, *, drain_timeout_s: float = 30.0) -> None:
        """Stop serving ``name``: new requests are refused, in-flight ones finish (for up to
        ``drain_timeout_s`` seconds per version), then it unloads. A load in progress finishes first.
        Raises :class:`RoutingError` (NOT_FOUND) for a model the repository does not have."""
        check_model_name(name)
        # Never unload under a load in progress: let it finish, then unload what it published.
        await self._loader.wait(name)
        record = self._index.find(name)
        if record is None:
            if not self._index.is_known(name):
                raise RoutingError(triton_texts.unknown_model(name, "no such model in the repository"))
            return
        self._load_configs.pop(name, None)
        await retire(record.withdraw(), drain_timeout_s=drain_timeout_s, record=record)
        if self._uploads is not None:
            self._uploads.keep(name, None)

    async def unload_idle(self, idle_s: float) -> list[str]:
        """Unload unpinned models with nothing in flight that nobody used for ``idle_s`` seconds; returns
        their names."""
        return await self._eviction.unload_idle(idle_s, loading=self._loader.loading())

    async def close(self, drain_timeout_s: float) -> None:
        """Drain and unload every model (server shutdown); loads still running are awaited first."""
        await self._loader.wait_all()
        names = list(self._index.records())
        await asyncio.gather(*(self.unload(n, drain_timeout_s=drain_timeout_s) for n in names))
        if self._uploads is not None:
            self._uploads.close()
