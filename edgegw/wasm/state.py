"""Per-request state shared by every filter of a route (header maps, body buffers, the
local reply, the pause/resume signal), and the header maps as hostcalls see them.

A filter sees the request headers with the pseudo-headers ``:authority``, ``:path``,
``:method``, ``:scheme`` first, and the response headers with ``:status`` first, as in
Envoy. The pseudo-headers are not stored in the lists: they are read from and written to
the ``Exchange`` fields when a hostcall names one, so a phase in which no filter asks for
them builds nothing (most filters only add, read or remove ordinary headers). A map holds
nothing but its ``Exchange``: the hostcalls make one when they need it.
"""

from __future__ import annotations

from edgegw.chain import Exchange
from edgegw.headers import check_field
from edgegw.types import Headers
from edgegw.wasm import _native


class StreamState(_native.State):
    """What the filters of one request share: ``ex``, ``local_reply`` (a filter replied),
    ``resume`` (set while a filter paused), ``failure`` (a filter failed in a callback
    outside the chain's own calls, e.g. its http_call response, while the stream waited:
    the chain applies on_error), ``encoding_local`` (a local reply is going through the
    response callbacks), the bodies and trailers (made when first used: most requests
    need none). The fields are in C (``_native.State``): a Chain makes one without a
    Python frame."""

    __slots__ = ()

    def body(self, request: bool) -> bytearray:
        """The request's or the response's body buffer."""
        if request:
            if self.request_body is None:
                self.request_body = bytearray()
            return self.request_body
        if self.response_body is None:
            self.response_body = bytearray()
        return self.response_body

    def trailers(self, request: bool) -> Headers:
        """The request's or the response's trailers (empty: the servers give none)."""
        if request:
            if self.request_trailers is None:
                self.request_trailers = []
            return self.request_trailers
        if self.response_trailers is None:
            self.response_trailers = []
        return self.response_trailers

    def wake(self) -> None:
        """Resume a paused stream (continue, local reply or close)."""
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)


class HeaderMap:
    """One header map as the hostcalls edit it: the stored ordinary headers (``headers``)
    plus the pseudo-headers of its kind. Pseudo-headers cannot be removed (Envoy rejects
    a request without them); removing one is ignored."""

    __slots__ = ()
    PSEUDO = 0  # how many pseudo-headers the map has

    @property
    def headers(self) -> Headers:
        raise NotImplementedError

    def _pseudo(self) -> Headers:
        return []

    def _set_pseudo(self, name: bytes, value: bytes) -> None:
        """Set pseudo-header ``name``; names the map does not have are ignored."""

    def size(self) -> int:
        return self.PSEUDO + len(self.headers)

    def pairs(self) -> Headers:
        return [*self._pseudo(), *self.headers]

    def get(self, key: bytes) -> bytes | None:
        # Envoy answers the first of repeated headers (all of them are in the pairs).
        for k, v in self._pseudo() if key[:1] == b":" and self.PSEUDO else self.headers:
            if k == key:
                return v
        return None

    # Every write a filter makes is checked (check_field raises InvalidHeader: the filter
    # traps and its on_error applies); the common ones are checked in C (native/headers.c).
    def add(self, key: bytes, value: bytes) -> None:
        check_field(key, value)
        if key[:1] == b":" and self.PSEUDO:
            self._set_pseudo(key, value)
        else:
            self.headers.append((key, value))

    def replace(self, key: bytes, value: bytes) -> None:
        check_field(key, value)
        if key[:1] == b":" and self.PSEUDO:
            self._set_pseudo(key, value)
            return
        headers = self.headers
        index = next((i for i, (k, _v) in enumerate(headers) if k == key), None)
        headers[:] = [(k, v) for k, v in headers if k != key]
        headers.insert(len(headers) if index is None else index, (key, value))

    def remove(self, key: bytes) -> None:
        self.headers[:] = [(k, v) for k, v in self.headers if k != key]

    def set_pairs(self, pairs: Headers) -> None:
        headers: Headers = []
        for key, value in pairs:
            check_field(key, value)
            if key[:1] == b":" and self.PSEUDO:
                self._set_pseudo(key, value)
            else:
                headers.append((key, value))
        self.headers[:] = headers


class RequestMap(HeaderMap):
    """The request headers of ``ex``; pseudo-headers in Envoy's order."""

    __slots__ = ("ex",)
    PSEUDO = _native.REQUEST_PSEUDO  # the four below

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex

    @property
    def headers(self) -> Headers:  # the pipeline forwards this very list
        return self.ex.request_headers

    def _pseudo(self) -> Headers:
        ex = self.ex
        return [
            (b":authority", ex.authority.encode("latin-1")),
            (b":path", ex.path.encode("latin-1")),
            (b":method", ex.method.encode("latin-1")),
            (b":scheme", ex.scheme.encode("latin-1")),
        ]

    def _set_pseudo(self, name: bytes, value: bytes) -> None:
        ex, text = self.ex, value.decode("latin-1")
        if name == b":path":
            ex.path = text
        elif name == b":method":
            ex.method = text
        elif name == b":authority":
            ex.authority = text
        elif name == b":scheme":
            ex.scheme = text


class ResponseMap(HeaderMap):
    """The response headers of ``ex`` (the pipeline may replace the list: read it
    through ``ex`` each time) with ``:status``."""

    __slots__ = ("ex",)
    PSEUDO = _native.RESPONSE_PSEUDO  # :status

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex

    @property
    def headers(self) -> Headers:
        return self.ex.response_headers

    def _pseudo(self) -> Headers:
        return [(b":status", str(self.ex.status).encode())]

    def _set_pseudo(self, name: bytes, value: bytes) -> None:
        if name == b":status" and value.isdigit():
            self.ex.status = int(value)


class ListMap(HeaderMap):
    """A map without pseudo-headers (trailers)."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    @property
    def headers(self) -> Headers:
        return self._headers


class CallMap(ListMap):
    """The headers of an http_call response, with a read-only ``:status``."""

    __slots__ = ("status",)
    PSEUDO = 1

    def __init__(self, headers: Headers, status: int) -> None:
        super().__init__(headers)
        self.status = status

    def _pseudo(self) -> Headers:
        return [(b":status", str(self.status).encode())]
