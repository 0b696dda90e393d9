"""The contract between the request pipeline and the filters that run on a route.

``pipeline`` drives one ``StreamFilters`` per request through the stream lifecycle in
Envoy's observable order (request headers → request body chunks → response headers →
response body chunks → done). ``edgegw.wasm`` implements it for proxy-wasm filters; the
pipeline never imports ``edgegw.wasm``. Control flow is by return values: ``None`` means
continue, a ``LocalReply`` ends the request with that response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgegw.model import Route
from edgegw.types import Headers


@dataclass(slots=True)
class LocalReply:
    """A response produced by the gateway or a filter instead of the backend."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""


@dataclass(slots=True)
class Exchange:
    """One request/response as filters see it. Filters mutate it in place.

    Header lists never carry pseudo-headers; the request ones live in ``method``,
    ``path`` (raw path with query), ``scheme`` and ``authority``.
    """

    route: Route
    method: str
    path: str
    scheme: str
    authority: str
    request_headers: Headers
    client: tuple[str, int]  # the peer address (after trusted-proxy resolution)
    server: tuple[str, int]  # the local address that accepted the request
    connection_id: int
    start_ns: int  # time.time_ns() at arrival
    trusted_peer: bool = False  # the peer is one of trusted_proxies (property edgegw.peer_trusted)
    status: int = 0  # set once response headers are known
    response_headers: Headers = field(default_factory=list)
    backend: str | None = None  # the backend chosen for proxying, when known
    # Extra values filters may read or set through properties (proxy_get/set_property).
    properties: dict[str, Any] = field(default_factory=dict)


class StreamFilters(Protocol):
    """The filters of one request. Every method may suspend (a filter waiting on an
    http_call); ``None`` means continue.

    The header phases return ``None`` when every filter went on without suspending, the
    common case, and otherwise an awaitable of the outcome: a request then makes no
    coroutine for them (``await pending if pending is not None else None``)."""

    # False when no filter needs the body: the pipeline streams it without calling in.
    @property
    def wants_request_body(self) -> bool: ...
    @property
    def wants_response_body(self) -> bool: ...

    def request_headers(
        self, ex: Exchange, end_of_stream: bool
    ) -> Awaitable[LocalReply | None] | None: ...

    async def request_body(
        self, ex: Exchange, chunk: bytes, end_of_stream: bool
    ) -> bytes | LocalReply:
        """Returns the bytes to forward now (``b""`` while filters buffer)."""
        ...

    def response_headers(
        self, ex: Exchange, end_of_stream: bool
    ) -> Awaitable[LocalReply | None] | None: ...

    async def response_body(
        self, ex: Exchange, chunk: bytes, end_of_stream: bool
    ) -> bytes | LocalReply: ...

    def done(self, ex: Exchange) -> None:
        """The request is over (sent, failed or cancelled): on_log, on_done, on_delete."""
        ...


class FilterChains(Protocol):
    """Builds the per-request filters of a route; one per worker process."""

    def start(self, ex: Exchange) -> StreamFilters | None:
        """``None`` when the route has no filters (the fast path)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class CallResponse:
    """The answer to an out-of-band call (proxy_http_call); status 0 = no answer."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    error: str = ""  # why there was no answer (connect failure, timeout, unknown cluster)
    timed_out: bool = False  # no answer in time (UpstreamTimeout or the call's deadline)


#: The cluster filters name in their http_calls to the store, answered in-process.
STORE_CLUSTER = "edgegw.store"
#: How filters reach backends by name (proxy_http_call): ``(cluster, method, path,
#: authority, headers, body, timeout) -> CallResponse``. The app provides it.
HttpCall = Callable[[str, str, str, str, Headers, bytes, float], Awaitable[CallResponse]]
