"""What the REST connection guards cost per request: uvicorn's httptools protocol with and without them.

The guards (``transport/http/connections.py``: idle, header and body deadlines, the connection cap) sit on
every request's path, so their cost is measured on vs off in the same run. A whole-server benchmark cannot
resolve it (it is far below the run-to-run noise of perf_analyzer on a shared machine), so this drives the
protocol object directly: one keep-alive connection on a fake transport, an ASGI app that answers at once,
``--requests`` small POSTs (headers and body in one read, as nearly every real request arrives), each
carried to its response by the event loop. The difference per request is the guards' cost; the same loop
with the bare protocol is the baseline. Rounds alternate between the two to spread the machine's noise.

Usage (from the repository root)::

    .venv/bin/python bench/connection_guard_cost.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from modelserve.config import HttpSettings
from modelserve.transport.http.connections import guarded_protocol

BODY = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
REQUEST = (
    b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.responses = 0
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data).startswith(b"HTTP/1.1 "):
            self.responses += 1

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def per_request_us(protocol_class: type[asyncio.Protocol], requests: int) -> float:
    config = uvicorn.Config(app, http=protocol_class, lifespan="off", access_log=False, log_level="warning")
    config.load()
    loop = asyncio.get_running_loop()
    protocol: Any = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)  # type: ignore[call-arg]
    transport = FakeTransport()
    protocol.connection_made(transport)
    started = time.perf_counter()
    for expected in range(1, requests + 1):
        protocol.data_received(REQUEST)
        while transport.responses < expected:  # bounded: the app answers within a few loop turns
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    guarded = guarded_protocol(HttpSettings())  # the defaults
    bare: list[float] = []
    with_guards: list[float] = []
    await per_request_us(HttpToolsProtocol, 2000)  # warm-up
    await per_request_us(guarded, 2000)
    for _ in range(args.rounds):
        bare.append(await per_request_us(HttpToolsProtocol, args.requests))
        with_guards.append(await per_request_us(guarded, args.requests))
    b, g = statistics.median(bare), statistics.median(with_guards)
    print(f"requests per round: {args.requests}, rounds: {args.rounds} (median of rounds)")
    print(f"uvicorn httptools protocol, bare:   {b:6.2f} us/request")
    print(f"with modelserve's connection guards: {g:6.2f} us/request")
    print(f"guards' cost: {g - b:+.2f} us/request ({(g - b) / b:+.1%} of the protocol's own time)")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
