"""A listener of its own for ``GET /metrics`` (``metrics.port``, Triton's ``--metrics-port``): lets
Prometheus scrape on a port that the inference clients' network policy need not open, and keeps scrapes
out of the REST port's connection pool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from modelserve.observability.exposition import merge_expositions
from modelserve.observability.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from modelserve.service.siblings import Siblings

__all__ = ["MetricsApp", "exposition"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


async def exposition(metrics: ServerMetrics, siblings: Siblings | None) -> bytes:
    """What a scrape gets: this process's metrics, or, with several workers, every worker's merged
    (``observability/exposition.py``), so one scrape of any worker shows the whole server."""
    if siblings is None:
        return metrics.render()
    texts = await siblings.metrics_texts()
    texts[siblings.worker_index] = metrics.render().decode()
    return merge_expositions(texts).encode()


class MetricsApp:
    def __init__(self, metrics: ServerMetrics, siblings: Siblings | None = None) -> None:
        self._metrics = metrics
        self._siblings = siblings

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            await self._send(send, 404, b'{"error":"only /metrics is served on this port"}', b"application/json")
        elif scope["method"] not in ("GET", "HEAD"):
            await self._send(send, 405, b'{"error":"Method Not Allowed: use GET"}', b"application/json")
        else:
            await self._send(send, 200, await exposition(self._metrics, self._siblings), CONTENT_TYPE_LATEST.encode())

    @staticmethod
    async def _send(send: Send, status: int, body: bytes, content_type: bytes) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
