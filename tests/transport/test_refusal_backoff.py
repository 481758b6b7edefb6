"""A REST connection whose requests are refused for overload is read again only after a pause that doubles
with each refusal in a row (``http.refusal_backoff_max_ms``), and any other answer resets it.

In process: the connection protocol on a fake transport, an ASGI app that refuses as the real one does
(marks the scope ``REFUSED``, answers 503), and an event loop that records the delays the protocol asks
for: the pauses are exact, no time passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from modelserve.config import HttpSettings
from modelserve.transport.http.connections import REFUSED, guarded_protocol

pytestmark = pytest.mark.timeout(30)

REQUEST = b"GET /v2/models/iris/ready HTTP/1.1\r\nHost: x\r\n\r\n"


class RecordingLoop(asyncio.SelectorEventLoop):
    """Records call_later delays of the pauses (their callbacks are the protocol's resume)."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__name__", "") == "_resume_after_refusal":
            self.pauses.append(round(delay, 6))
        return super().call_later(delay, callback, *args, **kwargs)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data).startswith(b"HTTP/1.1 "):
            self.statuses.append(int(bytes(data)[9:12]))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def test_refused_connections_back_off_doubling_and_reset_on_an_answer() -> None:
    answers = iter([503, 503, 503, 503, 200, 503])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        status = next(answers)
        if status == 503:
            scope[REFUSED] = True
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def scenario(loop: RecordingLoop) -> None:
        limits = HttpSettings(max_connections=8, refusal_backoff_max_ms=4)
        protocol_class = guarded_protocol(limits)
        config = uvicorn.Config(app, http=protocol_class, lifespan="off", log_level="warning")
        config.load()
        protocol: Any = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)  # type: ignore[call-arg]
        transport = FakeTransport()
        protocol.connection_made(transport)
        for sent in range(1, 7):
            protocol.data_received(REQUEST)
            for _ in range(100):  # bounded: the app answers within a few loop turns
                if len(transport.statuses) == sent:
                    break
                await asyncio.sleep(0)
            refused = transport.statuses[-1] == 503
            assert transport.reading is not refused, f"request {sent}: reading paused only after a refusal"
            protocol._resume_after_refusal()  # the pause's end, without waiting for it
        protocol.connection_lost(None)
        assert transport.statuses == [503, 503, 503, 503, 200, 503]
        # 1 ms, doubling, capped at the setting; the 200 resets the count.
        assert loop.pauses == [0.001, 0.002, 0.004, 0.004, 0.001]

    loop = RecordingLoop()
    try:
        loop.run_until_complete(scenario(loop))
    finally:
        loop.close()
