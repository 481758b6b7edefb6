"""Loading and unloading models: one load per model at a time, however many callers race for it.

Invariants:
- A model loads at most once concurrently (single-flight): every caller that asks while a load runs
  awaits that same load and gets its result or its error. A failed load leaves nothing behind and a
  later call retries it.
- A (re)load builds every new version completely (files read, runtimes loaded, scheduler made) off the
  event loop before it is published; the switch from old versions to new ones is one assignment, then
  the old ones drain (in-flight requests finish) and unload. A failed reload changes nothing.
- Blocking work (file reads, session creation, worker start-up, unloading) runs in threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modelserve.core.clock import Clock
from modelserve.core.errors import ErrorCode, ModelLoadError, ModelServeError, RoutingError
from modelserve.core.names import check_model_name, check_version
from modelserve.observability.metrics import ServerMetrics
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.repository import model_config as mcfg
from modelserve.repository.checksums import verify_manifest
from modelserve.repository.loaded import LoadedVersion, VersionState
from modelserve.repository.memory import ModelUsage, choose_evictions, resident_bytes
from modelserve.repository.release import release_free_memory
from modelserve.repository.scan import list_models, list_versions
from modelserve.repository.scheduler_config import SchedulingDefaults, build_scheduler
from modelserve.repository.warmup import run_warmup
from modelserve.runtimes.base import LoadContext, Runtime

__all__ = ["IndexEntry", "ModelManager"]

log = logging.getLogger(__name__)


def _failure_stage(message: str) -> str:
    if "checksum" in message or "SHA256SUMS" in message:
        return "checksum"
    if "warm-up" in message:
        return "warmup"
    return "load"


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: VersionState
    reason: str
    memory_bytes: int = 0
    load_ms: float = 0.0
    warmup_ms: float = 0.0
    cold_start_ms: float = 0.0


@dataclass(slots=True)
class _Model:
    versions: dict[str, LoadedVersion]
    state: VersionState
    reason: str = ""
    # Versions on their way in (LOADING, VERIFYING, WARMING), that failed to (FAILED), or on their way out
    # (DRAINING): written by the loading thread, read by the index on the loop (plain dict writes).
    transient: dict[str, tuple[VersionState, str]] = field(default_factory=dict)
    last_used_ns: int = 0
    cold_start_ns: int = 0  # how long the request that loaded it on demand waited (0: not loaded on demand)
    memory_bytes: int = 0  # of the loaded versions, as measured at load
    measured_bytes: int = 0  # the last measurement, kept after unload to size the next load


class ModelManager:
    """Owns every loaded model version. Use from the event loop thread only."""

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
    ) -> None:
        self._root = root
        self._metrics = metrics or ServerMetrics()
        self._memory_budget_bytes = memory_budget_bytes
        self._pinned = pinned
        self._scheduling = scheduling
        self._load_concurrency = load_concurrency
        self._clock = clock
        self._models: dict[str, _Model] = {}
        self._loads: dict[str, asyncio.Task[None]] = {}
        self._load_slots: asyncio.Semaphore | None = None
        self._ignored_warned: set[str] = set()

    # -- queries -------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Models in the repository folder, whether loaded or not."""
        try:
            return list_models(self._root)
        except OSError:
            return []

    def is_known(self, name: str) -> bool:
        return name in self._models or (self._root / name / "").is_dir()

    def is_loaded(self, name: str) -> bool:
        model = self._models.get(name)
        return model is not None and bool(model.versions)

    def get(self, name: str, version: str) -> LoadedVersion:
        """The loaded version to serve ``name``/``version`` ("" = the highest ready version).

        Raises :class:`RoutingError`: NOT_FOUND for an unknown model or version, UNAVAILABLE for a known
        model that is not loaded or not ready.
        """
        model = self._models.get(name)
        if model is None or not model.versions:
            if model is not None and model.state is VersionState.LOADING:
                raise RoutingError(
                    f"model '{name}' is loading; retry shortly", code=ErrorCode.UNAVAILABLE, retry_after_s=1
                )
            if model is not None or self.is_known(name):
                reason = f": {model.reason}" if model is not None and model.reason else ""
                raise RoutingError(
                    f"model '{name}' is not loaded{reason}; load it with POST /v2/repository/models/{name}/load",
                    code=ErrorCode.UNAVAILABLE,
                )
            raise RoutingError(
                f"unknown model '{name}': no such model in the repository; GET /v2/repository/index lists the models"
            )
        model.last_used_ns = self._clock.now_ns()
        if not version:
            return model.versions[max(model.versions, key=int)]
        loaded = model.versions.get(version)
        if loaded is None:
            raise RoutingError(
                f"model '{name}' has no version '{version}' loaded; loaded versions: {sorted(model.versions, key=int)}"
            )
        return loaded

    def has_version(self, name: str, version: str) -> bool:
        model = self._models.get(name)
        return model is not None and version in model.versions

    def loaded_versions(self, name: str | None = None) -> list[LoadedVersion]:
        names = [name] if name is not None else sorted(self._models)
        return [
            loaded
            for model_name in names
            if model_name in self._models
            for _, loaded in sorted(self._models[model_name].versions.items(), key=lambda kv: int(kv[0]))
        ]

    def all_ready(self) -> bool:
        """Strict readiness: every model asked to load is loaded and every loaded version can serve."""
        return all(
            model.state is VersionState.READY and all(v.is_ready for v in model.versions.values())
            for model in self._models.values()
            if model.state is not VersionState.UNKNOWN
        )

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """One entry per version that serves or is on its way in or out, with its lifecycle state; a model
        with none gets one entry without a version (UNKNOWN, UNLOADED, FAILED with the reason)."""
        entries: list[IndexEntry] = []
        for name in sorted(set(self.model_names()) | set(self._models)):
            model = self._models.get(name)
            versions: dict[str, IndexEntry] = {}
            if model is not None:
                for version, (state, reason) in list(model.transient.items()):
                    versions[version] = IndexEntry(name, version, state, reason)
                for version, loaded in list(model.versions.items()):
                    state = VersionState.READY if loaded.is_ready else VersionState.UNAVAILABLE
                    versions[version] = IndexEntry(
                        name,
                        version,
                        state,
                        "" if loaded.is_ready else "not healthy",
                        memory_bytes=loaded.statistics.memory_bytes,
                        load_ms=loaded.load_ns / 1e6,
                        warmup_ms=loaded.warmup_ns / 1e6,
                        cold_start_ms=model.cold_start_ns / 1e6,
                    )
            if not versions:
                state = model.state if model is not None else VersionState.UNKNOWN
                versions[""] = IndexEntry(name, "", state, model.reason if model is not None else "")
            for _, entry in sorted(versions.items(), key=lambda kv: int(kv[0] or 0)):
                if not ready_only or entry.state is VersionState.READY:
                    entries.append(entry)
        return entries

    # -- loading ---------------------------------------------------------------------------------

    async def load(self, name: str) -> None:
        """Load (or reload) ``name``. Concurrent calls share one load. Raises :class:`ModelLoadError`.

        The load runs as a task the manager owns, not in the caller: a caller that goes away (client
        disconnect) cancels only its own wait, never the load the others are waiting for.
        """
        check_model_name(name)
        task = self._loads.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(name), name=f"load-{name}")
            self._loads[name] = task
            task.add_done_callback(self._load_finished)
        await asyncio.shield(task)

    def _load_finished(self, task: asyncio.Task[None]) -> None:
        for name, pending in list(self._loads.items()):
            if pending is task:
                del self._loads[name]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter already got it, or none was left to care

    async def ensure_loaded(self, name: str) -> None:
        """Load ``name`` unless it is loaded already; the on-demand path of the first request. The wait
        (the cold start) is recorded and shown in the index."""
        if not self.is_loaded(name):
            started = self._clock.now_ns()
            await self.load(name)
            model = self._models.get(name)
            if model is not None:
                model.cold_start_ns = self._clock.now_ns() - started
                self._metrics.cold_start_seconds.labels(name).set(model.cold_start_ns / 1e9)

    async def _load(self, name: str) -> None:
        if not (self._root / name).is_dir():
            raise RoutingError(f"unknown model '{name}': no folder '{name}' in the model repository")
        model = self._models.setdefault(name, _Model(versions={}, state=VersionState.UNKNOWN))
        model.transient = {v: st for v, st in model.transient.items() if st[0] is VersionState.DRAINING}
        if not model.versions:
            model.state = VersionState.LOADING
        if self._load_slots is None:
            self._load_slots = asyncio.Semaphore(self._load_concurrency)
        if self._memory_budget_bytes:
            await self._make_room(name, model)
        try:
            async with self._load_slots:
                new_versions = await asyncio.to_thread(self._load_blocking, name, model.transient)
        except ModelServeError as exc:
            if not model.versions:
                model.state, model.reason = VersionState.FAILED, exc.message
            log.error("model %s failed to load: %s", name, exc.message)
            raise
        except Exception as exc:
            message = f"model '{name}' failed to load: {type(exc).__name__}"
            if not model.versions:
                model.state, model.reason = VersionState.FAILED, message
            log.exception("model %s failed to load", name)
            raise ModelLoadError(message, code=ErrorCode.INTERNAL) from exc
        try:
            for version in new_versions.values():
                await version.scheduler.start()
        except BaseException:
            await self._retire(new_versions.values(), drain_timeout_s=0.0)
            raise
        old = model.versions
        # The switch: one assignment. From here new requests go to the new versions.
        model.versions, model.state, model.reason = new_versions, VersionState.READY, ""
        for number in new_versions:
            model.transient.pop(number, None)
        model.last_used_ns = self._clock.now_ns()
        model.memory_bytes = model.measured_bytes = sum(v.statistics.memory_bytes for v in new_versions.values())
        if self._memory_budget_bytes:
            await self._enforce_budget_after(name, model)
        timings = ", ".join(
            f"v{v.version} {v.load_ns / 1e6:.0f} ms, warm-up {v.warmup_ns / 1e6:.0f} ms" for v in new_versions.values()
        )
        log.info("model %s ready, versions %s (load %s)", name, sorted(new_versions, key=int), timings)
        await self._retire(old.values(), model=model)

    def _load_blocking(self, name: str, progress: dict[str, tuple[VersionState, str]]) -> dict[str, LoadedVersion]:
        model_dir = self._root / name
        config = mcfg.read_model_config(model_dir, name)
        available = list_versions(model_dir)
        chosen = mcfg.select_versions(config, available)
        if not chosen:
            raise ModelLoadError(
                f"model '{name}': no version folder matches its version_policy (found {sorted(available)}); "
                f"add a numeric folder such as '{name}/1/'"
            )
        loaded: dict[str, LoadedVersion] = {}
        try:
            for number in chosen:
                key = str(number)
                version_config = mcfg.new_model_config()
                version_config.CopyFrom(config)

                def report(state: VersionState, key: str = key) -> None:
                    progress[key] = (state, "")

                try:
                    loaded[key] = self._load_version(version_config, model_dir / key, key, report)
                except ModelServeError as exc:
                    progress[key] = (VersionState.FAILED, exc.message)
                    self._metrics.load_failures.labels(name, _failure_stage(exc.message)).inc()
                    raise
                except Exception as exc:
                    progress[key] = (VersionState.FAILED, f"{type(exc).__name__}")
                    self._metrics.load_failures.labels(name, "load").inc()
                    raise
        except BaseException:
            for version in loaded.values():
                self._unload_blocking(version)
            raise
        return loaded

    def _load_version(
        self, config: mcfg.ModelConfig, version_dir: Path, version: str, report: Callable[[VersionState], None]
    ) -> LoadedVersion:
        owner = f"model '{config.name}' version {version}"
        started = self._clock.now_ns()
        report(VersionState.LOADING)
        resident_before = resident_bytes()
        kind = mcfg.resolve_runtime(config, version_dir)
        filename = config.default_model_filename or kind.default_filename
        if not (version_dir / filename).is_file():
            raise ModelLoadError(f"{owner}: no '{filename}' in its version folder")
        # Checked before any runtime reads the files: a corrupt or swapped artefact is never loaded.
        verify_manifest(version_dir, owner)
        signature = mcfg.signature_of(config) if config.input and config.output else None
        parameters = {key: value.string_value for key, value in config.parameters.items()}
        count = sum(group.count or 1 for group in config.instance_group) or 1
        runtimes: list[Runtime] = []
        try:
            for index in range(count):
                context = LoadContext(
                    model_name=config.name,
                    version=version,
                    version_dir=version_dir,
                    model_filename=filename,
                    signature=signature,
                    parameters=parameters,
                    instance_index=index,
                )
                runtime = kind.create(context)
                metadata = runtime.load()
                runtimes.append(runtime)
                if index == 0:
                    mcfg.complete_and_check(config, metadata, filename)
                    signature = mcfg.signature_of(config)
            report(VersionState.VERIFYING)
            assert signature is not None
            unhealthy = [i for i, runtime in enumerate(runtimes) if not runtime.is_healthy]
            if unhealthy:
                raise ModelLoadError(f"{owner}: instances {unhealthy} are not healthy after loading")
            loaded_at = self._clock.now_ns()
            report(VersionState.WARMING)
            warmup_calls = run_warmup(config, signature, runtimes, version_dir.parent, owner)
            warmed_at = self._clock.now_ns()
            if warmup_calls:
                log.info("%s: %d warm-up calls in %.1f ms", owner, warmup_calls, (warmed_at - loaded_at) / 1e6)
        except BaseException:
            for runtime in runtimes:
                runtime.unload()
            raise
        ignored = mcfg.ignored_fields(config)
        if ignored and config.name not in self._ignored_warned:
            self._ignored_warned.add(config.name)
            log.warning("model %s: config fields not acted on by this server: %s", config.name, ", ".join(ignored))
        statistics = ModelVersionStatistics(name=config.name, version=version)
        statistics.memory_bytes = max(0, resident_bytes() - resident_before)
        scheduler = build_scheduler(
            config,
            signature=signature,
            version=version,
            runtimes=runtimes,
            statistics=statistics,
            defaults=self._scheduling,
            clock=self._clock,
        )
        return LoadedVersion(
            name=config.name,
            version=version,
            config=config,
            signature=signature,
            runtimes=runtimes,
            scheduler=scheduler,
            statistics=statistics,
            load_ns=loaded_at - started,
            warmup_ns=warmed_at - loaded_at,
        )

    # -- unloading -------------------------------------------------------------------------------

    async def unload(self, name: str, *, drain_timeout_s: float = 30.0) -> None:
        """Stop serving ``name``: new requests are refused, in-flight ones finish, then it unloads."""
        check_model_name(name)
        pending = self._loads.get(name)
        if pending is not None:
            # Never unload under a load in progress: let it finish, then unload what it published.
            await asyncio.gather(asyncio.shield(pending), return_exceptions=True)
        model = self._models.get(name)
        if model is None:
            if not self.is_known(name):
                raise RoutingError(f"unknown model '{name}': no such model in the repository")
            return
        old = model.versions
        model.versions, model.state, model.reason = {}, VersionState.UNLOADED, "unloaded"
        model.memory_bytes = 0
        await self._retire(old.values(), drain_timeout_s=drain_timeout_s, model=model)

    async def _retire(
        self, versions: Iterable[LoadedVersion], *, drain_timeout_s: float = 30.0, model: _Model | None = None
    ) -> None:
        """Drain (admitted requests finish, new ones go elsewhere or are refused), then unload."""
        versions = list(versions)
        if model is not None:
            for version in versions:
                if version.version not in model.versions:
                    model.transient[version.version] = (VersionState.DRAINING, "replaced or unloading")
        for version in versions:
            finished = await version.scheduler.drain(drain_timeout_s)
            if not finished:
                log.warning(
                    "model %s version %s: requests still running after %.0f s drain; unloading anyway",
                    version.name,
                    version.version,
                    drain_timeout_s,
                )
            version.scheduler.close()
            await asyncio.to_thread(self._unload_blocking, version)
            if model is not None and model.transient.get(version.version, (None,))[0] is VersionState.DRAINING:
                del model.transient[version.version]

    @staticmethod
    def _unload_blocking(version: LoadedVersion) -> None:
        version.scheduler.close()
        for runtime in version.runtimes:
            try:
                runtime.unload()
            except Exception:
                log.exception("model %s version %s: unload failed", version.name, version.version)
        release_free_memory()

    # -- memory ----------------------------------------------------------------------------------

    def _usage(self, excluding: str) -> list[ModelUsage]:
        return [
            ModelUsage(
                name=name,
                memory_bytes=model.memory_bytes,
                last_used_ns=model.last_used_ns,
                is_pinned=name in self._pinned,
                is_busy=any(v.scheduler.in_flight for v in model.versions.values()) or name in self._loads,
            )
            for name, model in self._models.items()
            if model.versions and name != excluding
        ]

    def _estimate_bytes(self, name: str, model: _Model) -> int:
        """What loading ``name`` will take: its last measurement, else the size of its files."""
        if model.measured_bytes:
            return model.measured_bytes
        return sum(p.stat().st_size for p in (self._root / name).rglob("*") if p.is_file())

    async def _make_room(self, name: str, model: _Model) -> None:
        """Unload least recently used idle models until ``name`` fits the budget, or refuse the load."""
        needed = await asyncio.to_thread(self._estimate_bytes, name, model)
        usage = self._usage(excluding=name)
        evictions = choose_evictions(usage, budget_bytes=self._memory_budget_bytes, needed_bytes=needed)
        if evictions is None:
            held = ", ".join(
                f"{u.name} {u.memory_bytes / 2**20:.0f} MiB{' (pinned)' if u.is_pinned else ' (busy)'}"
                for u in usage
                if u.is_pinned or u.is_busy
            )
            raise ModelLoadError(
                f"model '{name}' needs about {needed / 2**20:.0f} MiB and the memory budget of "
                f"{self._memory_budget_bytes / 2**20:.0f} MiB (repository.memory_budget_mb) cannot make room: "
                f"{held or 'nothing can be unloaded'}; raise the budget or unpin a model",
                code=ErrorCode.RESOURCE_EXHAUSTED,
            )
        for victim in evictions:
            log.info("memory budget: unloading %s (least recently used) to make room for %s", victim, name)
            self._metrics.evictions.labels(victim, "budget").inc()
            await self.unload(victim)

    async def _enforce_budget_after(self, name: str, model: _Model) -> None:
        """The estimate before a first load is the model's file size; the measurement after it is what
        counts. Over budget: unload least recently used idle models (never the one just loaded)."""
        usage = self._usage(excluding=name)
        evictions = choose_evictions(usage, budget_bytes=self._memory_budget_bytes, needed_bytes=model.memory_bytes)
        if evictions is None:
            log.warning(
                "model %s measured %.0f MiB: the loaded models exceed the memory budget and none can be unloaded",
                name,
                model.memory_bytes / 2**20,
            )
            return
        for victim in evictions:
            log.info("memory budget: unloading %s (least recently used) after %s loaded", victim, name)
            self._metrics.evictions.labels(victim, "budget").inc()
            await self.unload(victim)

    async def unload_idle(self, idle_s: float) -> list[str]:
        """Unload unpinned models with nothing in flight that nobody used for ``idle_s`` seconds."""
        now = self._clock.now_ns()
        idle = [
            usage.name
            for usage in self._usage(excluding="")
            if not usage.is_pinned and not usage.is_busy and now - usage.last_used_ns >= idle_s * 1e9
        ]
        for name in idle:
            log.info("model %s unused for %.0f s; unloading", name, idle_s)
            self._metrics.evictions.labels(name, "idle").inc()
            await self.unload(name)
        return idle

    async def load_all(self, names: Iterable[str]) -> None:
        """Load ``names`` in parallel (bounded); failures are logged and leave the model UNAVAILABLE."""
        results = await asyncio.gather(*(self.load(n) for n in names), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result

    async def close(self, drain_timeout_s: float) -> None:
        """Drain and unload every model (server shutdown); loads still running are awaited first."""
        await asyncio.gather(*self._loads.values(), return_exceptions=True)
        names = list(self._models)
        await asyncio.gather(*(self.unload(n, drain_timeout_s=drain_timeout_s) for n in names))

    @staticmethod
    def check_request_target(name: str, version: str) -> None:
        check_model_name(name)
        check_version(version)
