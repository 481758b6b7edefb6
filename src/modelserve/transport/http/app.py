"""The REST API as a plain ASGI application (no framework: the routes are few and the hot path short).

Routes (``[/versions/{v}]`` optional everywhere it appears):

=======  =============================================  ==========================================
GET      /v2/health/live, /v2/health/ready               200, or 503 when not ready
GET      /v2                                             server metadata
GET      /v2/models/{m}[/versions/{v}]                   model metadata
GET      /v2/models/{m}[/versions/{v}]/ready             200, 503 not ready, 404 unknown
GET      /v2/models/{m}[/versions/{v}]/config            Triton ModelConfig as JSON
POST     /v2/models/{m}[/versions/{v}]/infer             inference, JSON or binary tensors
GET      /v2/models[/{m}[/versions/{v}]]/stats           statistics extension
POST     /v2/repository/index                            repository index
POST     /v2/repository/models/{m}/load|unload           model control (explicit mode only)
GET      /dashboard, /dashboard/{file}                   the live dashboard page and its static files
GET      /v2/alerts                                      firing, pending and resolved alerts
GET      /v2/dashboard/summary[?window=seconds]          the dashboard's data (``service/dashboard.py``)
=======  =============================================  ==========================================

Every error body is ``{"error": "..."}``; overload errors carry ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson

from modelserve.config import LimitSettings
from modelserve.core.context import MAX_HEADER_VALUE_CHARS, REQUEST_ID_HEADER, RequestContext
from modelserve.core.errors import DecodeError, ErrorCode, ModelServeError
from modelserve.core.inference import InferRequest, InferResult
from modelserve.observability.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from modelserve.protocol import documents
from modelserve.protocol.rest_codec import (
    RestLimits,
    decode_infer_request,
    encode_infer_response,
    parse_json_body,
)
from modelserve.service.dashboard import dashboard_summary, parse_window_s
from modelserve.service.dataplane import DataPlane
from modelserve.service.operations import Operations
from modelserve.transport.http.body import ClientDisconnected, decompress, read_body
from modelserve.transport.http.dashboard_assets import PAGE, DashboardAssets
from modelserve.transport.http.errors import HTTP_STATUS

__all__ = ["HttpApp"]

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_JSON = b"application/json"
_BINARY = b"application/octet-stream"
_UNSUPPORTED_PREFIXES = ("systemsharedmemory", "cudasharedmemory", "trace", "logging")
_COMPRESS_MIN_BYTES = 256
_DASHBOARD_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = _JSON,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, document: Any, status: int = 200) -> None:
    await _send(send, status, orjson.dumps(document))


async def _send_error(send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, status, orjson.dumps({"error": message}), extra=extra)


def _pick_encoding(accept: bytes | None) -> str | None:
    if not accept:
        return None
    offered = {}
    for part in accept.decode("latin-1").lower().split(","):
        token, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        offered[token.strip()] = quality
    for encoding in ("gzip", "deflate"):
        if offered.get(encoding, 0.0) > 0:
            return encoding
    return None


def _compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


class HttpApp:
    """ASGI callable. Holds the API and the request limits; no state of its own."""

    def __init__(
        self,
        api: DataPlane,
        limits: LimitSettings,
        metrics: ServerMetrics | None = None,
        operations: Operations | None = None,
        dashboard: DashboardAssets | None = None,
        *,
        context_headers: frozenset[str] = frozenset(),
    ) -> None:
        self._api = api
        self._wanted_headers = frozenset(name.encode("latin-1") for name in context_headers | {REQUEST_ID_HEADER})
        self._metrics = metrics
        self._operations = operations
        self._dashboard = dashboard
        self._limits = limits
        self._rest_limits = RestLimits(
            max_tensor_bytes=limits.max_tensor_bytes,
            max_json_depth=limits.max_json_depth,
            max_requested_outputs=limits.max_requested_outputs,
        )

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._dispatch(scope, receive, send)
        except _HttpError as exc:
            await _send_error(send, exc.status, exc.message, exc.headers)
        except ModelServeError as exc:
            extra = [(b"retry-after", str(exc.retry_after_s).encode())] if exc.retry_after_s else None
            if exc.code is ErrorCode.UNSUPPORTED and "Content-Encoding" in exc.message:
                extra = [(b"accept-encoding", b"gzip, deflate")]
            await _send_error(send, HTTP_STATUS[exc.code], exc.message, extra)
        except ClientDisconnected:
            return
        except Exception:
            log.exception("unexpected error serving %s %s", scope.get("method"), scope.get("path"))
            await _send_error(send, 500, "internal server error; the server log has the details")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _body(self, scope: dict[str, Any], receive: Receive) -> bytes | bytearray:
        limits = self._limits
        raw_length = _header(scope, b"content-length")
        content_length = None
        if raw_length is not None:
            try:
                content_length = int(raw_length)
            except ValueError:
                raise DecodeError("Content-Length is not a number") from None
        body = await read_body(receive, content_length, limits.max_request_bytes, limits.max_body_chunks)
        encoding = _header(scope, b"content-encoding")
        if encoding:
            return decompress(body, encoding.decode("latin-1"), limits.max_request_bytes)
        return body

    async def _dispatch(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/metrics" and self._metrics is not None:
            self._allow(method, "GET")
            await _send(send, 200, self._metrics.render(), CONTENT_TYPE_LATEST.encode())
            return
        if path == "/dashboard" or path.startswith("/dashboard/"):
            await self._dashboard_file(path, method, scope, send)
            return
        if not path.startswith("/v2"):
            raise _HttpError(404, "Not Found")
        parts = [p for p in path[3:].strip("/").split("/") if p] if path != "/v2" else []
        head = parts[0] if parts else ""
        if not parts:
            self._allow(method, "GET")
            await _send_json(send, self._api.server_metadata())
        elif head == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            self._allow(method, "GET")
            ok = self._api.is_live() if parts[1] == "live" else self._api.is_ready()
            if ok:
                await _send(send, 200, b"")
            else:
                await _send_error(send, 503, "the server is not ready (loading models, or shutting down)")
        elif head == "models":
            await self._models(parts[1:], method, scope, receive, send)
        elif head == "repository":
            await self._repository(parts[1:], method, scope, receive, send)
        elif parts == ["dashboard", "summary"]:
            operations = self._dashboard_operations()
            self._allow(method, "GET")
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            window_s = parse_window_s(query["window"][-1] if "window" in query else None)
            await _send(
                send,
                200,
                orjson.dumps(dashboard_summary(self._api, operations, window_s)),
                extra=[(b"cache-control", b"no-store")],
            )
        elif parts == ["alerts"]:
            if self._operations is None:
                raise _HttpError(404, "Not Found")
            self._allow(method, "GET")
            await _send_json(send, self._operations.alerts.document())
        elif head in _UNSUPPORTED_PREFIXES:
            raise _HttpError(501, f"the '{head}' extension is not supported by this server")
        else:
            raise _HttpError(404, "Not Found")

    def _dashboard_operations(self) -> Operations:
        if self._operations is None or not self._operations.dashboard_enabled:
            raise _HttpError(404, "the dashboard is disabled on this server; set dashboard.enabled: true to serve it")
        return self._operations

    async def _dashboard_file(self, path: str, method: str, scope: dict[str, Any], send: Send) -> None:
        self._dashboard_operations()
        self._allow(method, "GET")
        # A lookup in the allow-list, never a path join: '/dashboard/../x' is just an unknown name.
        name = path[len("/dashboard/") :] or PAGE
        asset = self._dashboard.get(name) if self._dashboard is not None else None
        if asset is None:
            raise _HttpError(404, f"no dashboard file '{name[:64]}'; the page is at /dashboard")
        headers = [
            (b"etag", asset.etag.encode()),
            (b"cache-control", asset.cache_control.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if name == PAGE:
            # Everything the page loads comes from this server: no CDN, no inline script.
            headers.append((b"content-security-policy", _DASHBOARD_CSP))
        if _header(scope, b"if-none-match") == asset.etag.encode():
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await _send(send, 200, asset.body, asset.content_type.encode(), headers)

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise _HttpError(405, f"Method Not Allowed: use {allowed}", [(b"allow", allowed.encode())])

    async def _models(self, parts: list[str], method: str, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        api = self._api
        if parts == ["stats"]:
            self._allow(method, "GET")
            await _send_json(send, documents.statistics_document(await api.statistics("", "")))
            return
        if not parts or not parts[0]:
            raise _HttpError(404, "Not Found")
        name, rest = parts[0], parts[1:]
        if rest and rest[0] in ("aliases", "rollback"):
            await self._aliases(name, rest, method, scope, receive, send)
            return
        version = ""
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1:
            raise _HttpError(404, "Not Found")
        if action == "infer":
            self._allow(method, "POST")
            await self._infer(name, version, scope, receive, send)
        elif action == "":
            self._allow(method, "GET")
            await _send_json(send, documents.metadata_document(await api.model_metadata(name, version)))
        elif action == "ready":
            self._allow(method, "GET")
            if await api.is_model_ready(name, version):
                await _send(send, 200, b"")
            else:
                await _send_error(send, 503, f"model '{name}' is not ready ({api.readiness_detail(name)})")
        elif action == "config":
            self._allow(method, "GET")
            await _send_json(send, documents.config_document(await api.model_config(name, version)))
        elif action == "stats":
            self._allow(method, "GET")
            await _send_json(send, documents.statistics_document(await api.statistics(name, version)))
        else:
            raise _HttpError(404, "Not Found")

    async def _aliases(
        self, name: str, rest: list[str], method: str, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        """Our extension: ``GET /v2/models/{m}/aliases``, ``POST /v2/models/{m}/aliases/{alias}``
        (``{"version": "3"}``), ``POST /v2/models/{m}/rollback`` (``{"alias": "production"}``, optional)."""
        api = self._api
        if rest == ["aliases"]:
            self._allow(method, "GET")
            aliases = await api.aliases(name)
            document = {a: {"version": v.version, "history": v.history} for a, v in sorted(aliases.items())}
            await _send_json(send, {"name": name, "aliases": document})
            return
        if len(rest) == 2 and rest[0] == "aliases":
            self._allow(method, "POST")
            version = self._json_object(await self._body(scope, receive)).get("version")
            if not isinstance(version, str):
                raise DecodeError('the body must be {"version": "<number>"}')
            alias = await api.set_alias(name, rest[1], version)
            await _send_json(send, {"name": name, "alias": rest[1], "version": alias.version})
            return
        if rest == ["rollback"]:
            self._allow(method, "POST")
            alias_name = self._json_object(await self._body(scope, receive)).get("alias", "production")
            if not isinstance(alias_name, str):
                raise DecodeError('the body must be {"alias": "<name>"} or empty (production)')
            alias = await api.rollback(name, alias_name)
            await _send_json(send, {"name": name, "alias": alias_name, "version": alias.version})
            return
        raise _HttpError(404, "Not Found")

    async def _infer(self, name: str, version: str, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        body = await self._body(scope, receive)
        raw_header_length = _header(scope, b"inference-header-content-length")
        header_length = None
        if raw_header_length is not None:
            try:
                header_length = int(raw_header_length)
            except ValueError:
                raise DecodeError("Inference-Header-Content-Length is not a number") from None
            if header_length < 0:
                raise DecodeError("Inference-Header-Content-Length must be >= 0")
        decoded = decode_infer_request(body, header_length, name, version, self._rest_limits)
        response = await self._infer_unless_disconnected(decoded.request, self._request_context(scope), receive)
        payload, json_length = encode_infer_response(response, decoded.request, decoded.binary_data_output)
        extra: list[tuple[bytes, bytes]] = []
        content_type = _JSON
        if json_length is not None:
            content_type = _BINARY
            extra.append((b"inference-header-content-length", str(json_length).encode()))
        encoding = _pick_encoding(_header(scope, b"accept-encoding"))
        if encoding is not None and len(payload) >= _COMPRESS_MIN_BYTES:
            payload = _compress(payload, encoding)
            extra.append((b"content-encoding", encoding.encode()))
        await _send(send, 200, payload, content_type, extra)

    def _request_context(self, scope: dict[str, Any]) -> RequestContext:
        """The configured headers only: nothing else a client sends is decoded or kept."""
        wanted = self._wanted_headers
        headers = {
            key.decode("latin-1"): value.decode("latin-1")[:MAX_HEADER_VALUE_CHARS]
            for key, value in scope["headers"]
            if key in wanted
        }
        return RequestContext(request_id=headers.get(REQUEST_ID_HEADER, ""), headers=headers, transport="http")

    async def _infer_unless_disconnected(
        self, request: InferRequest, context: RequestContext, receive: Receive
    ) -> InferResult:
        """Run the request, cancelling it if the client disconnects first: a queued request whose client
        is gone is dropped before it runs, and never takes a place in a batch."""
        current = asyncio.current_task()
        assert current is not None
        watcher: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(receive())
        disconnected = False

        def on_message(task: asyncio.Future[dict[str, Any]]) -> None:
            nonlocal disconnected
            if not task.cancelled() and task.exception() is None and task.result()["type"] == "http.disconnect":
                disconnected = True
                current.cancel()

        watcher.add_done_callback(on_message)
        try:
            return await self._api.infer(request, context)
        except asyncio.CancelledError:
            if disconnected and current.uncancel() == 0:
                raise ClientDisconnected from None
            raise
        finally:
            watcher.remove_done_callback(on_message)
            watcher.cancel()

    async def _repository(
        self, parts: list[str], method: str, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        api = self._api
        if parts == ["index"]:
            self._allow(method, "POST")
            body = self._json_object(await self._body(scope, receive))
            ready = body.get("ready", False)
            if not isinstance(ready, bool):
                raise DecodeError("'ready' must be true or false")
            entries = api.repository_index(ready_only=ready)
            await _send_json(send, documents.index_document(entries, with_details=True))
            return
        if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
            self._allow(method, "POST")
            body = self._json_object(await self._body(scope, receive))
            parameters = body.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise DecodeError("'parameters' must be a JSON object")
            if parts[2] == "load":
                await api.load_model(parts[1], parameters)
            else:
                await api.unload_model(parts[1], parameters)
            await _send(send, 200, b"")
            return
        raise _HttpError(404, "Not Found")

    @staticmethod
    def _json_object(body: bytes | bytearray) -> dict[str, Any]:
        if not body.strip():
            return {}
        document = parse_json_body(body)
        if not isinstance(document, dict):
            raise DecodeError("the request body must be a JSON object")
        return document
