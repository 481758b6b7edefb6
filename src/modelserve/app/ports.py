"""Binding the listeners' ports, and the one line a port that cannot be bound gets.

A port already taken (another server, an earlier run still up) is the first failure most new users meet.
It must read as one line naming the port and the flag that changes it, end the process with exit code 2
(a worker exiting 2 stops its supervisor, app/workers.py: every restart would fail the same way), never
show a traceback, and come before anything says the server listens. So every port is bound here, before
the start-up log line, and the listeners are handed the bound sockets (uvicorn's own bind failure was a
log line after "REST on ..." and exit code 3).

gRPC is the exception: grpcio binds its own socket (``add_insecure_port``, which raises ``RuntimeError``
after its C core has printed its own error), so a single server probes the gRPC port here first.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

__all__ = ["GRPC", "HEALTH", "METRICS", "REST", "Listener", "PortError", "bind", "probe", "reuseport_socket"]


@dataclass(frozen=True, slots=True)
class Listener:
    """A listener's name in messages, with the flag and the setting that choose its port."""

    name: str
    flag: str
    setting: str

    def cannot_listen(self, host: str, port: int, reason: str, code: int | None = None) -> str:
        """The one line for a failed bind; ``code`` (the errno) picks the fix: an address this machine
        does not have is ``--host``'s fault, not the port's."""
        where = f"cannot listen for {self.name} on {host}:{port} ({reason})"
        if code == errno.EADDRNOTAVAIL:
            return f"{where}; no interface of this machine has that address: check --host (setting server.host)"
        return f"{where}; pick another port with {self.flag} (setting {self.setting})"


REST = Listener("REST", "--http-port", "http.port")
GRPC = Listener("gRPC", "--grpc-port", "grpc.port")
METRICS = Listener("metrics", "--metrics-port", "metrics.port")
HEALTH = Listener("health probes", "--health-port", "http.health_port")


class PortError(Exception):
    """A listener's port cannot be bound; the message is the one line to show (no traceback)."""


def _bound_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR as uvicorn and grpcio set it: a port whose last connections sit in TIME_WAIT binds.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with ``SO_REUSEPORT``, not listening yet (raises OSError)."""
    return _bound_socket(host, port, reuse_port=True)


def bind(listener: Listener, host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``(host, port)``, not listening yet (the server it is handed to listens).

    ``reuse_port``: bind beside the sibling workers that share the port. Raises :class:`PortError`
    naming the port and ``listener``'s flag."""
    try:
        return _bound_socket(host, port, reuse_port=reuse_port)
    except OSError as exc:
        raise PortError(listener.cannot_listen(host, port, exc.strerror or str(exc), exc.errno)) from exc


def probe(listener: Listener, host: str, port: int) -> None:
    """Check that a port another library will bind is free now: bind it and let go at once (an unconnected
    socket leaves no TIME_WAIT behind). Port 0 always is. Raises :class:`PortError`."""
    if port != 0:
        bind(listener, host, port).close()
