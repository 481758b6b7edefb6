"""One python-runtime instance: a worker process behind a pipe.

A worker that dies (SIGKILL, OOM killer, a segfault in a C extension) fails exactly the call in flight
with UNAVAILABLE; a replacement is started at once and loads the model in the background, and the
instance reports unhealthy until it has. The replacement's load completes before the next call runs.

Memory: an instance is counted as its worker process's resident memory (RSS), read with psutil: the
interpreter, numpy and the model are all the worker's own (~28 MiB for ``text_stats``; a model holding
80 MiB of weights, ~108 MiB). RSS rather than USS: it also counts the pages of shared libraries that
workers share (~13 MiB each here, so N workers are over-counted by that much each), but USS means
reading every mapping of ``/proc/<pid>/smaps``, slow for a big worker. At least ``MEMORY_FLOOR_BYTES``,
which is also what a dead worker counts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection

import numpy as np
import psutil

from modelserve.core.errors import ErrorCode, ModelLoadError, RuntimeFailure
from modelserve.runtimes.base import LoadContext, MemoryFootprint, RuntimeMetadata
from modelserve.runtimes.python.wire import receive_message, send_message

__all__ = ["MEMORY_FLOOR_BYTES", "PythonProcessRuntime"]

# The least one worker is counted as: the text_stats example's worker (numpy and modelserve imported, a
# few lines of model) measured ~28 MiB resident; 16 MiB is below any real worker and stands in for one
# that is not running.
MEMORY_FLOOR_BYTES = 16 << 20

_EXIT_WAIT_S = 5.0


class PythonProcessRuntime:
    def __init__(self, context: LoadContext) -> None:
        self._context = context
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._load_pending = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        """Start a worker and send it the load message; do not wait for the answer."""
        parent, child = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "modelserve.runtimes.python.worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        self._conn = Connection(os.dup(parent.fileno()))
        parent.close()
        context = self._context
        send_message(
            self._conn,
            {
                "op": "load",
                "model_name": context.model_name,
                "version": context.version,
                "version_dir": str(context.version_dir),
                "model_filename": context.model_filename,
                "parameters": dict(context.parameters),
            },
        )
        self._load_pending = True

    def _finish_load(self) -> None:
        assert self._conn is not None
        try:
            reply, _ = receive_message(self._conn)
        except (EOFError, OSError) as exc:
            code = self._reap()
            raise ModelLoadError(
                f"model '{self._context.model_name}': the worker process exited while loading "
                f"{self._context.model_filename} ({code})"
            ) from exc
        self._load_pending = False
        if not reply.get("ok"):
            self._reap()
            raise ModelLoadError(
                f"model '{self._context.model_name}' version {self._context.version}: "
                f"{self._context.model_filename} failed to load: {reply.get('error')}"
            )

    def load(self) -> RuntimeMetadata:
        path = self._context.version_dir / self._context.model_filename
        if not path.is_file():
            raise ModelLoadError(
                f"model '{self._context.model_name}' version {self._context.version}: no "
                f"'{self._context.model_filename}' in the version folder"
            )
        self._start()
        self._finish_load()
        return RuntimeMetadata()

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        if self._conn is None:
            self._start()
        if self._load_pending:
            try:
                self._finish_load()
            except ModelLoadError as exc:
                raise RuntimeFailure(exc.message, code=ErrorCode.UNAVAILABLE) from exc
        assert self._conn is not None
        try:
            send_message(self._conn, {"op": "infer", "outputs": list(output_names)}, inputs)
            reply, outputs = receive_message(self._conn)
        except (EOFError, OSError) as exc:
            how = self._reap()
            # Replace it now, so capacity returns without waiting for the next request.
            self._start()
            raise RuntimeFailure(
                f"model '{self._context.model_name}': its worker process died ({how}) while running this "
                "request; the worker is being replaced, retry the request",
                code=ErrorCode.UNAVAILABLE,
            ) from exc
        if not reply.get("ok"):
            raise RuntimeFailure(f"model '{self._context.model_name}' raised {reply.get('error')}")
        return outputs

    def _reap(self) -> str:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._load_pending = False
        process, self._process = self._process, None
        if process is None:
            return "not running"
        try:
            code = process.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(timeout=_EXIT_WAIT_S)
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def unload(self) -> None:
        if self._conn is not None and not self._load_pending:
            with contextlib.suppress(OSError):  # already gone: _reap below collects it
                send_message(self._conn, {"op": "unload"})
        self._reap()

    @property
    def is_healthy(self) -> bool:
        process = self._process
        return process is not None and process.poll() is None

    def memory_bytes(self) -> MemoryFootprint:
        """The worker's RSS now (see the module docstring); the floor when no worker is running."""
        process = self._process
        if process is None or process.poll() is not None:
            return MemoryFootprint(MEMORY_FLOOR_BYTES, "floor")
        try:
            rss = int(psutil.Process(process.pid).memory_info().rss)
        except psutil.Error:  # exited between the poll and the read
            return MemoryFootprint(MEMORY_FLOOR_BYTES, "floor")
        return MemoryFootprint.at_least(rss, "worker-rss", floor_bytes=MEMORY_FLOOR_BYTES)
