"""Start the real server as a child process on ephemeral 127.0.0.1 ports, and stop it.

Readiness is observed through the REST health endpoint (never a sleep or a log line); every wait is
bounded. On stop the process gets SIGTERM and must exit 0, and its ports must be free again.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples" / "models"


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for port 0 is also what it
# hands every outgoing connection, so between our check and the server's bind a client socket of another
# test could take it (seen in CI: "address already in use"). Ports here are only ever taken on purpose.
_PORTS = range(20000, 32000)
_random = random.Random()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, outside the ephemeral range (bounded tries)."""
    for _ in range(100):
        port = _random.choice(_PORTS)
        if port_is_free(port):
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Nothing listens on the port (connections in TIME_WAIT after a clean close do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ServerExited(RuntimeError):
    """The server process ended before it was live or ready."""


class ServerProcess:
    def __init__(self, repository: Path, extra_args: Sequence[str] = (), config: Path | None = None) -> None:
        self.repository = repository
        self._extra_args = list(extra_args)
        self._config = config
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.args = self._command()
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    def _command(self) -> list[str]:
        config, extra_args, repository = self._config, self._extra_args, self.repository
        return [
            sys.executable,
            "-m",
            "modelserve",
            "serve",
            "--model-repository",
            str(repository),
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--log-level",
            "warning",
            *(["--config", str(config)] if config else []),
            *extra_args,
        ]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, *, wait_ready: bool = True, timeout_s: float = 60.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for attempt in range(3):
            self.process = subprocess.Popen(self.args, env=env, cwd=REPO_ROOT)
            try:
                self.wait_until("ready" if wait_ready else "live", timeout_s)
                return
            except ServerExited:
                # Another process took one of the ports between the choice and the bind: new ports, again.
                ports_taken = not (port_is_free(self.http_port) and port_is_free(self.grpc_port))
                if attempt == 2 or not ports_taken:
                    raise
                self.http_port, self.grpc_port = free_port(), free_port()
                self.args = self._command()

    def wait_until(self, what: str, timeout_s: float = 60.0) -> None:
        url = f"{self.http_url}/v2/health/{what}"

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerExited(f"server exited early with code {self.process.returncode}")
            try:
                return httpx.get(url, timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout_s=timeout_s, interval_s=0.05, what=f"the server to be {what}")

    def stop(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise
        self.exit_code = self.process.returncode
        return self.exit_code


@contextmanager
def running_server(
    repository: Path = EXAMPLES,
    extra_args: Sequence[str] = (),
    *,
    wait_ready: bool = True,
    config: Path | None = None,
) -> Iterator[ServerProcess]:
    server = ServerProcess(repository, extra_args, config)
    server.start(wait_ready=wait_ready)
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"server exited with {code}, expected a clean 0 after SIGTERM"
    assert port_is_free(server.http_port) and port_is_free(server.grpc_port), "ports still bound after exit"
