"""The REST route table: method, path pattern, handler and scope of every endpoint, and a pure matcher.

In the spirit of ``encode/starlette: starlette/routing.py`` (a list of routes, first match wins, a path that
matches with the wrong method is a 405 naming the allowed ones), but small and ours: no converters beyond
``{name}`` (one segment) and ``{name:path}`` (the rest of the path, slashes included), plus ``[...]`` for an
optional part, so Triton's ``[/versions/{version}]`` is written once instead of doubling the table.

``[/versions/{version}]`` is optional wherever it appears; an absent parameter is passed as ``""``.

=======  ===================================================  ================  ==================================
GET      /v2/health/live                                      health            200, or 503 when not live
GET      /v2/health/ready                                     health            200, or 503 when not ready
GET      /v2                                                  metadata          server metadata
GET      /v2/openapi.json                                     metadata          this API's OpenAPI document
POST     /v2/models/{model}[/versions/{version}]/infer        inference         inference, JSON or binary tensors
GET      /v2/models/{model}[/versions/{version}]/ready        health            200, or 400 not ready or unknown
GET      /v2/models[/{model}[/versions/{version}]]/stats      statistics        statistics extension (all models)
GET      /v2/models/{model}[/versions/{version}]              metadata          model metadata
GET      /v2/models/{model}[/versions/{version}]/config       model-config      Triton ModelConfig as JSON
GET      /v2/models/{model}/aliases                           model-repository  aliases and their history
POST     /v2/models/{model}/aliases/{alias}                   admin             ``{"version": "3"}``
POST     /v2/models/{model}/rollback                          admin             ``{"alias": "production"}``
GET      /v2/models/{model}/routing                           model-repository  routing policy and arm shares
PUT      /v2/models/{model}/routing                           admin             set the routing policy
DELETE   /v2/models/{model}/routing                           admin             remove the routing policy
POST     /v2/repository/index                                 model-repository  repository index
POST     /v2/repository/models/{model}/load                   model-repository  load (explicit mode only)
POST     /v2/repository/models/{model}/unload                 model-repository  unload (explicit mode only)
GET      /metrics                                             metrics           Prometheus text (metrics on)
GET      /v2/alerts                                           metrics           firing, pending, resolved alerts
GET      /v2/dashboard/summary                                dashboard         ``[?window=seconds]``
GET      /dashboard[/{file:path}]                             dashboard         the page and its static files
GET      /v2/systemsharedmemory[/region/{region}]/status      shared-memory     registered regions
POST     /v2/systemsharedmemory/region/{region}/register      shared-memory     ``{"key", "offset", "byte_size"}``
POST     /v2/systemsharedmemory[/region/{region}]/unregister  shared-memory     one region, or all
GET      /v2/cudasharedmemory[/region/{region}]/status        shared-memory     always none (no GPU)
POST     /v2/cudasharedmemory/region/{region}/register        shared-memory     501: no GPU support
POST     /v2/cudasharedmemory[/region/{region}]/unregister    shared-memory     nothing to unregister
ANY      /v2/systemsharedmemory[/{rest:path}]                 shared-memory     501: other shapes, or off
ANY      /v2/cudasharedmemory[/{rest:path}]                   shared-memory     501: not supported
ANY      /v2/trace[/{rest:path}]                              trace             501: not supported
ANY      /v2/logging[/{rest:path}]                            logging           501: not supported
=======  ===================================================  ================  ==================================

(``tests/transport/test_routes.py`` checks that this table and :data:`ROUTES` agree row for row.)

Matching rules, kept from the hand-written dispatcher this replaced: repeated and trailing slashes between
segments are ignored (``/v2//models/iris/infer/``); the path is the ASGI ``path`` (already percent-decoded,
so ``a%2Fb`` is two segments); a ``{name}`` parameter is passed on verbatim (``..``, NUL, dots: the
dataplane's name validators answer those, not the router); a ``{name:path}`` parameter keeps its slashes
(the dashboard looks the name up in an allow-list, never joins it). Two deliberate differences: ``/v2``
glued to a segment (``/v2models/iris/infer``, ``/v2trace``) is no longer read as ``/v2/...`` but is a 404,
and the trailing-slash rule now covers ``/metrics/`` too.

Cost: each method's routes are compiled into one alternation regex, so a lookup is one dict access and one
``re.match`` in C plus the parameter dict, never a Python loop over routes. Measured with ``timeit`` (best
of 7, CPython 3.11), matching ``POST /v2/models/iris/infer`` costs about 1.2x (1.1-1.3x across runs) what
the old if/elif chain spent splitting and comparing the same path to reach its infer branch: the 404
listing, the 405 ``Allow`` and a scope per route for a fifth more of a step that is a small share of even
the cheapest inference. Only a miss (404/405) walks the other methods' tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from modelserve.core.scopes import Scope

__all__ = [
    "ANY_METHOD",
    "ROUTES",
    "Match",
    "MethodNotAllowed",
    "NotFound",
    "Route",
    "Router",
    "compile_pattern",
]

ANY_METHOD = "*"
"""A route for every method: the 501 families answer "not supported" whatever the client sends, as Triton
does, rather than a 405 that would suggest another method might work."""

# The echoed path is the client's input: bounded so a 64 KiB URL cannot make a 64 KiB error body.
_MAX_ECHOED_PATH_CHARS = 100
_MAX_ECHOED_METHOD_CHARS = 16
_PIECE = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<path>:path)?\}|\[|\]|/|[^{}\[\]/]+")


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint. ``handler`` names the coroutine the app runs (the app maps names to its bound methods,
    so this module imports nothing of the app's); ``scope`` is what the gateway will check before it runs.
    ``is_listed`` is false for routes that exist only to refuse (the 501 families): a 404's route list is a
    menu of what a client can use, and "not supported" entries would only lengthen it."""

    method: str
    pattern: str
    handler: str
    scope: Scope
    is_listed: bool = True

    @property
    def shape(self) -> str:
        """``METHOD /pattern`` as the 404 lists it, with ``{file:path}`` shown as ``{file}``."""
        method = "ANY" if self.method == ANY_METHOD else self.method
        return f"{method} {self.pattern.replace(':path}', '}')}"


class Match(NamedTuple):
    """The path and method matched ``route``; ``params`` holds every parameter of its pattern, ``""`` for
    one in an absent optional part. (A NamedTuple, not a frozen dataclass: one is built for every
    request, and a tuple builds faster.)"""

    route: Route
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    """The path exists, but not for this method. ``allowed`` is in table order (the ``Allow`` header)."""

    routes: tuple[Route, ...]
    allowed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotFound:
    """No route has this path. ``message`` says so and lists the route shapes that exist."""

    message: str


def compile_pattern(pattern: str, *, group_prefix: str = "") -> tuple[str, tuple[str, ...]]:
    """The regex source for ``pattern`` (unanchored; each parameter a group named ``group_prefix + name``)
    and its parameter names in order.

    Raises ``ValueError`` naming the pattern for unbalanced ``[``/``]``, a repeated parameter, a
    ``{name:path}`` that is not last, or a pattern that does not start with ``/``. Pure.
    """
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern {pattern!r} must start with '/'")
    pieces = [m.group(0) for m in _PIECE.finditer(pattern)]
    if "".join(pieces) != pattern:
        raise ValueError(f"route pattern {pattern!r} has a stray brace; a parameter is {{name}} or {{name:path}}")
    parts: list[str] = []
    names: list[str] = []
    depth = 0
    has_taken_rest = False
    for index, piece in enumerate(pieces):
        if has_taken_rest and piece != "]":
            raise ValueError(f"route pattern {pattern!r}: a {{name:path}} parameter must come last")
        if piece == "/":
            # The leading slash is exact (``//v2`` is no route, as before); later ones absorb repeats. The
            # slash before a path parameter is exact too, so the parameter keeps the rest verbatim.
            before_rest = index + 1 < len(pieces) and pieces[index + 1].endswith(":path}")
            parts.append("/" if index == 0 or before_rest else "/+")
        elif piece == "[":
            depth += 1
            parts.append("(?:")
        elif piece == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"route pattern {pattern!r} closes a ']' it never opened")
            parts.append(")?")
        elif piece.startswith("{"):
            has_taken_rest = piece.endswith(":path}")
            name = piece[1:-1].removesuffix(":path")
            if name in names:
                raise ValueError(f"route pattern {pattern!r} repeats the parameter {{{name}}}")
            names.append(name)
            # Any character but '/' in a segment: odd names reach the dataplane's validators unchanged.
            parts.append(f"(?P<{group_prefix}{name}>{'.*' if has_taken_rest else '[^/]+'})")
        else:
            parts.append(re.escape(piece))
    if depth != 0:
        raise ValueError(f"route pattern {pattern!r} leaves a '[' unclosed")
    # Trailing slashes are ignored, as the old dispatcher's split-and-drop-empty did.
    parts.append("/*")
    return "".join(parts), tuple(names)


class _MethodTable:
    """Every route of one method as one compiled alternation: ``(?P<r0>...)|(?P<r1>...)``. ``re`` tries
    the alternatives in order, so the first route in table order wins, and ``lastindex`` (the outermost
    group closes last) says which one it was."""

    __slots__ = ("entries", "regex")

    def __init__(self, numbered: list[tuple[int, Route]]) -> None:
        sources = []
        names_of: dict[int, tuple[str, ...]] = {}
        for number, route in numbered:
            body, names_of[number] = compile_pattern(route.pattern, group_prefix=f"r{number}_")
            sources.append(f"(?P<r{number}>{body})\\Z")
        # DOTALL: a percent-decoded newline in a {name:path} remainder is still part of it.
        self.regex = re.compile("|".join(sources), re.DOTALL)
        groups = self.regex.groupindex
        self.entries: dict[int, tuple[Route, tuple[tuple[str, int], ...]]] = {}
        for number, route in numbered:
            params = tuple((name, groups[f"r{number}_{name}"]) for name in names_of[number])
            self.entries[groups[f"r{number}"]] = (route, params)

    def match(self, path: str) -> Match | None:
        found = self.regex.match(path)
        if found is None:
            return None
        assert found.lastindex is not None
        route, groups = self.entries[found.lastindex]
        return Match(route, {name: found.group(index) or "" for name, index in groups})


class Router:
    """Matches ``(method, path)`` against a fixed list of routes. Built once (it compiles the table); a
    :meth:`match` is pure, allocation-light and safe to call from any thread or task at once."""

    __slots__ = ("_any_method", "_by_method", "_listing", "routes")

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        by_method: dict[str, list[tuple[int, Route]]] = {}
        for number, route in enumerate(self.routes):
            if route.method != route.method.upper():
                raise ValueError(f"route {route.shape}: write the method in capitals ({route.method.upper()})")
            by_method.setdefault(route.method, []).append((number, route))
        any_method = by_method.pop(ANY_METHOD, [])
        self._any_method = _MethodTable(any_method) if any_method else None
        self._by_method = {method: _MethodTable(numbered) for method, numbered in by_method.items()}
        self._listing = ", ".join(route.shape for route in self.routes if route.is_listed)

    def match(self, method: str, path: str) -> Match | MethodNotAllowed | NotFound:
        """The route for ``method`` (as the client sent it, case-sensitive per RFC 9110) and ``path`` (the
        ASGI ``path``). The method's own routes come first, then the any-method ones; a path that only
        other methods have is a :class:`MethodNotAllowed`, and anything else a :class:`NotFound`."""
        table = self._by_method.get(method)
        if table is not None:
            found = table.match(path)
            if found is not None:
                return found
        if self._any_method is not None:
            found = self._any_method.match(path)
            if found is not None:
                return found
        return self._miss(method, path)

    def _miss(self, method: str, path: str) -> MethodNotAllowed | NotFound:
        # The slow path, for errors only: try every other method's table to tell a 405 from a 404.
        routes = []
        for other, table in self._by_method.items():
            if other == method:
                continue
            found = table.match(path)
            if found is not None:
                routes.append(found.route)
        if routes:
            return MethodNotAllowed(tuple(routes), tuple(dict.fromkeys(route.method for route in routes)))
        return NotFound(self.not_found_message(method, path))

    def not_found_message(self, method: str, path: str) -> str:
        """``no route for GET /v2/modls/iris/infer; routes: GET /v2/health/live, ...``: what was asked (the
        path cut to 100 characters, the method to 16) and every listed route shape, in table order."""
        shown_path = path if len(path) <= _MAX_ECHOED_PATH_CHARS else path[:_MAX_ECHOED_PATH_CHARS] + "..."
        # A lone surrogate would make the JSON encoder raise (a 500 for a typo): show it escaped instead.
        shown_path = shown_path.encode("utf-8", "backslashreplace").decode("utf-8")
        shown_method = method[:_MAX_ECHOED_METHOD_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")
        return f"no route for {shown_method} {shown_path}; routes: {self._listing}"


_VERSION = "[/versions/{version}]"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", "server_live", Scope.HEALTH),
    Route("GET", "/v2/health/ready", "server_ready", Scope.HEALTH),
    Route("GET", "/v2", "server_metadata", Scope.METADATA),
    Route("GET", "/v2/openapi.json", "openapi", Scope.METADATA),
    # Infer first among the POST routes: the alternation tries them in order, and this is the hot path.
    Route("POST", f"/v2/models/{{model}}{_VERSION}/infer", "model_infer", Scope.INFERENCE),
    Route("GET", f"/v2/models/{{model}}{_VERSION}/ready", "model_ready", Scope.HEALTH),
    # Before model metadata: ``/v2/models/stats`` is every model's statistics, not a model named "stats".
    Route("GET", f"/v2/models[/{{model}}{_VERSION}]/stats", "model_statistics", Scope.STATISTICS),
    Route("GET", f"/v2/models/{{model}}{_VERSION}", "model_metadata", Scope.METADATA),
    Route("GET", f"/v2/models/{{model}}{_VERSION}/config", "model_config", Scope.MODEL_CONFIG),
    # Listing aliases is model-repository, not metadata: it shows which versions served under which name
    # and every past move (the deployment history), the same kind of knowledge as the repository index,
    # which Triton files under model-repository. A client allowed only metadata learns a model's tensors,
    # not how it has been rolled out.
    Route("GET", "/v2/models/{model}/aliases", "model_aliases", Scope.MODEL_REPOSITORY),
    # Moving an alias or rolling back changes what every client of that alias gets: admin, not a load.
    Route("POST", "/v2/models/{model}/aliases/{alias}", "set_alias", Scope.ADMIN),
    Route("POST", "/v2/models/{model}/rollback", "rollback", Scope.ADMIN),
    # Like aliases: reading a policy shows how a model is rolled out; changing it moves live traffic.
    Route("GET", "/v2/models/{model}/routing", "model_routing", Scope.MODEL_REPOSITORY),
    Route("PUT", "/v2/models/{model}/routing", "set_routing", Scope.ADMIN),
    Route("DELETE", "/v2/models/{model}/routing", "clear_routing", Scope.ADMIN),
    Route("POST", "/v2/repository/index", "repository_index", Scope.MODEL_REPOSITORY),
    Route("POST", "/v2/repository/models/{model}/load", "model_load", Scope.MODEL_REPOSITORY),
    Route("POST", "/v2/repository/models/{model}/unload", "model_unload", Scope.MODEL_REPOSITORY),
    Route("GET", "/metrics", "metrics", Scope.METRICS),
    # Alerts are rules over the same observations /metrics exports: whoever may scrape may see what fires.
    Route("GET", "/v2/alerts", "alerts", Scope.METRICS),
    Route("GET", "/v2/dashboard/summary", "dashboard_summary", Scope.DASHBOARD),
    Route("GET", "/dashboard[/{file:path}]", "dashboard_file", Scope.DASHBOARD),
    # Mounted only with shared_memory.enabled; the any-method routes below answer the rest (and all of it
    # when the extension is off). Triton's examples unregister CUDA regions before they start, so the CUDA
    # status and unregister succeed (there are none); only registering one is refused.
    Route("GET", "/v2/systemsharedmemory[/region/{region}]/status", "system_shm_status", Scope.SHARED_MEMORY),
    Route("POST", "/v2/systemsharedmemory/region/{region}/register", "system_shm_register", Scope.SHARED_MEMORY),
    Route("POST", "/v2/systemsharedmemory[/region/{region}]/unregister", "system_shm_unregister", Scope.SHARED_MEMORY),
    Route(
        "GET", "/v2/cudasharedmemory[/region/{region}]/status", "cuda_shm_status", Scope.SHARED_MEMORY, is_listed=False
    ),
    Route(
        "POST",
        "/v2/cudasharedmemory/region/{region}/register",
        "cuda_shm_register",
        Scope.SHARED_MEMORY,
        is_listed=False,
    ),
    Route(
        "POST",
        "/v2/cudasharedmemory[/region/{region}]/unregister",
        "cuda_shm_unregister",
        Scope.SHARED_MEMORY,
        is_listed=False,
    ),
    Route(ANY_METHOD, "/v2/systemsharedmemory[/{rest:path}]", "unsupported", Scope.SHARED_MEMORY, is_listed=False),
    Route(ANY_METHOD, "/v2/cudasharedmemory[/{rest:path}]", "unsupported", Scope.SHARED_MEMORY, is_listed=False),
    Route(ANY_METHOD, "/v2/trace[/{rest:path}]", "unsupported", Scope.TRACE, is_listed=False),
    Route(ANY_METHOD, "/v2/logging[/{rest:path}]", "unsupported", Scope.LOGGING, is_listed=False),
)
"""Every REST endpoint, in match order. The app mounts a subset (``/metrics`` only with metrics on,
``/v2/alerts`` only with operations); the module docstring's table mirrors this one row for row."""
