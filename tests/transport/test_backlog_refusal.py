"""A REST inference request that waited for the event loop longer than ``http.max_backlog_ms`` after it was
read is refused at once (503 + Retry-After), before its body is read; a fresh one is served.

In process: the REST app on a real engine serving iris, called as uvicorn calls it, with the scope key the
connection protocol sets when it has read a request's headers (``READ_AT``). The wait is given by that
key, so no load and no clock is needed to make the server "behind"; the crowd the refusal also needs (32
requests in flight) is lowered to none for the test.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from modelserve import Engine
from modelserve.transport.http import app as http_app
from modelserve.transport.http.app import HttpApp
from modelserve.transport.http.connections import READ_AT
from tests.model_builders import iris_repository

BODY = orjson.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5, 3, 1, 0]}]})


async def call(app: HttpApp, read_ago_s: float | None) -> tuple[int, dict[bytes, bytes], bytes, bool]:
    """POST /v2/models/iris/infer; returns status, headers, body, and whether the body was read."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/iris/infer",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
    }
    if read_ago_s is not None:
        scope[READ_AT] = time.monotonic() - read_ago_s
    body_read = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal body_read
        if body_read:
            await asyncio.Event().wait()  # the disconnect watcher: nothing more comes
        body_read = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body, body_read


def test_a_request_left_waiting_past_the_backlog_bound_is_refused_before_its_body_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(iris_repository(tmp_path), load=["iris"]) as engine:
            await engine.wait_loaded()
            app = HttpApp(engine.dataplane, engine.settings.limits, engine.metrics, max_backlog_ms=50)
            # Late, but no crowd (nothing in flight): not the crowd's doing, so served.
            assert (await call(app, read_ago_s=0.2))[0] == 200
            # With the crowd the refusal needs (here: a floor of 0 requests in flight).
            monkeypatch.setattr(http_app, "_BACKLOG_MIN_IN_FLIGHT", 0)
            status, headers, body, body_read = await call(app, read_ago_s=0.2)
            assert status == 503 and headers[b"retry-after"] == b"1"
            message = orjson.loads(body)["error"]
            assert "the server is behind" in message and "http.max_backlog_ms=50" in message
            assert not body_read, "refused before the body was read"
            assert 'modelserve_rejection_duration_seconds_count{transport="http"} 1.0' in engine.metrics_text()
            # Fresh, and without the key (another ASGI server): served.
            for read_ago_s in (0.0, None):
                status, _, body, _ = await call(app, read_ago_s)
                assert status == 200, body
            # 0 turns the bound off.
            lenient = HttpApp(engine.dataplane, engine.settings.limits, engine.metrics, max_backlog_ms=0)
            assert (await call(lenient, read_ago_s=5.0))[0] == 200
            # A 503 that is not an overload refusal (the model is not loaded) carries no Retry-After and is
            # not counted as one.
            await engine.unload("iris")
            status, headers, body, _ = await call(lenient, read_ago_s=None)
            assert status == 503 and b"retry-after" not in headers, body
            assert 'modelserve_rejection_duration_seconds_count{transport="http"} 1.0' in engine.metrics_text()

    asyncio.run(scenario())
