"""The composition root: builds every part from the settings, runs both front ends, shuts down cleanly.

The only module that imports the transports and wires layers together. Shutdown on SIGTERM/SIGINT:
readiness turns false and new requests get 503 at once; in-flight requests finish (bounded by
``server.drain_timeout_s``); the listeners close; every model unloads and worker processes are reaped;
the process exits 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
from collections.abc import Iterator

import grpc
import uvicorn

from modelserve import __version__
from modelserve.config import ControlMode, Settings
from modelserve.core.clock import MonotonicClock
from modelserve.observability.metrics import ServerMetrics
from modelserve.observability.monitor import Monitor
from modelserve.operations_wiring import build_operations
from modelserve.protocol.api import InferenceAPI
from modelserve.repository.manager import ModelManager
from modelserve.repository.poller import RepositoryPoller
from modelserve.repository.release import limit_malloc_arenas
from modelserve.repository.scheduler_config import SchedulingDefaults
from modelserve.routing.aliases import AliasStore
from modelserve.routing.router import Router
from modelserve.scheduling.admission import AdmissionGate
from modelserve.transport.grpc.servicer import InferenceServicer, add_to_server
from modelserve.transport.http.app import HttpApp
from modelserve.transport.http.dashboard_assets import DashboardAssets
from modelserve.transport.http.metrics_app import MetricsApp

__all__ = ["Server", "run"]

log = logging.getLogger("modelserve")


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: this process drains first, then tells uvicorn to exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Server:
    """One modelserve process: REST and gRPC listeners over one model manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def _models_to_load(self, manager: ModelManager) -> list[str]:
        repository = self.settings.repository
        known = manager.model_names()
        if repository.control_mode is not ControlMode.EXPLICIT or "*" in repository.load_models:
            return known
        return [name for name in repository.load_models if name]

    async def _load_and_poll(self, manager: ModelManager) -> None:
        repository = self.settings.repository
        poller = None
        if repository.control_mode is ControlMode.POLL:
            poller = RepositoryPoller(manager, repository.path, repository.poll_secs)
            await poller.remember_current()
        await manager.load_all(self._models_to_load(manager))
        async with asyncio.TaskGroup() as group:  # both run until shutdown cancels them
            if poller is not None:
                group.create_task(poller.run())
            if repository.unload_idle_secs > 0:
                group.create_task(self._unload_idle(manager, repository.unload_idle_secs))

    @staticmethod
    async def _unload_idle(manager: ModelManager, idle_s: float) -> None:
        while True:
            await asyncio.sleep(min(idle_s / 2, 5.0))
            await manager.unload_idle(idle_s)

    @staticmethod
    async def _sample(monitor: Monitor, interval_s: float) -> None:
        while True:
            monitor.sample()
            await asyncio.sleep(interval_s)

    def _listener(self, app: HttpApp | MetricsApp, port: int) -> _UvicornServer:
        return _UvicornServer(
            uvicorn.Config(
                app,
                host=self.settings.server.host,
                port=port,
                http="httptools",
                loop="none",
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_keep_alive=30,
                server_header=False,
                date_header=False,
            )
        )

    async def run(self) -> int:
        settings = self.settings
        root = settings.repository.path
        if not root.is_dir():
            log.error("model repository %s does not exist or is not a folder", root)
            return 2
        limit_malloc_arenas()
        clock = MonotonicClock()
        metrics = ServerMetrics()
        manager = ModelManager(
            root=root,
            scheduling=SchedulingDefaults(
                max_queue_size=settings.scheduling.max_queue_size,
                batch_policy=settings.scheduling.batch_policy.value,
            ),
            load_concurrency=settings.repository.load_threads,
            clock=clock,
            memory_budget_bytes=settings.repository.memory_budget_mb * 2**20,
            pinned=frozenset(settings.repository.pinned_models),
            metrics=metrics,
        )
        parts = build_operations(settings, manager, metrics, clock)
        if not parts.start():
            return 2
        gate = AdmissionGate(settings.server.max_inflight_requests)
        api = InferenceAPI(
            server_name="modelserve",
            server_version=__version__,
            manager=manager,
            router=Router(manager, AliasStore(root), load_on_demand=settings.repository.load_on_demand),
            gate=gate,
            max_requested_outputs=settings.limits.max_requested_outputs,
            model_control_mode=settings.repository.control_mode.value,
            drain_timeout_s=settings.server.drain_timeout_s,
            observers=parts.observers,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)

        grpc_server = None
        if settings.grpc.enabled:
            grpc_server = grpc.server(
                concurrent.futures.ThreadPoolExecutor(
                    max_workers=settings.grpc.worker_threads, thread_name_prefix="grpc"
                ),
                options=[
                    ("grpc.max_receive_message_length", settings.limits.max_request_bytes),
                    ("grpc.max_send_message_length", 2**31 - 1),
                    ("grpc.so_reuseport", 0),
                ],
                maximum_concurrent_rpcs=settings.grpc.max_concurrent_rpcs,
            )
            add_to_server(InferenceServicer(api, settings.limits, loop), grpc_server)
            address = f"{settings.server.host}:{settings.grpc.port}"
            if grpc_server.add_insecure_port(address) == 0:
                log.error("cannot listen for gRPC on %s", address)
                return 2
        http_server = None
        if settings.http.enabled:
            http_app = HttpApp(
                api,
                settings.limits,
                metrics if settings.metrics.enabled else None,
                parts.operations,
                DashboardAssets.load() if settings.dashboard.enabled else None,
            )
            http_server = self._listener(http_app, settings.http.port)
        metrics_server = None
        if settings.metrics.port is not None:
            metrics_server = self._listener(MetricsApp(metrics), settings.metrics.port)
        try:
            async with asyncio.TaskGroup() as group:
                # Listeners start at once (live), loading happens behind them (ready when done).
                if grpc_server is not None:
                    grpc_server.start()
                http_task = group.create_task(http_server.serve()) if http_server is not None else None
                metrics_task = group.create_task(metrics_server.serve()) if metrics_server is not None else None
                load_task = group.create_task(self._load_and_poll(manager))
                monitor_task = group.create_task(self._sample(parts.monitor, settings.monitor.sample_interval_s))
                alerts_task = group.create_task(parts.alerts.run())
                log.info(
                    "modelserve %s: REST on %s:%s, gRPC on %s:%s, repository %s",
                    __version__,
                    settings.server.host,
                    settings.http.port,
                    settings.server.host,
                    settings.grpc.port,
                    root,
                )
                stop_task = group.create_task(self._stop.wait())
                listeners = {task for task in (http_task, metrics_task) if task is not None}
                done, _ = await asyncio.wait({stop_task} | listeners, return_when=asyncio.FIRST_COMPLETED)
                if done & listeners and not self._stop.is_set():
                    log.error("an HTTP listener stopped (port in use?); shutting down")
                    stop_task.cancel()
                log.info(
                    "shutting down: draining in-flight requests (up to %.0f s)",
                    settings.server.drain_timeout_s,
                )
                if not load_task.done():
                    load_task.cancel()
                monitor_task.cancel()
                alerts_task.cancel()  # undelivered webhook notifications are counted as failed, not awaited
                drained = await gate.drain(settings.server.drain_timeout_s)
                if not drained:
                    log.warning("drain timed out with %d requests in flight", gate.inflight)
                for server in (http_server, metrics_server):
                    if server is not None:
                        server.should_exit = True
                if grpc_server is not None:
                    stopped = grpc_server.stop(grace=1.0)
                    await asyncio.to_thread(stopped.wait, 5.0)
                await manager.close(drain_timeout_s=1.0)
        finally:
            await asyncio.to_thread(parts.stop)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        log.info("stopped")
        if any(task.done() and not task.cancelled() for task in listeners) and not self._stop.is_set():
            return 1
        return 0


def run(settings: Settings) -> int:
    """Run a server until SIGTERM/SIGINT; returns the exit code."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # uvloop is optional on platforms without it
        runner = asyncio.Runner()
    with runner:
        return runner.run(Server(settings).run())
