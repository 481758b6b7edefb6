"""A listener of its own for the health probes (``http.health_port``), served from a thread of its own.

Why: under a storm of requests, everything on the REST port waits its turn of the event loop, and a turn
covers every connection that has something to read: at 32x capacity (1,024 clients retrying at once) a
``GET /v2/health/live`` on the REST port waited ~100-120 ms p99 for its turn, long enough to fail a
strict liveness probe of a pod that is only busy. This app runs on a second event loop in its own thread
(``app/serve.py``), which nothing else uses: a probe waits only for the GIL, a few milliseconds at
worst. It answers exactly what the REST port answers for ``/v2/health/live`` and ``/v2/health/ready``
(``is_live``, ``is_ready`` and ``readiness_reason`` are plain reads, safe from any thread) and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from modelserve.service.dataplane import DataPlane

__all__ = ["HealthApp"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_ONLY_HEALTH = b'{"error":"only GET /v2/health/live and /v2/health/ready are served on this port"}'


class HealthApp:
    def __init__(self, api: DataPlane) -> None:
        self._api = api

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path not in ("/v2/health/live", "/v2/health/ready"):
            await self._send(send, 404, _ONLY_HEALTH)
        elif method not in ("GET", "HEAD"):
            await self._send(send, 405, b'{"error":"Method Not Allowed: use GET"}')
        elif self._api.is_live() if path.endswith("live") else self._api.is_ready():
            await self._send(send, 200, b"")
        else:
            await self._send(send, 503, orjson.dumps({"error": self._api.readiness_reason()}))

    @staticmethod
    async def _send(send: Send, status: int, body: bytes) -> None:
        headers = [(b"content-length", str(len(body)).encode())]
        if body:
            headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
