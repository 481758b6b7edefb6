"""One python-runtime instance: a supervised worker process behind a pipe.

``load`` starts the first worker and waits for its ``model.py`` to load; from then on a supervisor thread
(one per instance, ``supervise-<model>-<version>-<index>``) owns the worker's life. It waits, in slices of
at most ``_WATCH_SLICE_S``, on the worker's exit sentinel (see ``handle.py``) and a stop pipe, so a worker
that dies while idle (SIGKILL, the OOM killer, a segfault in a C extension) is noticed at once, not when
the next request fails on it. It then reaps it and, after the back-off of ``restart.py``, starts and loads
a replacement, off the request path. After ``max_consecutive_deaths`` deaths in a row with no request
served successfully in between, it stops replacing: :attr:`failure_reason` says why, for good, until the
model is reloaded.

What a call sees: a request running on a worker that dies fails alone, with UNAVAILABLE naming the death.
A request that arrives while the worker is being replaced waits (up to ``_REPLACEMENT_WAIT_S``) for the
replacement, since the instance pool hands out instances regardless of health; after that, or once the
instance has failed for good, it fails with UNAVAILABLE. ``is_healthy`` is False exactly while no live,
loaded worker can take a call.

Ownership: the supervisor alone starts, loads, retires and replaces workers. A call only borrows the
serving worker (``_in_use``); whoever lets go of a retired worker last closes its pipe, so no thread ever
closes a pipe another thread is reading. All shared state is guarded by ``_changed`` (a Condition).

Memory: an instance is counted as its worker process's resident memory (RSS), read with psutil: the
interpreter, numpy and the model are all the worker's own (~28 MiB for ``text_stats``; a model holding
80 MiB of weights, ~108 MiB). RSS rather than USS: it also counts the pages of shared libraries that
workers share (~13 MiB each here, so N workers are over-counted by that much each), but USS means
reading every mapping of ``/proc/<pid>/smaps``, slow for a big worker. At least ``MEMORY_FLOOR_BYTES``,
which is also what a dead worker counts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np
import psutil

from modelserve.core.errors import ErrorCode, ModelLoadError, RuntimeFailure
from modelserve.runtimes.base import LoadContext, MemoryFootprint, RuntimeMetadata
from modelserve.runtimes.python.handle import WorkerHandle
from modelserve.runtimes.python.restart import RestartPolicy, after_death, policy_from_parameters
from modelserve.runtimes.python.wire import receive_message, send_message

__all__ = ["MEMORY_FLOOR_BYTES", "PythonProcessRuntime"]

log = logging.getLogger(__name__)

# The least one worker is counted as: the text_stats example's worker (numpy and modelserve imported, a
# few lines of model) measured ~28 MiB resident; 16 MiB is below any real worker and stands in for one
# that is not running.
MEMORY_FLOOR_BYTES = 16 << 20

# Each wait for a process to exit after it was seen dying, asked to stop, or sent SIGTERM/SIGKILL.
_EXIT_WAIT_S = 5.0
# The longest single wait of the supervisor: the sentinel wakes it at once on a death, so this only bounds
# how long it goes without re-reading its state. Without pidfds it polls the process this often instead.
_WATCH_SLICE_S = 1.0
_POLL_S = 0.2
# How long a call waits for a replacement before failing with UNAVAILABLE: the longest back-off (5 s) plus
# a typical worker start (~0.4 s for numpy and modelserve) and a model load of a few seconds.
_REPLACEMENT_WAIT_S = 10.0
# unload's wait for the supervisor thread: it wakes at once on the stop pipe, unless it is in the middle of
# reaping a worker (one _EXIT_WAIT_S, two if it has to kill it).
_STOP_WAIT_S = 2 * _EXIT_WAIT_S + 1.0
# The supervisor's pause after an unexpected error of its own, before its next iteration.
_RETRY_S = 1.0


class PythonProcessRuntime:
    """See the module docstring. ``load``/``infer``/``unload`` follow the Runtime seam (blocking, one call
    at a time); ``is_healthy``, ``failure_reason``, ``memory_bytes`` and ``pid`` may be read from any thread."""

    def __init__(self, context: LoadContext) -> None:
        self._context = context
        self._owner = f"model '{context.model_name}' version {context.version}"
        self._policy = RestartPolicy()
        self._changed = threading.Condition()
        # Guarded by _changed:
        self._worker: WorkerHandle | None = None  # the current worker, loading or serving
        self._serving: WorkerHandle | None = None  # the current worker once loaded; None while replacing
        self._serving_since = 0.0  # time.monotonic() when _serving was set
        self._in_use: WorkerHandle | None = None  # the worker a call has borrowed
        self._deaths_in_row = 0
        self._last_death = ""
        self._replace_at = 0.0  # time.monotonic() after which the supervisor starts a replacement
        self._failure = ""
        self._stopping = False
        # Set by load, cleared by unload:
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None  # the stop pipe (read end, write end)

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None before load, after unload or while replacing)."""
        worker = self._worker
        return worker.pid if worker is not None else None

    @property
    def is_healthy(self) -> bool:
        worker = self._serving
        return worker is not None and not worker.has_exited()

    @property
    def failure_reason(self) -> str:
        """Why this instance stopped replacing its worker for good; "" while it serves or is recovering."""
        return self._failure

    # -- load and unload (the loading thread) --------------------------------------------------------

    def _load_header(self) -> dict[str, Any]:
        context = self._context
        return {
            "op": "load",
            "model_name": context.model_name,
            "version": context.version,
            "version_dir": str(context.version_dir),
            "model_filename": context.model_filename,
            "parameters": dict(context.parameters),
        }

    def load(self) -> RuntimeMetadata:
        context = self._context
        path = context.version_dir / context.model_filename
        if not path.is_file():
            raise ModelLoadError(f"{self._owner}: no '{context.model_filename}' in the version folder")
        self._policy = policy_from_parameters(context.parameters, self._owner)
        worker = WorkerHandle.spawn()
        try:
            send_message(worker.conn, self._load_header())
            reply, _ = receive_message(worker.conn)
        except (EOFError, OSError) as exc:
            how = worker.exit_description(_EXIT_WAIT_S)
            worker.close()
            raise ModelLoadError(
                f"model '{context.model_name}': the worker process exited while loading "
                f"{context.model_filename} ({how})"
            ) from exc
        if not reply.get("ok"):
            worker.exit_description(_EXIT_WAIT_S)  # it exits after answering
            worker.close()
            raise ModelLoadError(f"{self._owner}: {context.model_filename} failed to load: {reply.get('error')}")
        with self._changed:
            self._worker = self._serving = worker
            self._serving_since = time.monotonic()
        self._wake = os.pipe()
        self._thread = threading.Thread(
            target=self._supervise,
            name=f"supervise-{context.model_name}-{context.version}-{context.instance_index}",
            daemon=True,  # unload joins it; daemon only so a program that never unloads can still exit
        )
        self._thread.start()
        return RuntimeMetadata()

    def unload(self) -> None:
        """Stop the supervisor, then end and reap the worker (each wait bounded; see ``WorkerHandle.stop``).
        Idempotent. A call still running (its drain timed out) fails with UNAVAILABLE."""
        with self._changed:
            self._stopping = True
            worker = self._worker
            was_serving_idle = worker is not None and worker is self._serving and self._in_use is not worker
            self._worker = self._serving = None
            self._changed.notify_all()
        thread, wake = self._thread, self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                os.write(wake[1], b"x")
        if thread is not None:
            thread.join(timeout=_STOP_WAIT_S)
            if thread.is_alive():
                log.error("%s: the worker supervisor did not stop within %.0f s", self._owner, _STOP_WAIT_S)
        if worker is not None:
            worker.stop(ask_first=was_serving_idle, timeout_s=_EXIT_WAIT_S)
            self._close_unless_in_use(worker)
        if wake is not None and (thread is None or not thread.is_alive()):
            os.close(wake[0])
            os.close(wake[1])
        self._thread = self._wake = None

    # -- calls (the scheduler's threads) ------------------------------------------------------------

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        worker = self._borrow()
        try:
            reply, outputs = worker.request({"op": "infer", "outputs": list(output_names)}, inputs)
        except (EOFError, OSError) as exc:
            how = worker.exit_description(_EXIT_WAIT_S)
            raise RuntimeFailure(
                f"model '{self._context.model_name}': its worker process died ({how}) while running this "
                "request; the worker is being replaced, retry the request",
                code=ErrorCode.UNAVAILABLE,
            ) from exc
        finally:
            self._give_back(worker)
        if not reply.get("ok"):
            raise RuntimeFailure(f"model '{self._context.model_name}' raised {reply.get('error')}")
        with self._changed:
            self._deaths_in_row = 0  # this worker served: the model can run
        return outputs

    def _borrow(self) -> WorkerHandle:
        """The serving worker, marked in use; waits (bounded) while it is being replaced."""
        deadline = time.monotonic() + _REPLACEMENT_WAIT_S
        with self._changed:
            while True:
                if self._failure:
                    raise RuntimeFailure(f"{self._owner}: {self._failure}", code=ErrorCode.UNAVAILABLE)
                if self._stopping:
                    raise RuntimeFailure(f"{self._owner} is unloading; retry the request", code=ErrorCode.UNAVAILABLE)
                worker = self._serving
                if worker is not None and not worker.has_exited():
                    self._in_use = worker
                    return worker
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeFailure(
                        f"{self._owner}: its worker process died ({self._last_death or 'just now'}) and the "
                        f"replacement is not ready after {_REPLACEMENT_WAIT_S:.0f} s; retry shortly",
                        code=ErrorCode.UNAVAILABLE,
                    )
                # Woken when a replacement serves or the instance fails; the slice re-checks a worker that
                # exited before the supervisor noticed.
                self._changed.wait(min(remaining, _WATCH_SLICE_S))

    def _give_back(self, worker: WorkerHandle) -> None:
        with self._changed:
            self._in_use = None
            if worker is not self._worker:  # retired while this call used it: its pipe is ours to close
                worker.close()

    def _close_unless_in_use(self, worker: WorkerHandle) -> None:
        with self._changed:
            if self._in_use is not worker:
                worker.close()

    # -- the supervisor thread ----------------------------------------------------------------------

    def _supervise(self) -> None:
        while True:
            with self._changed:
                if self._stopping or self._failure:
                    return
                worker, serving, replace_at = self._worker, self._serving, self._replace_at
            # Each iteration is an exception boundary: a failure while starting or loading a replacement
            # counts as one of its deaths (so it backs off and, repeated, gives up); one while watching a
            # serving worker is logged and retried, leaving the worker alone.
            try:
                if worker is None:
                    self._replace_when_due(replace_at)
                elif serving is None:
                    self._await_load(worker)
                else:
                    self._watch(worker)
            except Exception as exc:
                if serving is None:
                    log.exception("%s: starting a replacement worker failed", self._owner)
                    if worker is not None:
                        worker.stop(ask_first=False, timeout_s=_EXIT_WAIT_S)
                    self._record_death(worker, f"a replacement could not be started ({type(exc).__name__}: {exc})")
                else:
                    log.exception("%s: watching the worker process failed; watching again", self._owner)
                    self._wait_readable([], _RETRY_S)

    def _wait_readable(self, objects: list[Connection | int], timeout_s: float) -> Sequence[object]:
        """Wait (at most ``timeout_s``) for one of ``objects`` or the stop pipe to be readable."""
        assert self._wake is not None
        return wait([self._wake[0], *objects], timeout=timeout_s)

    def _watch(self, worker: WorkerHandle) -> None:
        if worker.sentinel is not None:
            self._wait_readable([worker.sentinel], _WATCH_SLICE_S)
        else:
            self._wait_readable([], _POLL_S)
        if worker.has_exited():
            self._record_death(worker, worker.exit_description(_EXIT_WAIT_S))

    def _replace_when_due(self, replace_at: float) -> None:
        remaining = replace_at - time.monotonic()
        if remaining > 0:
            self._wait_readable([], min(remaining, _WATCH_SLICE_S))
            return
        worker = WorkerHandle.spawn()
        with self._changed:
            if not self._stopping:
                self._worker = worker
                worker_is_current = True
            else:
                worker_is_current = False
        if not worker_is_current:  # unload began meanwhile: this one is ours to end
            worker.stop(ask_first=False, timeout_s=_EXIT_WAIT_S)
            worker.close()
            return
        log.info("%s: started replacement worker %d", self._owner, worker.pid)
        with contextlib.suppress(OSError):  # it died already: _await_load sees the exit and counts it
            send_message(worker.conn, self._load_header())

    def _await_load(self, worker: WorkerHandle) -> None:
        watched: list[Connection | int] = [worker.conn]
        if worker.sentinel is not None:
            watched.append(worker.sentinel)
        ready = self._wait_readable(watched, _WATCH_SLICE_S)
        if worker.conn in ready:
            try:
                reply, _ = receive_message(worker.conn)
            except (EOFError, OSError):
                self._record_death(worker, worker.exit_description(_EXIT_WAIT_S))
                return
            if not reply.get("ok"):
                how = worker.exit_description(_EXIT_WAIT_S)  # it exits after answering
                self._record_death(worker, f"its replacement failed to load ({reply.get('error')}; {how})")
                return
            with self._changed:
                if self._worker is worker:
                    self._serving = worker
                    self._serving_since = time.monotonic()
                    self._changed.notify_all()
            log.info("%s: replacement worker %d is serving", self._owner, worker.pid)
        elif worker.has_exited():
            self._record_death(worker, worker.exit_description(_EXIT_WAIT_S))

    def _record_death(self, worker: WorkerHandle | None, how: str) -> None:
        """Retire ``worker`` (already reaped) and decide: replace it after a back-off, or give up."""
        with self._changed:
            if self._stopping:
                return  # unload ends and closes the current worker
            serving = worker is not None and worker is self._serving
            served_for_s = time.monotonic() - self._serving_since if serving else 0.0
            decision = after_death(self._policy, self._deaths_in_row, served_for_s)
            if worker is not None and worker is self._worker:
                self._worker = self._serving = None
                if self._in_use is not worker:
                    worker.close()
            self._deaths_in_row, self._last_death = decision.consecutive_deaths, how
            if decision.gives_up:
                self._failure = (
                    f"worker process died {decision.consecutive_deaths} times in a row; last: {how}; "
                    "fix the model or reload it"
                )
            else:
                self._replace_at = time.monotonic() + decision.delay_s
            self._changed.notify_all()
        if decision.gives_up:
            log.error("%s: %s", self._owner, self._failure)
        else:
            log.warning(
                "%s: worker process died (%s), %d in a row; replacing it in %.1f s",
                self._owner,
                how,
                decision.consecutive_deaths,
                decision.delay_s,
            )

    # -- memory ---------------------------------------------------------------------------------------

    def memory_bytes(self) -> MemoryFootprint:
        """The worker's RSS now (see the module docstring); the floor when no worker is running."""
        worker = self._serving
        if worker is None or worker.has_exited():
            return MemoryFootprint(MEMORY_FLOOR_BYTES, "floor")
        try:
            rss = int(psutil.Process(worker.pid).memory_info().rss)
        except psutil.Error:  # exited between the poll and the read
            return MemoryFootprint(MEMORY_FLOOR_BYTES, "floor")
        return MemoryFootprint.at_least(rss, "worker-rss", floor_bytes=MEMORY_FLOOR_BYTES)
