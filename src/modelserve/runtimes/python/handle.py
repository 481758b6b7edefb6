"""One worker process as the parent sees it: the child, the parent's end of its pipe, and its exit sentinel.

The sentinel is a pidfd (Linux 5.3+): it turns readable when the process exits, whether or not anyone is
reading the pipe, so the supervisor watches an idle worker without touching the pipe that a request may be
using, and a request's wait notices the death even if a grandchild the model forked still holds the pipe
open. Where pidfds are missing (another OS, an old kernel, a seccomp filter) ``sentinel`` is None and the
supervisor polls :meth:`WorkerHandle.has_exited` instead.

Thread safety: :meth:`request` is used by one thread at a time (the runtime hands a worker to one call);
``has_exited``, ``exit_description`` and ``stop`` may race with it and with each other (``Popen`` serialises
its own waits). :meth:`close` must not run while another thread uses the pipe; the runtime arranges that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from modelserve.runtimes.python.wire import receive_message, send_message

__all__ = ["WorkerHandle", "describe_exit"]

log = logging.getLogger(__name__)


def describe_exit(returncode: int) -> str:
    """``killed by signal 9`` / ``exit code 3``: how a worker ended, for messages and the failure reason."""
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"


def _open_sentinel(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return int(pidfd_open(pid))
    except OSError:  # ENOSYS (kernel < 5.3) or EPERM (seccomp): fall back to polling
        return None


class WorkerHandle:
    """A started worker (``python -m modelserve.runtimes.python.worker FD``). Make one with :meth:`spawn`."""

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection, sentinel: int | None) -> None:
        self._process = process
        self._conn = conn
        self._sentinel = sentinel
        self._closed = False

    @classmethod
    def spawn(cls) -> WorkerHandle:
        """Start a worker process (it waits for the load message). Raises ``OSError`` if it cannot start."""
        parent, child = socket.socketpair()
        try:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "modelserve.runtimes.python.worker", str(child.fileno())],
                    pass_fds=(child.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
            finally:
                child.close()
        except BaseException:
            parent.close()
            raise
        return cls(process, Connection(parent.detach()), _open_sentinel(process.pid))

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def conn(self) -> Connection:
        return self._conn

    @property
    def sentinel(self) -> int | None:
        """The pidfd (readable once the process has exited), or None where pidfds are unavailable."""
        return self._sentinel

    def has_exited(self) -> bool:
        """Whether the process has ended (non-blocking; reaps it if so)."""
        return self._process.poll() is not None

    def request(
        self, header: dict[str, Any], tensors: Mapping[str, np.ndarray] = {}
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one message and wait for the reply, for as long as the model takes or until the process
        exits (no timeout of its own: a request's deadline is the scheduler's; unload ends the process).
        Raises ``EOFError``/``OSError`` if the worker died."""
        send_message(self._conn, header, tensors)
        if self._sentinel is not None:
            ready = wait([self._conn, self._sentinel])
            if self._conn not in ready:  # exited, and something else (a grandchild) holds the pipe open
                raise EOFError("the worker process exited")
        return receive_message(self._conn)

    def exit_description(self, timeout_s: float) -> str:
        """How the process ended, waiting up to ``timeout_s`` for it; one still running then is killed."""
        try:
            code = self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return self._kill(timeout_s)
        return describe_exit(code)

    def _kill(self, timeout_s: float) -> str:
        self._process.kill()
        try:
            code = self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.error("worker process %d did not exit %.0f s after SIGKILL", self.pid, timeout_s)
            return "did not exit after SIGKILL"
        return describe_exit(code)

    def stop(self, *, ask_first: bool, timeout_s: float) -> None:
        """End the process and reap it, each wait bounded by ``timeout_s``: ``ask_first`` sends ``unload``
        (the model's ``unload()`` runs) and waits; then SIGTERM and a wait; then SIGKILL and a wait.
        ``ask_first`` only when no call is using the pipe. Never raises for a process already gone."""
        if ask_first and not self._closed:
            with contextlib.suppress(OSError):  # already gone: the waits below reap it
                send_message(self._conn, {"op": "unload"})
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=timeout_s)
        if self._process.poll() is None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=timeout_s)
        if self._process.poll() is None:
            self._kill(timeout_s)

    def close(self) -> None:
        """Close the pipe and the sentinel (idempotent). The process is reaped by ``stop`` or
        ``exit_description``, not here."""
        if self._closed:
            return
        self._closed = True
        self._conn.close()
        if self._sentinel is not None:
            os.close(self._sentinel)
