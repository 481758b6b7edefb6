"""``server.workers`` over 1: a supervisor and N worker processes, each a whole server on the same ports.

Why whole replicas, not one shared executor behind N front ends: on this kind of machine the server's own
work per request (HTTP/gRPC, codecs, admission, statistics: ~300 µs) dwarfs a small model's (iris: 12 µs),
and that work is what holds the GIL. A worker that owns its models answers a request with no hop between
processes; a shared executor would add one IPC round trip (tens of µs each way, plus a copy of every
tensor) to every request to save memory and to batch across workers. So each worker loads every model
(memory per worker; ``repository.memory_budget_mb`` is per process) and batches its own share of the
traffic, which at the concurrency that needs batching still forms full batches.

Sockets: the supervisor binds each port once (``SO_REUSEPORT``, never listening), which reserves it,
turns port 0 into a real port and fails early with "port in use". Each worker then binds the same port
with ``SO_REUSEPORT`` and listens; the kernel spreads new connections over the listening workers by a hash
of the connection (a keep-alive connection stays with one worker). A worker that dies takes only its own
connections with it; the others keep serving.

Pinning (``server.pin_workers``, on by default): worker i runs on the i-th CPU this process may use. A
worker is a loop thread plus model and gRPC threads taking turns at one GIL; left to the scheduler, they
run on different cores and every hand-over of the GIL moves it between cores. Measured here (2 cores,
perf_analyzer unpinned beside the server, iris, concurrency 32): 2 pinned workers served REST 5,692 and
gRPC 2,696 requests/s against 4,113-4,401 and 1,965 unpinned, at 255 vs ~320 µs of server CPU per REST
request. A minimal grpcio server shows the same: 2,694 requests/s unpinned, 3,301 on one core.

Supervision: a worker that exits while the supervisor is not stopping is started again after a back-off
(0.5 s doubling to 30 s, reset once a worker has lived a minute); one that exits with code 2 (its settings
or a port cannot work) stops everything with code 2, since every restart would fail the same way. On
SIGTERM/SIGINT the supervisor sends SIGTERM to every worker, and each drains as a single server does; one
still running ``drain_timeout_s`` + 10 s later is killed. Every worker watches multiprocessing's parent
sentinel (a pipe only the supervisor holds open): if the supervisor dies, even by SIGKILL, the workers see
it close and stop themselves (``serve.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from modelserve.app.ports import GRPC, HEALTH, METRICS, REST, Listener, PortError, bind, reuseport_socket
from modelserve.config import Settings

__all__ = [
    "WorkerSlot",
    "available_cpus",
    "reserve_port",
    "reuseport_socket",
    "run_workers",
    "serve",
    "worker_count",
]

log = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
_HEALTHY_AFTER_S = 60.0  # a worker that lived this long starts its slot's back-off from the beginning
_KILL_GRACE_S = 10.0  # past the drain timeout, before a worker that has not exited is killed
_SETTINGS_EXIT_CODE = 2


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """What a worker process knows of its place among the others."""

    index: int
    count: int
    # A replacement for a worker that died (see listens_before_loaded).
    restart: bool = False
    # The supervisor's private folder (mode 0700) where each worker listens for its siblings' calls.
    control_dir: str = ""
    # The CPU this worker is pinned to (server.pin_workers), or None.
    cpu: int | None = None
    # Readable (end of file) once the supervisor is gone; -1 when there is no supervisor to watch.
    supervisor_fd: int = -1

    @property
    def listens_before_loaded(self) -> bool:
        """Only worker 0's first process listens at once, as one server does (live while loading, ready when
        loaded). Every other worker, and every replacement, listens once its models are loaded, so the kernel
        never hands a connection to a worker that cannot serve it yet: its siblings serve meanwhile."""
        return self.index == 0 and not self.restart


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs' worth of time the cgroup may use, or None when unlimited (v2 ``cpu.max``, v1 CFS quota)."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    return None


def _cpus_to_pin() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no pinning
        return []


def worker_count(settings: Settings) -> int:
    workers = settings.server.workers
    return available_cpus() if workers == "auto" else int(workers)


def reserve_port(host: str, port: int, listener: Listener) -> socket.socket:
    """Bind the port for the workers to share; raises PortError naming the port and its flag."""
    return bind(listener, host, port, reuse_port=True)


def _reserve_ports(settings: Settings) -> tuple[Settings, list[socket.socket]]:
    """The settings with every listener's port made concrete, and the sockets that hold them."""
    host, held = settings.server.host, []
    http, grpc, metrics = settings.http, settings.grpc, settings.metrics
    try:
        if http.enabled:
            held.append(reserve_port(host, http.port, REST))
            http = http.model_copy(update={"port": held[-1].getsockname()[1]})
        if grpc.enabled:
            held.append(reserve_port(host, grpc.port, GRPC))
            grpc = grpc.model_copy(update={"port": held[-1].getsockname()[1]})
        if metrics.port is not None:
            held.append(reserve_port(host, metrics.port, METRICS))
            metrics = metrics.model_copy(update={"port": held[-1].getsockname()[1]})
        if http.health_port is not None:
            held.append(reserve_port(host, http.health_port, HEALTH))
            http = http.model_copy(update={"health_port": held[-1].getsockname()[1]})
    except PortError:
        for sock in held:
            sock.close()
        raise
    return settings.model_copy(update={"http": http, "grpc": grpc, "metrics": metrics}), held


def _worker_main(settings: Settings, slot: WorkerSlot, log_level: int) -> None:
    """A worker process: a whole server (``serve.run``) that knows its slot; exits with its exit code."""
    if slot.cpu is not None:
        os.sched_setaffinity(0, {slot.cpu})
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else -1
    slot = WorkerSlot(slot.index, slot.count, slot.restart, slot.control_dir, slot.cpu, sentinel)
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s worker-{slot.index} %(name)s: %(message)s",
    )
    from modelserve.app.serve import run

    raise SystemExit(run(_own_files(settings, slot.index), slot))


def _own_files(settings: Settings, index: int) -> Settings:
    """The settings a worker runs with: the files a server writes as it serves (the prediction log, rotated
    by size) go to a folder of each worker's own, so two processes never append to and rotate one file."""
    log = settings.prediction_log
    if not log.enabled:
        return settings
    own = log.model_copy(update={"directory": log.directory / f"worker-{index}"})
    return settings.model_copy(update={"prediction_log": own})


@dataclass
class _Worker:
    index: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    failures: int = 0  # exits in a row that the supervisor did not ask for
    restart_at: float | None = None
    process_count: int = 0  # processes started for this slot so far


@dataclass
class _Supervisor:
    settings: Settings
    count: int
    log_level: int
    workers: list[_Worker] = field(default_factory=list)
    stopping: bool = False

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._control_dir = tempfile.mkdtemp(prefix="modelserve-workers-")  # mode 0700: this user only
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self.workers = [_Worker(index) for index in range(self.count)]
        self._cpus = _cpus_to_pin() if self.settings.server.pin_workers else []

    def _start(self, worker: _Worker) -> None:
        slot = WorkerSlot(
            worker.index,
            self.count,
            restart=worker.process_count > 0,
            control_dir=self._control_dir,
            cpu=self._cpus[worker.index % len(self._cpus)] if self._cpus else None,
        )
        process = self._context.Process(
            target=_worker_main,
            args=(self.settings, slot, self.log_level),
            name=f"modelserve-worker-{worker.index}",
        )
        process.start()
        worker.process, worker.started_at, worker.restart_at = process, time.monotonic(), None
        worker.process_count += 1
        log.info("worker %d started (pid %s)", worker.index, process.pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for worker in self.workers:
                self._start(worker)
            code = self._supervise()
            self._stop_all()
            return code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            shutil.rmtree(self._control_dir, ignore_errors=True)

    def _supervise(self) -> int:
        while not self.stopping:
            running = {w.process.sentinel: w for w in self.workers if w.process is not None}
            due = [w.restart_at for w in self.workers if w.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            ready = multiprocessing.connection.wait([*running, self._wake_read], timeout)
            if self._wake_read in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 64)
            for sentinel in ready:
                worker = running.get(sentinel) if isinstance(sentinel, int) else None
                if worker is not None and not self.stopping and self._exited(worker):
                    return _SETTINGS_EXIT_CODE
            now = time.monotonic()
            for worker in self.workers:
                if not self.stopping and worker.restart_at is not None and worker.restart_at <= now:
                    self._start(worker)
        return 0

    def _exited(self, worker: _Worker) -> bool:
        """A worker ended on its own: schedule its restart. True when it cannot work (stop everything)."""
        assert worker.process is not None
        worker.process.join(timeout=1.0)
        code, pid = worker.process.exitcode, worker.process.pid
        worker.process = None
        if code == _SETTINGS_EXIT_CODE:
            log.error("worker %d (pid %s) cannot start (exit code 2: see its error above); stopping", worker.index, pid)
            return True
        lived = time.monotonic() - worker.started_at
        worker.failures = 1 if lived >= _HEALTHY_AFTER_S else worker.failures + 1
        delay = min(_MAX_BACKOFF_S, _FIRST_BACKOFF_S * 2 ** (worker.failures - 1))
        worker.restart_at = time.monotonic() + delay
        log.error(
            "worker %d (pid %s) exited with code %s after %.1f s; restarting it in %.1f s",
            worker.index,
            pid,
            code,
            lived,
            delay,
        )
        return False

    def _stop_all(self) -> None:
        alive = [w.process for w in self.workers if w.process is not None and w.process.is_alive()]
        log.info("stopping %d workers: each drains its in-flight requests", len(alive))
        for process in alive:
            with contextlib.suppress(OSError):
                process.terminate()
        deadline = time.monotonic() + self.settings.server.drain_timeout_s + _KILL_GRACE_S
        for process in alive:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in alive:
            if process.is_alive():
                log.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join(timeout=5.0)


def run_workers(settings: Settings, count: int) -> int:
    """Serve with ``count`` worker processes until SIGTERM/SIGINT; returns the exit code."""
    try:
        shared, held = _reserve_ports(settings)
    except PortError as exc:
        log.error("%s", exc)
        return _SETTINGS_EXIT_CODE
    try:
        log.info(
            "modelserve supervisor: %d workers, REST on %s:%s, gRPC on %s:%s",
            count,
            shared.server.host,
            shared.http.port,
            shared.server.host,
            shared.grpc.port,
        )
        return _Supervisor(shared, count, logging.getLogger().getEffectiveLevel()).run()
    finally:
        for sock in held:
            sock.close()


def serve(settings: Settings) -> int:
    """Serve as the settings say: one process, or a supervisor and ``server.workers`` workers."""
    count = worker_count(settings)
    if count == 1:
        from modelserve.app.serve import run

        return run(settings)
    return run_workers(settings, count)
