"""Loading models: one load per model at a time, however many callers race for it, and the blocking
build of a model's versions.

Invariants:
- A model loads at most once concurrently (single-flight): every caller that asks while a load runs
  awaits that same load and gets its result or its error. A failed load leaves nothing behind and a
  later call retries it.
- A (re)load builds every new version completely (config read, checksums checked, runtimes loaded and
  verified, warmed up, memory measured, scheduler made) off the event loop before it is published; the
  switch from old versions to new ones is one assignment (``ModelRecord.publish``), then the old ones
  drain and unload. A failed reload changes nothing that serves.
- Blocking work (file reads, session creation, worker start-up, unloading) runs in threads.
- Nothing outside the repository root is read, listed or executed: the model folder, config.pbtxt, each
  version folder, its model file and every link under it pass ``core/paths.inside`` before anything
  reads them, and runtimes get the checked, resolved version folder.
- Every failed load counts once in ``modelserve_model_load_failures_total{model, stage}``, with the stage
  the :class:`ModelLoadError` carries (``"load"`` for anything else that went wrong).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from modelserve.core import triton_texts
from modelserve.core.clock import Clock
from modelserve.core.errors import ErrorCode, ModelLoadError, ModelServeError, RoutingError
from modelserve.core.names import check_model_name
from modelserve.core.paths import inside, inside_tree
from modelserve.observability.metrics import ServerMetrics
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.repository import model_config as mcfg
from modelserve.repository.checksums import verify_manifest
from modelserve.repository.eviction import Eviction
from modelserve.repository.labels import read_labels
from modelserve.repository.lifecycle import ModelIndex
from modelserve.repository.loaded import LoadedVersion, VersionState
from modelserve.repository.memory import version_memory
from modelserve.repository.retire import retire, unload_blocking
from modelserve.repository.scan import folder_contents, list_versions
from modelserve.repository.scheduler_config import SchedulingDefaults, build_scheduler
from modelserve.repository.warmup import run_warmup
from modelserve.runtimes.base import LoadContext, Runtime

__all__ = ["Loader", "VersionBuilder"]

log = logging.getLogger(__name__)

# A load with its own config waits for the loads already running on that model, at most this many.
_MAX_OVERRIDE_WAITS = 8
# The loading thread's progress callback: (version, state, reason).
Progress = Callable[[str, VersionState, str], None]


class VersionBuilder:
    """Builds the versions of one model that its config selects. Blocking: runs on a worker thread."""

    def __init__(
        self, *, root: Path, scheduling: SchedulingDefaults, clock: Clock, allow_symlinks: bool = False
    ) -> None:
        self._root = root
        self._allow_symlinks = allow_symlinks  # repository.allow_symlinks
        self._scheduling = scheduling
        self._clock = clock
        self._ignored_warned: set[str] = set()  # models whose ignored config fields were logged

    def build(
        self, name: str, progress: Progress, override: mcfg.ModelConfig | None = None, root: Path | None = None
    ) -> dict[str, LoadedVersion]:
        """Every selected version of ``name``, loaded, warmed up and with its scheduler made (not started),
        by version number. All or nothing: if one version fails, the ones already built are unloaded.
        ``override`` (a load request's ``config``, already parsed and checked) is used instead of the
        folder's config.pbtxt; ``root`` (files sent with the load request, staged by
        ``repository/uploads.py``) instead of the repository: the jail is then that folder.
        Raises :class:`ModelLoadError` with its stage, or whatever a runtime raised."""
        root = self._root if root is None else root
        # Checked before anything under it is listed or read: a model folder linked out of the repository
        # fails here, and the model shows FAILED with the reason (see scan.scan_models).
        model_dir = inside(
            root,
            root / name,
            what=f"model '{name}': model folder",
            allow_symlinks=self._allow_symlinks,
            stage="config",
        )
        if override is None:
            config = mcfg.read_model_config(model_dir, name, root=root, allow_symlinks=self._allow_symlinks)
        else:
            config = mcfg.new_model_config()
            config.CopyFrom(override)
        # Before any file is read: a feature we lack is the reason, not what it makes fail later.
        mcfg.refuse_unsupported_features(
            config, source=mcfg.CONFIG_FILENAME if override is None else "the load request's config"
        )
        available = list_versions(model_dir)
        chosen = mcfg.select_versions(config, available)
        if not chosen:
            raise ModelLoadError(
                f"model '{name}': no version folder matches its version_policy (found {sorted(available)}); "
                f"add a numeric folder such as '{name}/1/'",
                stage="config",
            )
        labels = read_labels(config, model_dir, root=root, allow_symlinks=self._allow_symlinks)
        built: dict[str, LoadedVersion] = {}
        try:
            for number in chosen:
                key = str(number)
                version_config = mcfg.new_model_config()
                version_config.CopyFrom(config)

                def report(state: VersionState, key: str = key) -> None:
                    progress(key, state, "")

                try:
                    built[key] = self._build_version(version_config, model_dir / key, key, report, labels, root)
                except ModelServeError as exc:
                    progress(key, VersionState.FAILED, exc.message)
                    raise
                except Exception as exc:
                    progress(key, VersionState.FAILED, type(exc).__name__)
                    raise
        except BaseException:
            for version in built.values():
                unload_blocking(version)
            raise
        return built

    def _build_version(
        self,
        config: mcfg.ModelConfig,
        version_dir: Path,
        version: str,
        report: Callable[[VersionState], None],
        labels: Mapping[str, tuple[str, ...]],
        root: Path,
    ) -> LoadedVersion:
        owner = f"model '{config.name}' version {version}"
        started = self._clock.now_ns()
        report(VersionState.LOADING)
        allow = self._allow_symlinks
        model_dir = version_dir.parent  # the checked model folder (version_dir may resolve elsewhere inside)
        # The version folder and every link anywhere under it (what a runtime may open beside its model
        # file: ONNX external data, a python model's modules) stay inside the repository; the runtime
        # gets the resolved folder, so it opens what was checked.
        version_dir = inside(root, version_dir, what=f"{owner}: version folder", allow_symlinks=allow)
        inside_tree(root, version_dir, what=f"{owner}: version folder entry", allow_symlinks=allow)
        kind = mcfg.resolve_runtime(config, version_dir)
        filename = config.default_model_filename or kind.default_filename
        model_file = inside(
            root, version_dir / filename, what=f"{owner}: model file", must_exist=False, allow_symlinks=allow
        )
        if not model_file.is_file():
            hint = "" if config.default_model_filename else "; name another file with default_model_filename"
            raise ModelLoadError(
                f"{owner}: {version}/{filename} not found; the folder holds: {folder_contents(version_dir)}{hint}",
                stage="load",
            )
        # Checked before any runtime reads the files: a corrupt or swapped artefact is never loaded.
        verify_manifest(version_dir, owner, repository=root, allow_symlinks=allow)
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
                raise ModelLoadError(f"{owner}: instances {unhealthy} are not healthy after loading", stage="verify")
            loaded_at = self._clock.now_ns()
            report(VersionState.WARMING)
            warmup_calls = run_warmup(
                config, signature, runtimes, model_dir, owner, repository=root, allow_symlinks=allow
            )
            warmed_at = self._clock.now_ns()
            if warmup_calls:
                log.info("%s: %d warm-up calls in %.1f ms", owner, warmup_calls, (warmed_at - loaded_at) / 1e6)
            # Measured after warm-up: a worker's first requests grow it (imports, buffers) and that stays.
            memory = version_memory([runtime.memory_bytes() for runtime in runtimes])
        except BaseException:
            for runtime in runtimes:
                runtime.unload()
            raise
        ignored = mcfg.ignored_fields(config)
        if ignored and config.name not in self._ignored_warned:
            self._ignored_warned.add(config.name)
            log.warning("model %s: config fields not acted on by this server: %s", config.name, ", ".join(ignored))
        statistics = ModelVersionStatistics(name=config.name, version=version)
        statistics.memory_bytes = memory.size_bytes
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
            memory_source=memory.source,
            labels=labels,
        )


class Loader:
    """Single-flight loads: owns the load tasks (one per model at most). Use from the event loop only."""

    def __init__(
        self,
        *,
        index: ModelIndex,
        builder: VersionBuilder,
        eviction: Eviction,
        load_concurrency: int,
        clock: Clock,
        metrics: ServerMetrics,
    ) -> None:
        self._index = index
        self._builder = builder
        self._eviction = eviction
        self._load_concurrency = load_concurrency
        self._clock = clock
        self._metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots: asyncio.Semaphore | None = None  # made on first use, on the loop that uses it

    def loading(self) -> frozenset[str]:
        """The models with a load in progress now."""
        return frozenset(self._tasks)

    async def load(self, name: str, override: mcfg.ModelConfig | None = None, root: Path | None = None) -> None:
        """Load (or reload) ``name``. Concurrent calls share one load. Raises :class:`ModelLoadError`, or
        :class:`RoutingError` (NOT_FOUND) when the repository has no folder ``name``.

        With ``override`` (a config given with the load request) the call never joins a load already
        running, which reads another config: it waits for that one to finish, then loads with its own.
        ``root`` is where the model folder is when it is not the repository (files sent with the load).

        The load runs as a task the loader owns, not in the caller: a caller that goes away (client
        disconnect) cancels only its own wait, never the load the others are waiting for.
        """
        check_model_name(name)
        if override is not None:
            for _ in range(_MAX_OVERRIDE_WAITS):
                if name not in self._tasks:
                    break
                await self.wait(name)
            else:
                raise ModelLoadError(
                    f"model '{name}' is being loaded again and again by other calls; repeat the load with "
                    "its config once they are done",
                    stage="config",
                    code=ErrorCode.UNAVAILABLE,
                )
        task = self._tasks.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(name, override, root), name=f"load-{name}")
            self._tasks[name] = task
            task.add_done_callback(self._finished)
        await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[None]) -> None:
        for name, pending in list(self._tasks.items()):
            if pending is task:
                del self._tasks[name]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter already got it, or none was left to care

    async def ensure_loaded(self, name: str) -> None:
        """Load ``name`` unless it is loaded already; the on-demand path of the first request. The wait
        (the cold start, in the injected clock's time) is recorded and shown in the index."""
        if self._index.is_loaded(name):
            return
        started = self._clock.now_ns()
        await self.load(name)
        record = self._index.find(name)
        if record is not None:
            record.cold_start_ns = self._clock.now_ns() - started
            self._metrics.cold_start_seconds.labels(name).set(record.cold_start_ns / 1e9)

    async def wait(self, name: str) -> None:
        """Wait for the load of ``name`` in progress, if any, whatever its outcome."""
        pending = self._tasks.get(name)
        if pending is not None:
            await asyncio.gather(asyncio.shield(pending), return_exceptions=True)

    async def wait_all(self) -> None:
        """Wait for every load in progress, whatever their outcomes."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _load(self, name: str, override: mcfg.ModelConfig | None, root: Path | None) -> None:
        if root is None and not self._index.has_folder(name):
            raise RoutingError(
                triton_texts.unknown_model_load(
                    name, f"no folder '{name}' in the model repository; GET /v2/repository/index lists the models"
                )
            )
        record = self._index.record(name)
        record.begin_load()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._load_concurrency)
        try:
            await self._eviction.make_room(name, record, loading=self.loading())
            async with self._slots:
                new_versions = await asyncio.to_thread(self._builder.build, name, record.report, override, root)
        except ModelLoadError as exc:
            # The index keeps the stage's own reason; the caller's error starts with Triton's words.
            record.fail(exc.message)
            self._count_failure(name, exc.stage)
            log.error("model %s failed to load: %s", name, exc.message)
            raise ModelLoadError(
                triton_texts.failed_to_load(name, exc.message),
                stage=exc.stage,
                code=exc.code,
                retry_after_s=exc.retry_after_s,
            ) from exc
        except ModelServeError as exc:
            record.fail(exc.message)
            self._count_failure(name, "load")
            log.error("model %s failed to load: %s", name, exc.message)
            raise
        except Exception as exc:
            message = f"the loader raised {type(exc).__name__}; the server log has the details"
            record.fail(message)
            self._count_failure(name, "load")
            log.exception("model %s failed to load", name)
            raise ModelLoadError(triton_texts.failed_to_load(name, message), code=ErrorCode.INTERNAL) from exc
        try:
            for version in new_versions.values():
                await version.scheduler.start()
        except BaseException:
            await retire(new_versions.values(), drain_timeout_s=0.0)
            raise
        old = record.publish(new_versions, now_ns=self._clock.now_ns())
        await self._eviction.enforce_after(name, record, loading=self.loading())
        timings = ", ".join(
            f"v{v.version} {v.load_ns / 1e6:.0f} ms, warm-up {v.warmup_ns / 1e6:.0f} ms, "
            f"{v.statistics.memory_bytes / 2**20:.1f} MiB ({v.memory_source})"
            for v in new_versions.values()
        )
        log.info("model %s ready, versions %s (load %s)", name, sorted(new_versions, key=int), timings)
        await retire(old, record=record)

    def _count_failure(self, name: str, stage: str) -> None:
        self._metrics.load_failures.labels(name, stage).inc()
