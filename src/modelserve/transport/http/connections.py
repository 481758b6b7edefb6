"""The REST listener's connections: deadlines for slow and stalled clients, and a cap on how many are open.

uvicorn closes a keep-alive connection that stays idle after a response, and nothing else: a connection
that never sends a byte, or trickles its header or body a byte at a time (slowloris), or announces a
``Content-Length`` it never completes, is held forever, each with a file descriptor. This protocol is
uvicorn's httptools protocol with four guards added, each a setting in ``http.*``:

- ``idle_timeout_s``: a connection with no request in progress (just opened, or between requests) is closed
  after this long. Only the start of a request ends the idle state, so bytes that are not a request (blank
  lines) do not keep it open.
- ``header_timeout_s``: from a request's first byte until its headers are complete. Past it the client gets
  408 and the connection closes.
- ``body_timeout_s`` + ``min_body_rate``: a body must arrive at the floor rate after a grace period: by
  ``t0 + body_timeout_s + received / min_body_rate``, where ``t0`` is when the headers completed. A body
  that stalls (or a ``Content-Length`` never completed) is answered 408 if no response has started,
  and closed. A body that arrives in the same read as its headers (almost every request) arms no timer.
- ``max_connections``: a connection over the cap is answered 503 with ``Retry-After`` and closed at once,
  before anything is read from it.
- ``refusal_backoff_max_ms``: after a request refused for overload (the app marks it), the connection is
  not read for 1 ms, doubling with each refusal in a row up to this, reset by any other answer: the
  server enforces the back-off a client ignoring ``Retry-After`` does not do.

Timers are the loop's ``call_later`` handles, one per connection at a time, armed only when a read leaves
a connection waiting (idle, inside a header, inside a body) and cancelled as soon as that ends. Between
requests uvicorn's own keep-alive timer is the idle one. A request that arrives whole in one read arms
nothing: the guards cost it a few attribute checks (``bench/connection_guard_cost.py`` measures it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelserve.config import HttpSettings

__all__ = ["READ_AT", "REFUSED", "guarded_protocol"]

# The ASGI scope key holding time.monotonic() when the request's headers were read (an extension key:
# ASGI servers may add their own).
READ_AT = "modelserve.read_at"
# The key the app sets (True) on a request it refused for overload: the connection then backs off.
REFUSED = "modelserve.refused"
# The first pause after a refusal; each further refusal in a row on the connection doubles it.
_FIRST_REFUSAL_PAUSE_S = 0.001


def _response(status: bytes, message: bytes, extra: bytes = b"") -> bytes:
    body = b'{"error":"' + message + b'"}'
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\n%scontent-length: %d\r\n\r\n"
    return head % (status, extra, len(body)) + body


_HEADER_TIMEOUT = _response(
    b"408 Request Timeout",
    b"the request headers did not arrive within http.header_timeout_s; send the whole header at once",
)
_BODY_TIMEOUT = _response(
    b"408 Request Timeout",
    b"the request body arrived too slowly (http.body_timeout_s, http.min_body_rate) or never completed its "
    b"Content-Length; send the whole body without pauses",
)
_OVER_CAPACITY = _response(
    b"503 Service Unavailable",
    b"the server is at its open-connection limit (http.max_connections); retry later or reuse a connection",
    b"retry-after: 1\r\n",
)

# Why a connection was closed by a guard: the label of the metric counting them.
CLOSE_REASONS = ("idle_timeout", "header_timeout", "body_timeout", "over_capacity")


def guarded_protocol(limits: HttpSettings, on_close: Callable[[str], None] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class with the ``http.*`` guards of ``limits`` applied
    (``uvicorn.Config(http=...)`` takes a class). ``on_close(reason)`` is told of each connection a guard
    closed (one of :data:`CLOSE_REASONS`)."""
    refusal_backoff_max_s = limits.refusal_backoff_max_ms / 1000  # 0: a refused connection is read at once

    def closed(reason: str) -> None:
        if on_close is not None:
            on_close(reason)

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _in_headers: bool = False
        _body_pending: bool = False
        _body_started: float = 0.0
        _body_received: int = 0
        _refusals_in_a_row: int = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(_OVER_CAPACITY)
                transport.close()
                closed("over_capacity")
                return
            self._arm(limits.idle_timeout_s, self._idle_expired)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # The guards look at where a read left the connection, so a request that arrives whole in one
            # read (nearly all of them) arms nothing: it is being served, and uvicorn's keep-alive timer
            # takes over when its response is out.
            if self.transport.is_closing():
                return
            if self._in_headers:
                if self._timer is None:  # from the read its first byte came in; later reads do not extend it
                    self._arm(limits.header_timeout_s, self._headers_expired)
            elif self._body_pending:
                # Counted per read, not per parser callback (one frame less a request); the first read's header
                # bytes count too, which errs towards the client by a header's size.
                self._body_received += len(data)
                self._arm_body_deadline()
            elif self._timer is None and self.timeout_keep_alive_task is None and self._between_requests():
                # Bytes that started no request (blank lines) cancelled uvicorn's keep-alive timer.
                self._arm(limits.idle_timeout_s, self._idle_expired)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            self._disarm()  # no longer idle

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            # When the server read this request, for the app to see how long it then waited for the loop.
            self.scope[READ_AT] = time.monotonic()  # type: ignore[literal-required]
            super().on_headers_complete()
            self._body_pending = True
            self._body_received = 0
            self._body_started = self.loop.time()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._body_pending = False
            self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not refusal_backoff_max_s or self.pipeline or self.transport.is_closing():
                return
            cycle: Any = self.cycle
            if cycle is None or not cycle.scope.get(REFUSED):
                self._refusals_in_a_row = 0
                return
            # Refused for overload: this connection's next request is not read for a while, doubling with
            # each refusal in a row (reset by any other answer). A client that retries at once, ignoring
            # Retry-After, then costs the server one refusal per pause instead of as many as it can send;
            # one refused now and then (k = 1) waits a millisecond.
            self._refusals_in_a_row = min(self._refusals_in_a_row + 1, 32)
            pause = min(_FIRST_REFUSAL_PAUSE_S * 2 ** (self._refusals_in_a_row - 1), refusal_backoff_max_s)
            self.flow.pause_reading()
            self.loop.call_later(pause, self._resume_after_refusal)

        def _resume_after_refusal(self) -> None:
            if not self.transport.is_closing():
                self.flow.resume_reading()

        def _between_requests(self) -> bool:
            cycle: Any = self.cycle
            return (cycle is None or cycle.response_complete) and not self.pipeline

        # -- timers ---------------------------------------------------------------------------------

        def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(delay_s, callback)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _arm_body_deadline(self) -> None:
            # The deadline follows what has arrived: a body that keeps up the floor rate is never cut.
            deadline = self._body_started + limits.body_timeout_s + self._body_received / limits.min_body_rate
            self._arm(max(0.0, deadline - self.loop.time()), self._body_expired)

        def _close(self, answer: bytes | None, reason: str) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if answer is not None:
                self.transport.write(answer)
            self.transport.close()
            closed(reason)

        def _idle_expired(self) -> None:
            self._close(None, "idle_timeout")

        def _headers_expired(self) -> None:
            self._close(_HEADER_TIMEOUT, "header_timeout")

        def _body_expired(self) -> None:
            cycle: Any = self.cycle
            # An early answer (a refusal sent before the body was read) may already be out: then only close.
            answered = cycle is not None and (cycle.response_started or cycle.response_complete)
            self._close(None if answered else _BODY_TIMEOUT, "body_timeout")

    return GuardedHttpToolsProtocol
