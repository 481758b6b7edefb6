"""The REST API as a plain ASGI application (no framework: the routes are few and the hot path short).

The routes, each with its method, pattern, handler and scope, are the table in ``routes.py`` (its module
docstring documents them; a test keeps the two in step). This module mounts the table (``/metrics`` only
with metrics on, ``/v2/alerts`` only with operations), runs the matched handler, and maps what the router
and the dataplane answer to statuses: an unknown path is a 404 that lists the route shapes, a known path with
the wrong method a 405 with ``Allow``, the shared-memory, trace and logging extensions a 501, and the
dashboard's routes, when it is off, a 404 that says how to turn it on.

Every error body is ``{"error": "..."}``; overload errors carry ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import orjson
import yaml

from modelserve.config import LimitSettings
from modelserve.core.context import MAX_HEADER_VALUE_CHARS, REQUEST_ID_HEADER, RequestContext
from modelserve.core.errors import DecodeError, ErrorCode, ModelServeError, QueueError
from modelserve.core.inference import InferRequest, InferResult
from modelserve.core.scopes import Scope
from modelserve.observability.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from modelserve.protocol import documents
from modelserve.protocol.rest_codec import (
    RestLimits,
    decode_infer_tensors,
    encode_infer_response,
    parse_infer_header,
    parse_json_body,
)
from modelserve.protocol.shared_memory_documents import register_request, status_document
from modelserve.protocol.tensor_codec import PRECHECK_MIN_BYTES
from modelserve.service.dashboard import dashboard_summary, parse_window_s
from modelserve.service.dataplane import DataPlane
from modelserve.service.operations import Operations
from modelserve.transport.http.body import ClientDisconnected, decompress, read_body
from modelserve.transport.http.connections import READ_AT, REFUSED
from modelserve.transport.http.dashboard_assets import PAGE, DashboardAssets
from modelserve.transport.http.errors import HTTP_STATUS
from modelserve.transport.http.metrics_app import exposition
from modelserve.transport.http.routes import ROUTES, Match, MethodNotAllowed, Router

__all__ = ["HttpApp"]

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Params = dict[str, str]
# Every handler takes the same four arguments, used or not, so the table can name any of them.
_Handler = Callable[[dict[str, Any], Receive, Send, Params], Awaitable[None]]

_JSON = b"application/json"
# Names the routing arm that chose the answer's version (only when a policy's split chose one).
ARM_HEADER = b"x-modelserve-arm"
# Names the fallback entry that answered because the chosen target failed or its breaker is open.
FALLBACK_HEADER = b"x-modelserve-fallback"
_BINARY = b"application/octet-stream"
_COMPRESS_MIN_BYTES = 256
_DASHBOARD_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


_NO_CUDA = (
    "CUDA shared memory (the 'cudasharedmemory' extension) is not supported: this server has no GPU support; "
    "use system shared memory (/v2/systemsharedmemory) or send the tensors in the request"
)

# The backlog refusal needs a crowd: fewer admitted requests than this cannot be what keeps the loop late.
_BACKLOG_MIN_IN_FLIGHT = 32


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


@functools.cache
def _openapi_json() -> bytes:
    """``openapi.yaml`` (package data beside this module) as JSON bytes: read and converted once, on first use
    (blocking: call it off the event loop). Thread-safe: at worst two first calls both convert it."""
    text = (resources.files("modelserve.transport.http") / "openapi.yaml").read_text(encoding="utf-8")
    return orjson.dumps(yaml.safe_load(text))


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
    """ASGI callable. Holds the API, the request limits and the compiled route table; no per-request state.

    Raises ``ValueError`` at construction if a route in ``routes.ROUTES`` names a handler this class lacks,
    so a table edit without its handler fails at start-up, not on the first request to that path.
    """

    def __init__(
        self,
        api: DataPlane,
        limits: LimitSettings,
        metrics: ServerMetrics | None = None,
        operations: Operations | None = None,
        dashboard: DashboardAssets | None = None,
        *,
        context_headers: frozenset[str] = frozenset(),
        max_backlog_ms: int = 0,
    ) -> None:
        self._api = api
        self._max_backlog_s = max_backlog_ms / 1000
        self._configured_headers = frozenset(name.encode("latin-1") for name in context_headers | {REQUEST_ID_HEADER})
        # (the routing policies' headers they were built with, the header names read): rebuilt only when a
        # policy change replaces the dataplane's set, so a request costs an identity check, not a union.
        routing_headers = api.routing_headers  # already those of the persisted policies: the app starts later
        self._wanted_headers = (
            routing_headers,
            self._configured_headers | {name.encode("latin-1") for name in routing_headers},
        )
        self._metrics = metrics
        self._observe_rejection = metrics.rejection_observer("http") if metrics is not None else None
        self._operations = operations
        self._dashboard = dashboard
        self._limits = limits
        self._rest_limits = RestLimits(
            max_tensor_bytes=limits.max_tensor_bytes,
            max_json_depth=limits.max_json_depth,
            max_requested_outputs=limits.max_requested_outputs,
            max_inputs=limits.max_inputs,
        )
        handlers: dict[str, _Handler] = {
            "server_live": self._server_live,
            "server_ready": self._server_ready,
            "server_metadata": self._server_metadata,
            "openapi": self._openapi,
            "model_infer": self._model_infer,
            "model_ready": self._model_ready,
            "model_statistics": self._model_statistics,
            "model_metadata": self._model_metadata,
            "model_config": self._model_config,
            "model_aliases": self._model_aliases,
            "set_alias": self._set_alias,
            "rollback": self._rollback,
            "model_routing": self._model_routing,
            "set_routing": self._set_routing,
            "clear_routing": self._clear_routing,
            "repository_index": self._repository_index,
            "model_load": self._model_load,
            "model_unload": self._model_unload,
            "metrics": self._serve_metrics,
            "alerts": self._alerts,
            "dashboard_summary": self._dashboard_summary,
            "dashboard_file": self._dashboard_file,
            "system_shm_status": self._system_shm_status,
            "system_shm_register": self._system_shm_register,
            "system_shm_unregister": self._system_shm_unregister,
            "cuda_shm_status": self._cuda_shm_status,
            "cuda_shm_register": self._cuda_shm_register,
            "cuda_shm_unregister": self._cuda_shm_unregister,
            "unsupported": self._unsupported,
        }
        missing = sorted({route.handler for route in ROUTES} - handlers.keys())
        if missing:
            raise ValueError(f"routes.ROUTES names handlers HttpApp does not have: {', '.join(missing)}")
        # A feature that is off is absent (its route is not mounted, so a 404 lists the routes without it),
        # as before; the dashboard is the exception below, because its 404 should say how to turn it on.
        if metrics is None:
            del handlers["metrics"]
        if operations is None:
            del handlers["alerts"]
        if api.shared_memory is None:  # shared_memory.enabled: false answers every shared-memory path 501
            for name in [name for name in handlers if "_shm_" in name]:
                del handlers[name]
        self._handlers = handlers
        self._router = Router(route for route in ROUTES if route.handler in handlers)
        # A scope switched off by configuration answers 404 with the reason, whatever the method (checked
        # before the 405), so a client probing the dashboard learns the setting rather than a method.
        self._disabled_scopes: dict[Scope, str] = {}
        if operations is None or not operations.dashboard_enabled:
            self._disabled_scopes[Scope.DASHBOARD] = (
                "the dashboard is disabled on this server; set dashboard.enabled: true to serve it"
            )

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        # uvicorn runs this app with lifespan="off", and start-up/shutdown belong to serve.py, so a
        # "lifespan" scope (or "websocket") is returned from at once: nothing here needs one.
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        try:
            await self._dispatch(scope, receive, send)
        except _HttpError as exc:
            await _send_error(send, exc.status, exc.message, exc.headers)
        except ModelServeError as exc:
            extra = [(b"retry-after", str(exc.retry_after_s).encode())] if exc.retry_after_s else None
            if exc.code is ErrorCode.UNSUPPORTED and "Content-Encoding" in exc.message:
                extra = [(b"accept-encoding", b"gzip, deflate")]
            # An overload refusal (it carries a retry hint; "not loaded" or "unloading" do not): its connection
            # backs off (transport/http/connections.py) and its cost is observed.
            shed = exc.code is ErrorCode.UNAVAILABLE and exc.retry_after_s is not None
            if shed:
                scope[REFUSED] = True
            await _send_error(send, HTTP_STATUS[exc.code], exc.message, extra)
            if shed and self._observe_rejection is not None:
                self._observe_rejection(time.perf_counter() - started)
        except ClientDisconnected:
            return
        except Exception:
            log.exception("unexpected error serving %s %s", scope.get("method"), scope.get("path"))
            await _send_error(send, 500, "internal server error; the server log has the details")

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
        found = self._router.match(scope["method"], scope["path"])
        if isinstance(found, Match):
            route = found.route
            if self._disabled_scopes and route.scope in self._disabled_scopes:
                raise _HttpError(404, self._disabled_scopes[route.scope])
            await self._handlers[route.handler](scope, receive, send, found.params)
        elif isinstance(found, MethodNotAllowed):
            for route in found.routes:
                if route.scope in self._disabled_scopes:
                    raise _HttpError(404, self._disabled_scopes[route.scope])
            allowed = ", ".join(found.allowed)
            raise _HttpError(
                405, f"Method Not Allowed: use {' or '.join(found.allowed)}", [(b"allow", allowed.encode())]
            )
        else:
            raise _HttpError(404, found.message)

    # -- health and metadata ----------------------------------------------------------------------------

    async def _server_live(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        if self._api.is_live():
            await _send(send, 200, b"")
        else:
            await _send_error(send, 503, "the server is not live")

    async def _server_ready(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        if self._api.is_ready():
            await _send(send, 200, b"")
        else:
            await _send_error(send, 503, self._api.readiness_reason())

    async def _server_metadata(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        await _send_json(send, self._api.server_metadata())

    async def _openapi(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        # Read on first use, not in __init__ (constructors load no files), in a thread: the YAML parse takes ~50 ms.
        await _send(send, 200, await asyncio.to_thread(_openapi_json))

    async def _model_metadata(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        metadata = await self._api.model_metadata(params["model"], params["version"])
        await _send_json(send, documents.metadata_document(metadata))

    async def _model_ready(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        # Not ready, for whatever reason (unknown, not loaded, loading, failed), is a 400 as Triton answers:
        # by the protocol any 4xx means "false", and tritonclient's is_model_ready reads it so.
        why_not = await self._api.model_readiness(params["model"], params["version"])
        if why_not:
            await _send_error(send, 400, why_not)
        else:
            await _send(send, 200, b"")

    async def _model_config(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        config = await self._api.model_config(params["model"], params["version"])
        await _send_json(send, documents.config_document(config))

    async def _model_statistics(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        # ``/v2/models/stats`` leaves both empty: every model, every version (the dataplane's convention).
        await _send_json(send, await documents.statistics_everywhere(self._api, params["model"], params["version"]))

    # -- routing policies (our extension; gRPC has no routing API) -------------------------------------

    async def _model_routing(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        await _send_json(send, self._api.routing(params["model"]))

    async def _set_routing(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        """``PUT /v2/models/{model}/routing`` with the policy document (or GET's answer: its ``policy``)."""
        body = self._json_object(await self._body(scope, receive))
        document = body["policy"] if isinstance(body.get("policy"), dict) else body
        await _send_json(send, await self._api.set_routing(params["model"], document))

    async def _clear_routing(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        await self._api.clear_routing(params["model"])
        await _send_json(send, self._api.routing(params["model"]))

    # -- aliases (our extension) ------------------------------------------------------------------------

    async def _model_aliases(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        name = params["model"]
        aliases = await self._api.aliases(name)
        document = {a: {"version": v.version, "history": v.history} for a, v in sorted(aliases.items())}
        await _send_json(send, {"name": name, "aliases": document})

    async def _set_alias(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        """``POST /v2/models/{model}/aliases/{alias}`` with ``{"version": "3"}``."""
        name, alias_name = params["model"], params["alias"]
        version = self._json_object(await self._body(scope, receive)).get("version")
        if not isinstance(version, str):
            raise DecodeError('the body must be {"version": "<number>"}')
        alias = await self._api.set_alias(name, alias_name, version)
        await _send_json(send, {"name": name, "alias": alias_name, "version": alias.version})

    async def _rollback(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        """``POST /v2/models/{model}/rollback`` with ``{"alias": "production"}`` (optional)."""
        name = params["model"]
        alias_name = self._json_object(await self._body(scope, receive)).get("alias", "production")
        if not isinstance(alias_name, str):
            raise DecodeError('the body must be {"alias": "<name>"} or empty (production)')
        alias = await self._api.rollback(name, alias_name)
        await _send_json(send, {"name": name, "alias": alias_name, "version": alias.version})

    # -- inference --------------------------------------------------------------------------------------

    async def _model_infer(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        # Under overload, refuse before the body is read or decoded: a refusal must cost far less than a
        # request, or the loop spends its core on requests it then rejects (congestion collapse).
        if self._max_backlog_s:
            self._refuse_if_behind(scope)
        self._api.refuse_if_saturated(params["model"], params["version"])
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
        try:
            header = parse_infer_header(body, header_length, params["model"], params["version"], self._rest_limits)
        except DecodeError as exc:
            self._api.count_undecodable(params["model"], params["version"], exc)
            raise
        context = self._request_context(scope)
        # Reject a mistyped or misshapen request for the cost of its header, before its elements are decoded
        # (small bodies decode for less than the check costs).
        if len(body) + header.shared_memory_bytes >= PRECHECK_MIN_BYTES:
            await self._api.precheck(header.model_name, header.model_version, header.declared, context)
        regions = self._api.shared_memory
        try:
            decoded = decode_infer_tensors(header, self._rest_limits, regions)
        except DecodeError as exc:
            self._api.count_undecodable(header.model_name, header.model_version, exc)
            raise
        response = await self._infer_unless_disconnected(decoded.request, context, receive)
        payload, json_length = encode_infer_response(response, decoded.request, decoded.binary_data_output, regions)
        extra: list[tuple[bytes, bytes]] = []
        if response.arm:
            extra.append((ARM_HEADER, response.arm.encode("latin-1")))
        if response.fallback:
            extra.append((FALLBACK_HEADER, response.fallback.encode("latin-1")))
        content_type = _JSON
        if json_length is not None:
            content_type = _BINARY
            extra.append((b"inference-header-content-length", str(json_length).encode()))
        encoding = _pick_encoding(_header(scope, b"accept-encoding"))
        if encoding is not None and len(payload) >= _COMPRESS_MIN_BYTES:
            payload = _compress(payload, encoding)
            extra.append((b"content-encoding", encoding.encode()))
        await _send(send, 200, payload, content_type, extra)

    def _refuse_if_behind(self, scope: dict[str, Any]) -> None:
        """Refuse a request that waited for the loop longer than ``http.max_backlog_ms`` after it was read.

        When requests arrive faster than the loop serves them, the excess waits in front of the loop, where
        no queue bound sees it (the model's queue stays short: the loop cannot fill it), and every
        request's latency grows with the crowd. A request that waited too long is refused at once, for
        the cost of its headers, so the backlog drains quickly and those admitted wait at most about this.
        Only with at least ``_BACKLOG_MIN_IN_FLIGHT`` requests in flight: with fewer, the crowd is not what
        made the loop late (a model loading, a collection), and refusing would not make it sooner.
        """
        read_at = scope.get(READ_AT)
        if read_at is None:
            return
        waited_s = time.monotonic() - read_at
        if waited_s > self._max_backlog_s and self._api.requests_in_flight >= _BACKLOG_MIN_IN_FLIGHT:
            raise QueueError(
                f"the server is behind: this request waited {waited_s * 1000:.0f} ms before it was handled "
                f"(http.max_backlog_ms={self._max_backlog_s * 1000:.0f}); retry later or add replicas",
                retry_after_s=1,
            )

    def _request_context(self, scope: dict[str, Any]) -> RequestContext:
        """The configured headers and those a routing policy reads: nothing else a client sends is decoded
        or kept."""
        routing_headers, wanted = self._wanted_headers
        if routing_headers is not self._api.routing_headers:
            routing_headers = self._api.routing_headers
            wanted = self._configured_headers | {name.encode("latin-1") for name in routing_headers}
            self._wanted_headers = (routing_headers, wanted)
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

    # -- repository -------------------------------------------------------------------------------------

    async def _repository_index(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        body = self._json_object(await self._body(scope, receive))
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise DecodeError("'ready' must be true or false")
        entries = self._api.repository_index(ready_only=ready)
        await _send_json(send, documents.index_document(entries, with_details=True))

    async def _model_load(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        await self._api.load_model(params["model"], await self._load_parameters(scope, receive))
        await _send(send, 200, b"")

    async def _model_unload(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        await self._api.unload_model(params["model"], await self._load_parameters(scope, receive))
        await _send(send, 200, b"")

    async def _load_parameters(self, scope: dict[str, Any], receive: Receive) -> dict[str, Any]:
        body = self._json_object(await self._body(scope, receive))
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise DecodeError("'parameters' must be a JSON object")
        # Triton's REST load carries each 'file:<path>' as base64 text; the dataplane takes the bytes.
        return {key: _file_bytes(key, value) if key.startswith("file:") else value for key, value in parameters.items()}

    # -- operations: metrics, alerts, dashboard -----------------------------------------------------------

    async def _serve_metrics(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        # Mounted only when metrics are on (``__init__``), so the None case is a bug, not a request error.
        assert self._metrics is not None
        await _send(send, 200, await exposition(self._metrics, self._api.siblings), CONTENT_TYPE_LATEST.encode())

    async def _alerts(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        assert self._operations is not None  # mounted only with operations
        await _send_json(send, self._operations.alerts.document())

    async def _dashboard_summary(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        # The dashboard scope is disabled (a 404 before this runs) unless operations exist and enable it.
        assert self._operations is not None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        window_s = parse_window_s(query["window"][-1] if "window" in query else None)
        await _send(
            send,
            200,
            orjson.dumps(dashboard_summary(self._api, self._operations, window_s)),
            extra=[(b"cache-control", b"no-store")],
        )

    async def _dashboard_file(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        # A lookup in the allow-list, never a path join: '/dashboard/../x' is just an unknown name.
        name = params["file"] or PAGE
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

    # -- shared memory ----------------------------------------------------------------------------------

    async def _system_shm_status(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        await _send_json(send, status_document(self._api.shared_memory_status(params["region"])))

    async def _system_shm_register(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        key, offset, byte_size = register_request(self._json_object(await self._body(scope, receive)))
        await self._api.register_shared_memory(params["region"], key, offset, byte_size)
        await _send(send, 200, b"")

    async def _system_shm_unregister(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        await self._api.unregister_shared_memory(params["region"])
        await _send(send, 200, b"")

    async def _cuda_shm_status(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        # No CUDA region can be registered here, so the list is empty and any name is unknown (Triton's text).
        if params["region"]:
            raise _HttpError(404, f"Unable to find cuda shared memory region: '{params['region'][:64]}'")
        await _send_json(send, [])

    async def _cuda_shm_register(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        raise _HttpError(501, _NO_CUDA)

    async def _cuda_shm_unregister(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        await _send(send, 200, b"")  # nothing is ever registered: unregistering it succeeds, as in Triton

    async def _unsupported(self, scope: dict[str, Any], receive: Receive, send: Send, params: Params) -> None:
        # The extension is the first segment after /v2 (the route matched it, empty segments aside).
        extension = [segment for segment in scope["path"].split("/") if segment][1]
        if self._api.shared_memory is not None and extension in ("systemsharedmemory", "cudasharedmemory"):
            # A shared-memory operation's path with another method: the any-method route caught it, but
            # the answer is the router's usual 405.
            allowed = [
                method
                for method in ("GET", "POST")
                if isinstance(found := self._router.match(method, scope["path"]), Match)
                and found.route.handler != "unsupported"
            ]
            if allowed:
                raise _HttpError(
                    405, f"Method Not Allowed: use {' or '.join(allowed)}", [(b"allow", allowed[0].encode())]
                )
        if extension == "cudasharedmemory":
            raise _HttpError(501, _NO_CUDA)
        if extension == "systemsharedmemory" and self._api.shared_memory is not None:
            raise _HttpError(
                501,
                "no system shared memory operation at this path and method; use GET "
                "/v2/systemsharedmemory[/region/{name}]/status, POST /v2/systemsharedmemory/region/{name}/register "
                "or POST /v2/systemsharedmemory[/region/{name}]/unregister",
            )
        raise _HttpError(501, f"the '{extension}' extension is not supported by this server")

    @staticmethod
    def _json_object(body: bytes | bytearray) -> dict[str, Any]:
        if not body.strip():
            return {}
        document = parse_json_body(body)
        if not isinstance(document, dict):
            raise DecodeError("the request body must be a JSON object")
        return document


def _file_bytes(key: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise DecodeError(f"load parameter '{key[:64]}' must be the file's content as a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise DecodeError(f"load parameter '{key[:64]}' is not valid base64") from None
