"""The engine: every part of the server wired together, without a socket.

``modelserve serve`` is an :class:`Engine` plus listeners (``app/serve.py``); a Python program can use
the same engine directly::

    async with Engine.from_repository("examples/models", load=["iris"]) as engine:
        result = await engine.infer("iris", {"input-0": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)})

Same models, scheduling, dynamic batching, limits, lifecycle, aliases, metrics, prediction log and drift
as the server, because it is the same code: the engine builds the model manager, the router, the
admission gate, the dataplane and the observability parts, and owns their background work (initial
loading, repository polling, idle unloading, the monitor's sampling and the alert rules) in one
``asyncio.TaskGroup``. Leaving it drains in-flight requests, unloads every model and reaps the python
runtime's worker processes.

Threads: use an engine from the event loop it was started on; ``start`` and ``stop`` from the same task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np
from pydantic import ValidationError as PydanticValidationError

from modelserve import __version__
from modelserve.app.observability import ObservabilityParts, build_observability
from modelserve.config import ControlMode, Settings, SettingsError, load_settings, settings_from_mapping
from modelserve.core.clock import Clock, MonotonicClock
from modelserve.core.context import REQUEST_ID_HEADER, RequestContext, select_headers
from modelserve.core.datatypes import Datatype, datatype_from_numpy
from modelserve.core.errors import ModelServeError, ValidationError
from modelserve.core.inference import InferRequest, InferResult, RequestedOutput
from modelserve.core.names import check_model_name
from modelserve.observability.metrics import ServerMetrics
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.protocol.parameters import parse_request_parameters
from modelserve.repository.manager import IndexEntry, ModelManager
from modelserve.repository.poller import RepositoryPoller
from modelserve.repository.scheduler_config import SchedulingDefaults
from modelserve.repository.uploads import UploadedModels
from modelserve.routing.aliases import AliasStore
from modelserve.routing.breaker import BreakerState
from modelserve.routing.fallback import check_policy
from modelserve.routing.policy import RoutingPolicy
from modelserve.routing.policy_files import PolicyFiles, describe_errors
from modelserve.routing.router import Router
from modelserve.scheduling.admission import SHUTTING_DOWN, AdmissionGate
from modelserve.service.dataplane import DataPlane
from modelserve.service.operations import Operations
from modelserve.service.resilience import Resilience
from modelserve.service.shared_memory import SharedMemoryRegistry

__all__ = ["Engine"]

log = logging.getLogger("modelserve")

# A python model or an ONNX session can take a while to load, but an in-process caller that asked for a
# model must learn that it failed rather than wait forever.
_MAX_TIMEOUT_S = 24 * 3600.0


class Engine:
    """modelserve in process. Construct with settings (``Engine(settings)``) or from a repository path
    (:meth:`from_repository`); use as ``async with``. The constructor only builds objects: no thread,
    task, file read or process starts before :meth:`start`."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or MonotonicClock()
        self.metrics = ServerMetrics()
        repository = settings.repository
        self.manager = ModelManager(
            root=repository.path,
            scheduling=SchedulingDefaults(
                max_queue_size=settings.scheduling.max_queue_size,
                batch_policy=settings.scheduling.batch_policy.value,
                max_queue_time_ns=settings.scheduling.max_queue_time_ms * 1_000_000,
                inline_below_ns=settings.scheduling.inline_below_us * 1000,
            ),
            load_concurrency=repository.load_threads,
            clock=self.clock,
            memory_budget_bytes=repository.memory_budget_mb * 2**20,
            pinned=frozenset(repository.pinned_models),
            metrics=self.metrics,
            allow_symlinks=repository.allow_symlinks,
            control_mode=repository.control_mode,
            uploads=UploadedModels(Path(tempfile.gettempdir())) if repository.allow_load_files else None,
        )
        self._observability: ObservabilityParts = build_observability(settings, self.manager, self.metrics, self.clock)
        self.gate = AdmissionGate(settings.server.max_inflight_requests)
        shm = settings.shared_memory
        self.shared_memory = (
            SharedMemoryRegistry(max_regions=shm.max_regions, max_total_bytes=shm.max_total_bytes)
            if shm.enabled
            else None
        )
        self.router = Router(
            self.manager,
            AliasStore(repository.path, allow_symlinks=repository.allow_symlinks),
            load_on_demand=repository.load_on_demand,
            policy_files=PolicyFiles(repository.path, allow_symlinks=repository.allow_symlinks),
        )
        self.dataplane = DataPlane(
            server_name=settings.server.name,
            server_version=__version__,
            manager=self.manager,
            router=self.router,
            gate=self.gate,
            clock=self.clock,
            max_requested_outputs=settings.limits.max_requested_outputs,
            model_control_mode=repository.control_mode.value,
            drain_timeout_s=settings.server.drain_timeout_s,
            observers=self._observability.observers,
            shared_memory=self.shared_memory,
            resilience=Resilience(self.router, self.clock, self.metrics),
        )
        self.metrics.watch_breakers(self.dataplane.resilience.breaker_rows, [state.value for state in BreakerState])
        self.metrics.watch_shadows(self.dataplane.shadows.rows)
        self.dataplane.on_routed = self._count_routed
        self._configured_headers = frozenset(settings.server.context_headers) | {REQUEST_ID_HEADER}
        # (the routing headers they were built with, the headers read): rebuilt when a policy changes them.
        self._context_headers = (self.router.policies.headers, self._configured_headers)
        self._stack: contextlib.AsyncExitStack | None = None
        self._background: list[asyncio.Task[None]] = []
        self._loaded = asyncio.Event()
        self._stopped = False

    @classmethod
    def from_repository(
        cls,
        path: str | Path,
        *,
        load: Sequence[str] | Literal["*"] | None = None,
        config: Mapping[str, Any] | str | Path | None = None,
        clock: Clock | None = None,
    ) -> Engine:
        """An engine over the model repository at ``path``.

        ``load``: the models to load at start (``"*"``: all of them; the engine then runs in explicit
        control mode); None leaves it to ``config`` (by default every model loads).
        ``config``: a mapping in the shape of ``modelserve.yaml`` (``{"server": {"max_inflight_requests":
        4}}``) or the path of such a file, validated exactly like the server's. Raises
        :class:`~modelserve.config.SettingsError` naming the setting that is wrong.
        """
        overrides: dict[str, Any] = {"repository": {"path": str(path)}}
        if load is not None:
            names = ["*"] if load == "*" else [check_model_name(name) for name in load]
            overrides["repository"].update({"control_mode": ControlMode.EXPLICIT.value, "load_models": names})
        if config is None or isinstance(config, Mapping):
            settings = settings_from_mapping(dict(config or {}), overrides)
        else:
            settings = load_settings(Path(config), overrides)
        return cls(settings, clock=clock)

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def operations(self) -> Operations:
        """The read-only operations views (windowed monitor, drift, alerts) the dashboard serves."""
        return self._observability.operations

    async def start(self) -> None:
        """Start the background work and begin loading; returns before the models are loaded (see
        :meth:`wait_loaded`). Raises :class:`SettingsError` when the repository is missing or a setting
        cannot be honoured (a Parquet prediction log without pyarrow)."""
        if self._stack is not None:
            raise RuntimeError("the engine is already started")
        root = self.settings.repository.path
        if not root.is_dir():
            raise SettingsError(f"repository.path: model repository {root} does not exist or is not a folder")
        try:
            await self.router.load_routing(initial_policies(self.settings))
        except ModelServeError as exc:
            raise SettingsError(exc.message) from exc
        self._observability.start()
        self.dataplane.start_shadows(asyncio.get_running_loop())
        stack = contextlib.AsyncExitStack()
        group = await stack.enter_async_context(asyncio.TaskGroup())
        self._stack = stack
        monitor_s = self.settings.monitor.sample_interval_s
        self._background = [
            group.create_task(self._load_and_poll(group), name="modelserve-load"),
            group.create_task(_every(monitor_s, self._sample), name="modelserve-monitor"),
            group.create_task(self._observability.alerts.run(), name="modelserve-alerts"),
        ]

    async def wait_loaded(self) -> None:
        """Wait until the models asked for at start have loaded or failed (failures are in :meth:`models`)."""
        await self._loaded.wait()

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Refuse new requests and wait up to ``timeout_s`` (default ``server.drain_timeout_s``) for the
        admitted ones. True when they all finished."""
        timeout_s = self.settings.server.drain_timeout_s if timeout_s is None else timeout_s
        drained = await self.gate.drain(timeout_s)
        if not drained:
            log.warning(
                "drain timed out after %.1f s with %d requests in flight; stop() cuts them short (UNAVAILABLE)",
                timeout_s,
                self.gate.inflight,
            )
        return drained

    async def stop(self) -> None:
        """Drain, stop the background work, unload every model (worker processes are reaped), close every
        registered shared-memory region and flush the prediction log. Idempotent.

        Requests still queued or running when the drain gives up (``server.drain_timeout_s``) are cut
        short: each fails with :class:`~modelserve.core.errors.QueueError` (UNAVAILABLE) saying the server
        is shutting down and to retry on another replica; running calls get ``repository.retire``'s
        ``UNLOAD_GRACE_S`` to end before their runtimes unload."""
        if self._stack is None or self._stopped:
            return
        self._stopped = True
        if not self.gate.is_draining:
            await self.drain()
        # Before the models go: queued shadow copies are dropped, the running one ends (its thread drives
        # it through this loop, so it waits off the loop).
        await asyncio.to_thread(self.dataplane.shadows.stop)
        for task in self._background:  # every task of the group: stop() is the group's only exit
            task.cancel()  # undelivered webhook notifications are counted as failed, not awaited
        try:
            await self._stack.aclose()
            # Released with the shutdown as the reason before the manager retires them, so what the drain
            # left behind learns why; the drain is over, so the manager's own drain of each is not repeated.
            for version in self.manager.loaded_versions():
                version.scheduler.close(SHUTTING_DOWN)
            await self.manager.close(drain_timeout_s=0.0)
        finally:
            if self.shared_memory is not None:  # after the drain: no request reads a region any more
                self.shared_memory.close()
            await asyncio.to_thread(self._observability.stop)

    async def __aenter__(self) -> Self:
        await self.start()
        try:
            await self.wait_loaded()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    def _models_to_load(self) -> list[str]:
        repository = self.settings.repository
        known = self.manager.model_names()
        if repository.control_mode is not ControlMode.EXPLICIT or "*" in repository.load_models:
            return known
        return [name for name in repository.load_models if name]

    async def _load_and_poll(self, group: asyncio.TaskGroup) -> None:
        repository = self.settings.repository
        poller = None
        try:
            if repository.control_mode is ControlMode.POLL:
                poller = RepositoryPoller(self.manager, repository.path)
                await poller.remember_current()
            await self.manager.load_all(self._models_to_load())
            self._check_fallbacks()
        except Exception:  # the index says what failed; the engine serves what did load
            log.exception("loading the models at start failed")
        finally:
            self._loaded.set()
        if poller is not None:
            self._background.append(
                group.create_task(_every(repository.poll_secs, poller.poll_once), name="modelserve-poll")
            )
        if repository.unload_idle_secs > 0:
            idle_s = repository.unload_idle_secs
            unload_idle = _every(min(idle_s / 2, 5.0), lambda: self.manager.unload_idle(idle_s))
            self._background.append(group.create_task(unload_idle, name="modelserve-idle"))

    def _check_fallbacks(self) -> None:
        """The policies read at start (settings file, routing.json) meet their models only now they are
        loaded: a fallback chain that does not fit is reported, and the request path skips its entries
        that refuse a request (the routing API refuses such a chain outright)."""
        for name, policy in self.router.policies.policies().items():
            try:
                check_policy(name, policy, self.manager)
            except ValidationError as exc:
                log.warning(
                    "%s; requests skip the entries that do not fit (fix it with PUT /v2/models/%s/routing)",
                    exc.message,
                    name,
                )

    async def _sample(self) -> None:
        self._observability.monitor.sample()

    # -- the API ----------------------------------------------------------------------------------

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray | Sequence[Any]],
        *,
        version: str | None = None,
        parameters: Mapping[str, str | int | float | bool] | None = None,
        outputs: Sequence[str] | None = None,
        priority: int = 0,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> InferResult:
        """Run one inference request and return its outputs as numpy arrays.

        ``version``: a version number or an alias (None: the ``production`` alias, else the highest
        loaded version). ``outputs``: the outputs to compute (None: all). ``priority``: 1 is the highest
        level of a batching model's queue, 0 its default. ``timeout_s``: the request's deadline; a
        request still waiting then fails with DEADLINE_EXCEEDED and never runs. ``headers``: as an HTTP
        client would send them (only ``server.context_headers`` and those a routing policy reads are
        read). The answer's ``arm`` names the routing split's arm that chose the version. Raises the server's domain
        errors (:class:`~modelserve.core.errors.ModelServeError` subclasses with a ``code`` and a message
        that says what to fix).
        """
        parsed = parse_request_parameters(parameters)
        if timeout_s is not None and not 0 < timeout_s <= _MAX_TIMEOUT_S:
            raise ValidationError(f"timeout_s must be in (0, {_MAX_TIMEOUT_S:.0f}] seconds, got {timeout_s!r}")
        request = InferRequest(
            model_name=model,
            model_version=version or "",
            inputs={},
            input_datatypes={},
            id=request_id,
            requested_outputs=None if outputs is None else tuple(RequestedOutput(name) for name in outputs),
            parameters=parsed.custom,
            priority=priority or parsed.priority,
            timeout_us=parsed.timeout_us,
        )
        for name, value in inputs.items():
            request.inputs[name], request.input_datatypes[name] = _tensor(name, value)
        routing_headers, wanted = self._context_headers
        if routing_headers is not self.router.policies.headers:
            routing_headers = self.router.policies.headers
            wanted = self._configured_headers | routing_headers
            self._context_headers = (routing_headers, wanted)
        selected = select_headers((headers or {}).items(), wanted)
        context = RequestContext(
            request_id=request_id or selected.get(REQUEST_ID_HEADER, ""),
            headers=selected,
            deadline_ns=None if timeout_s is None else self.clock.now_ns() + int(timeout_s * 1e9),
            transport="inprocess",
        )
        return await self.dataplane.infer(request, context)

    def ready(self) -> bool:
        """Whether every model asked to load is loaded and can serve (the server's readiness)."""
        return self.dataplane.is_ready()

    def models(self) -> list[IndexEntry]:
        """The repository index: every model and version with its lifecycle state and reason."""
        return self.manager.index()

    async def load(self, name: str) -> None:
        """Load (or reload) ``name``; concurrent calls share one load. Allowed in every control mode: the
        program that owns the engine is its operator. Raises :class:`~modelserve.core.errors.ModelLoadError`."""
        await self.manager.load(check_model_name(name))

    async def unload(self, name: str) -> None:
        """Stop serving ``name``: in-flight requests finish (up to ``server.drain_timeout_s``), then it unloads."""
        await self.manager.unload(check_model_name(name), drain_timeout_s=self.settings.server.drain_timeout_s)

    async def statistics(self, name: str | None = None) -> list[ModelVersionStatistics]:
        """Triton's statistics per loaded version (of ``name``, or of every model)."""
        return await self.dataplane.statistics(name or "", "")

    def routing(self, name: str) -> dict[str, Any]:
        """``name``'s routing policy document (``policy``: None when it has none) and its arms' shares."""
        return self.dataplane.routing(name)

    async def set_routing(self, name: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        """Set ``name``'s routing policy (the shape of the settings file's ``routing.<model>``), persisted
        beside the model. Allowed in every control mode. Raises :class:`ValidationError` naming the field."""
        await self.router.set_routing(name, policy)
        return self.dataplane.routing(name)

    async def clear_routing(self, name: str) -> None:
        """Remove ``name``'s routing policy (and its file)."""
        await self.router.clear_routing(name)

    def _count_routed(self, model: str, arm: str, target: str) -> None:
        self.metrics.routing_requests.labels(model, arm, target).inc()

    def metrics_text(self) -> str:
        """The Prometheus exposition the server's ``/metrics`` would serve now."""
        return self.metrics.render().decode()


def initial_policies(settings: Settings) -> dict[str, RoutingPolicy]:
    """The settings file's ``routing`` policies, validated. Raises :class:`SettingsError` naming the model
    and the field (``routing.iris: split.1.weight: ...``)."""
    policies = {}
    for name, document in settings.routing.items():
        try:
            check_model_name(name)
            policies[name] = RoutingPolicy.model_validate(document)
        except ValidationError as exc:
            raise SettingsError(f"routing.{name[:64]}: {exc.message}") from exc
        except PydanticValidationError as exc:
            raise SettingsError(f"routing.{name}: {describe_errors(exc)}") from exc
    return policies


async def _every(interval_s: float, work: Callable[[], Awaitable[object]]) -> None:
    """Run ``work`` every ``interval_s`` until cancelled; each run is an exception boundary (logged), so a
    failing poll never takes the engine, or the program that embeds it, down."""
    while True:
        try:
            await work()
        except Exception:
            log.exception("background work %s failed; it runs again in %.1f s", work, interval_s)
        await asyncio.sleep(interval_s)


def _tensor(name: str, value: np.ndarray | Sequence[Any]) -> tuple[np.ndarray, Datatype]:
    """An input as the dataplane sees it: a numpy array and its protocol datatype (str → UTF-8 BYTES)."""
    array = np.asarray(value)
    datatype = Datatype.BYTES if array.dtype == object else datatype_from_numpy(array.dtype)
    if datatype is None:
        raise ValidationError(
            f"input '{name[:64]}' has numpy dtype {array.dtype}, which has no protocol datatype; use bool, "
            "(u)int8..64, float16/32/64, or bytes/str (BYTES)"
        )
    if datatype is Datatype.BYTES and array.dtype != object:
        items = [item.encode() if isinstance(item, str) else bytes(item) for item in array.reshape(-1).tolist()]
        array = np.array(items, dtype=object).reshape(array.shape)
    return array, datatype
