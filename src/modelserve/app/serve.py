"""The server: the engine (``app/engine.py``) plus its listeners, signal handling and a clean shutdown.

The only module that imports the transports. Shutdown on SIGTERM/SIGINT:
readiness turns false and new requests get 503 at once; in-flight requests finish (bounded by
``server.drain_timeout_s``); every model unloads and worker processes are reaped, and requests the drain
left behind are answered 503 / UNAVAILABLE ("the server is shutting down; retry on another replica");
then the listeners close, once those answers are out; the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import uvicorn

from modelserve import __version__
from modelserve.app import ports
from modelserve.app.engine import Engine
from modelserve.app.siblings import SiblingWorkers, serve_siblings, socket_path
from modelserve.app.workers import WorkerSlot
from modelserve.config import ControlMode, Settings, SettingsError
from modelserve.core.errors import ModelServeError
from modelserve.observability.metrics import ServerMetrics
from modelserve.repository.release import limit_malloc_arenas
from modelserve.transport.grpc.admission import CallLanes, LaneDispatch
from modelserve.transport.grpc.servicer import InferenceServicer, add_to_server
from modelserve.transport.http.app import HttpApp
from modelserve.transport.http.connections import guarded_protocol
from modelserve.transport.http.dashboard_assets import DashboardAssets
from modelserve.transport.http.health_app import HealthApp
from modelserve.transport.http.metrics_app import MetricsApp

__all__ = ["Server", "run"]

log = logging.getLogger("modelserve")


# Descriptors the process needs beside REST connections: gRPC connections, model files, worker pipes, logs.
_FILES_BESIDE_CONNECTIONS = 2048


def raise_open_file_limit(wanted: int) -> None:
    """Raise the soft open-file limit towards ``wanted`` (never past the hard limit), so
    ``http.max_connections`` is what caps connections rather than EMFILE in the accept loop."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning(
            "the open-file limit (%d) is below http.max_connections + %d; connections past it fail to be "
            "accepted: raise the limit (ulimit -n) or lower http.max_connections",
            hard,
            _FILES_BESIDE_CONNECTIONS,
        )


async def _freeze_heap_when_loaded(engine: Engine) -> None:
    """Once the start-up models are in, move everything alive into the collector's permanent generation.

    The loaded models, their runtimes and the imported libraries are hundreds of thousands of long-lived
    objects; every full collection walked them all, pausing the whole process for 75-100 ms about twice a
    second under load (measured: iris at 4,000 req/s), which was the p99 of every request and probe.
    Frozen, they are never walked again; the garbage requests make is collected as before.
    """
    await engine.wait_loaded()
    gc.collect()
    gc.freeze()


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: this process drains first, then tells uvicorn to exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _HealthListener:
    """A listener served by its own event loop on its own thread (the health probes' port)."""

    def __init__(self, server: _UvicornServer, sock: socket.socket) -> None:
        self._server = server
        self._socket = sock
        self._thread = threading.Thread(target=self._serve, name="health-listener", daemon=True)

    def _serve(self) -> None:
        with _runner() as runner:
            runner.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Last, after the drain: probes keep their answers (ready turns false) while the server drains."""
        self._server.should_exit = True
        self._thread.join(timeout=5.0)
        self._socket.close()


class Server:
    """One modelserve process: an :class:`Engine` plus its REST, gRPC and metrics listeners."""

    def __init__(self, settings: Settings, slot: WorkerSlot | None = None) -> None:
        self.settings = settings
        self._slot = slot
        self._stop = asyncio.Event()
        self._grpc_port = settings.grpc.port  # the port gRPC bound (port 0 made real)

    def request_stop(self) -> None:
        self._stop.set()

    def _bind_ports(self) -> dict[ports.Listener, socket.socket]:
        """Bind every listener's port before anything starts (app/ports.py), and probe gRPC's (grpcio binds
        it itself). A worker binds beside its siblings (``SO_REUSEPORT``, app/workers.py), whose supervisor
        has already probed them all. Raises PortError, having closed what it bound."""
        settings, host, reuse_port = self.settings, self.settings.server.host, self._slot is not None
        wanted = [
            (ports.HEALTH, settings.http.health_port),
            (ports.REST, settings.http.port if settings.http.enabled else None),
            (ports.METRICS, settings.metrics.port),
        ]
        bound: dict[ports.Listener, socket.socket] = {}
        try:
            for listener, port in wanted:
                if port is not None:
                    bound[listener] = ports.bind(listener, host, port, reuse_port=reuse_port)
            if settings.grpc.enabled and not reuse_port:
                ports.probe(ports.GRPC, host, settings.grpc.port)
        except ports.PortError:
            for sock in bound.values():
                sock.close()
            raise
        return bound

    async def _join_siblings(self, engine: Engine) -> asyncio.Server | None:
        """A worker answers its siblings' calls and carries its lifecycle changes to them (app/siblings.py)."""
        if self._slot is None:
            return None
        control = Path(self._slot.control_dir)
        engine.dataplane.siblings = SiblingWorkers(control, self._slot.index, self._slot.count)
        return await serve_siblings(
            socket_path(control, self._slot.index), engine.dataplane.local_view(), engine.metrics.render
        )

    async def _catch_up(self, engine: Engine) -> None:
        """A worker that listens late (``WorkerSlot.listens_before_loaded``), before it listens: its start-up
        models, then whatever its siblings loaded through the API, so it serves what they serve."""
        await engine.wait_loaded()
        siblings = engine.dataplane.siblings
        if siblings is None or self.settings.repository.control_mode is not ControlMode.EXPLICIT:
            return
        loaded = {entry.name for entry in engine.dataplane.repository_index(ready_only=True)}
        local = engine.dataplane.local_view()
        for name, parameters in (await siblings.loaded_models()).items():
            # A model its siblings loaded with a config of the load API is loaded again with that config.
            if name not in loaded or parameters:
                try:
                    await local.load_model(name, parameters)
                except ModelServeError as exc:
                    log.error("cannot load '%s', which the other workers serve: %s", name, exc.message)

    def _watch_supervisor(self, loop: asyncio.AbstractEventLoop) -> None:
        """A worker stops itself if its supervisor dies (the sentinel reads end of file)."""
        fd = self._slot.supervisor_fd if self._slot is not None else -1
        if fd < 0:
            return

        def gone() -> None:
            loop.remove_reader(fd)
            log.error("the supervisor is gone; this worker stops")
            self.request_stop()

        loop.add_reader(fd, gone)

    def _health_listener(self, engine: Engine, sock: socket.socket | None) -> _HealthListener | None:
        """``http.health_port``: the probes' own listener on a thread of its own (transport/http/health_app.py),
        on its bound socket; None when not configured."""
        port = self.settings.http.health_port
        if port is None or sock is None:
            return None
        return _HealthListener(self._listener(HealthApp(engine.dataplane), port, None), sock)

    def _listener(
        self, app: HttpApp | MetricsApp | HealthApp, port: int, metrics: ServerMetrics | None
    ) -> _UvicornServer:
        protocol = guarded_protocol(self.settings.http, metrics.count_closed_connection if metrics else None)
        return _UvicornServer(
            uvicorn.Config(
                app,
                host=self.settings.server.host,
                port=port,
                http=protocol,
                loop="none",
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_keep_alive=int(self.settings.http.idle_timeout_s)
                or 1,  # replaced by the protocol's own idle timer
                server_header=False,
                date_header=False,
                # Nothing reads the client's address, so uvicorn's X-Forwarded-For middleware (on by default,
                # trusting 127.0.0.1) is one more layer per request for nothing.
                proxy_headers=False,
            )
        )

    def _grpc_server(self, engine: Engine, loop: asyncio.AbstractEventLoop, lanes: CallLanes) -> grpc.Server | None:
        settings = self.settings
        observe_rejection = engine.metrics.rejection_observer("grpc") if settings.metrics.enabled else None
        server = grpc.server(
            lanes.control,
            options=[
                ("grpc.max_receive_message_length", settings.limits.max_request_bytes),
                ("grpc.max_send_message_length", 2**31 - 1),
                # Off for one process, so a port already taken fails the bind; workers share theirs.
                ("grpc.so_reuseport", 0 if self._slot is None else 1),
                # A connection that has not finished its HTTP/2 preface and settings by then is closed (a
                # stalled client holds no slot past it), like REST's header deadline.
                ("grpc.server_handshake_timeout_ms", int(settings.http.header_timeout_s * 1000)),
            ],
            maximum_concurrent_rpcs=settings.grpc.max_concurrent_rpcs,
            # Each call runs on its lane's threads: health never waits behind inference, and the inference
            # call with no room is refused at dispatch (transport/grpc/admission.py).
            interceptors=[LaneDispatch(settings.grpc, lanes, observe_rejection)],
        )
        servicer = InferenceServicer(
            engine.dataplane,
            settings.limits,
            loop,
            clock=engine.clock,
            context_headers=frozenset(settings.server.context_headers),
            max_stream_inflight=settings.grpc.max_stream_inflight,
            retry_pushback_ms=settings.grpc.retry_pushback_ms,
            observe_rejection=observe_rejection,
        )
        add_to_server(servicer, server)
        address = f"{settings.server.host}:{settings.grpc.port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError:  # grpcio >= 1.60 raises where older versions returned 0
            bound = 0
        if bound == 0:  # taken since _bind_ports probed it
            log.error("%s", ports.GRPC.cannot_listen(settings.server.host, settings.grpc.port, "port in use?"))
            return None
        self._grpc_port = bound
        return server

    async def run(self) -> int:
        settings = self.settings
        limit_malloc_arenas()
        raise_open_file_limit(settings.http.max_connections + _FILES_BESIDE_CONNECTIONS)
        try:
            sockets = self._bind_ports()
        except ports.PortError as exc:
            log.error("%s", exc)
            return 2
        engine = Engine(settings)
        try:
            await engine.start()  # loading runs behind the listeners: live at once, ready when loaded
        except SettingsError as exc:
            log.error("%s", exc)
            await engine.stop()
            for sock in sockets.values():
                sock.close()
            return 2
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        listeners: set[asyncio.Task[None]] = set()
        grpc_lanes = CallLanes(
            settings.grpc, engine.metrics.grpc_thread_wait_seconds.observe if settings.metrics.enabled else None
        )
        sibling_server = await self._join_siblings(engine)
        health = self._health_listener(engine, sockets.get(ports.HEALTH))
        try:
            if health is not None:
                health.start()
            grpc_server = self._grpc_server(engine, loop, grpc_lanes) if settings.grpc.enabled else None
            if settings.grpc.enabled and grpc_server is None:
                return 2
            http_server = None
            if settings.http.enabled:
                http_app_metrics = engine.metrics if settings.metrics.enabled else None
                http_app = HttpApp(
                    engine.dataplane,
                    settings.limits,
                    http_app_metrics,
                    engine.operations,
                    DashboardAssets.load() if settings.dashboard.enabled else None,
                    context_headers=frozenset(settings.server.context_headers),
                    max_backlog_ms=settings.http.max_backlog_ms,
                )
                http_server = self._listener(http_app, settings.http.port, http_app_metrics)
            metrics_server = None
            if settings.metrics.port is not None:
                metrics_app = MetricsApp(engine.metrics, engine.dataplane.siblings)
                metrics_server = self._listener(metrics_app, settings.metrics.port, engine.metrics)
            self._watch_supervisor(loop)
            if self._slot is not None and not self._slot.listens_before_loaded:
                await self._catch_up(engine)
            async with asyncio.TaskGroup() as group:
                if grpc_server is not None:
                    grpc_server.start()
                for server, listener in ((http_server, ports.REST), (metrics_server, ports.METRICS)):
                    if server is not None:
                        listeners.add(group.create_task(server.serve(sockets=[sockets[listener]])))
                # Every port is bound by now (_bind_ports); these are the real ports, also for port 0.
                log.info(
                    "modelserve %s: REST on %s:%s, gRPC on %s:%s, repository %s",
                    __version__,
                    settings.server.host,
                    sockets[ports.REST].getsockname()[1] if ports.REST in sockets else "(off)",
                    settings.server.host,
                    self._grpc_port if grpc_server is not None else "(off)",
                    settings.repository.path,
                )
                group.create_task(_freeze_heap_when_loaded(engine))
                stop_task = group.create_task(self._stop.wait())
                done, _ = await asyncio.wait({stop_task} | listeners, return_when=asyncio.FIRST_COMPLETED)
                if done & listeners and not self._stop.is_set():
                    log.error("an HTTP listener stopped (see its error above); shutting down")
                    stop_task.cancel()
                log.info("shutting down: draining in-flight requests (up to %.1f s)", settings.server.drain_timeout_s)
                await engine.drain()
                # Unload before the listeners close: uvicorn waits for the requests it has in flight, and
                # gRPC cancels its calls after the grace below, so the requests the drain left behind must
                # be answered (UNAVAILABLE, by the unload) while both can still send the answer.
                await engine.stop()
                for server in (http_server, metrics_server):
                    if server is not None:
                        server.should_exit = True
                if grpc_server is not None:
                    stopped = grpc_server.stop(grace=1.0)
                    await asyncio.to_thread(stopped.wait, 5.0)
        finally:
            if health is not None:
                health.stop()
            for sock in sockets.values():
                sock.close()
            if sibling_server is not None:
                sibling_server.close()
            await engine.stop()
            grpc_lanes.shutdown()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        log.info("stopped")
        if any(task.done() and not task.cancelled() for task in listeners) and not self._stop.is_set():
            return 1
        return 0


def run(settings: Settings, slot: WorkerSlot | None = None) -> int:
    """Run a server until SIGTERM/SIGINT; returns the exit code. ``slot``: this process is one of the
    supervisor's workers (app/workers.py)."""
    with _runner() as runner:
        return runner.run(Server(settings, slot).run())


def _runner() -> asyncio.Runner:
    """An event loop runner on uvloop where it is installed (the server's and the health listener's)."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms without it
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
