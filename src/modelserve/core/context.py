"""Who is asking, and by when: the request context every transport builds and every layer below reads.

The transports build one :class:`RequestContext` per request from what they alone can see (HTTP headers,
gRPC metadata and deadline, the in-process caller's arguments) and hand it down with the decoded request:
routing reads the headers it is configured to route on, scheduling reads the deadline, observability
records it in the prediction log. Nothing below the transport reads headers from anywhere else.

Only the headers named in ``server.context_headers`` are copied (names lower-cased, values cut to
:data:`MAX_HEADER_VALUE_CHARS`), so what a client sends beyond them costs nothing and reaches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["EMPTY_CONTEXT", "MAX_HEADER_VALUE_CHARS", "REQUEST_ID_HEADER", "RequestContext", "select_headers"]

REQUEST_ID_HEADER = "x-request-id"

# A routing key or an override flag is short; a longer value is cut rather than refused, and never
# grows what the prediction log writes per record.
MAX_HEADER_VALUE_CHARS = 256

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Facts about one request that are not part of its tensors.

    ``request_id``: the request's own id (the body's ``id``), else the ``x-request-id`` header, else "".
    ``headers``: the configured headers the request carried, lower-case names.
    ``principal`` / ``tenant``: who is calling, once the gateway authenticates callers ("" until then).
    ``deadline_ns``: absolute, on the server's monotonic :class:`~modelserve.core.clock.Clock`; None = no
    deadline. A request still waiting at its deadline fails with DEADLINE_EXCEEDED and never runs.
    ``transport``: ``http``, ``grpc`` or ``inprocess``.
    """

    request_id: str = ""
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    principal: str = ""
    tenant: str = ""
    deadline_ns: int | None = None
    transport: str = "inprocess"


EMPTY_CONTEXT = RequestContext()


def select_headers(pairs: Iterable[tuple[str, str]], wanted: frozenset[str]) -> Mapping[str, str]:
    """The ``wanted`` headers (lower-case names) among ``pairs``; the first occurrence of a name wins."""
    if not wanted:
        return _NO_HEADERS
    chosen: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in wanted and key not in chosen:
            chosen[key] = value[:MAX_HEADER_VALUE_CHARS]
    return chosen or _NO_HEADERS
