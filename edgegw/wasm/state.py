"""Per-request state shared by every filter of a route: header maps, body buffers, the
local reply and the pause/resume signal. Hostcalls read and write it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from edgegw.chain import CallResponse, Exchange, LocalReply
from edgegw.errors import WasmError
from edgegw.types import Headers


@dataclass(slots=True)
class StreamState:
    ex: Exchange
    request_map: Headers | None = None  # pseudo-headers first, as Envoy shows them
    response_map: Headers | None = None
    request_trailers: Headers = field(default_factory=list)
    response_trailers: Headers = field(default_factory=list)
    request_body: bytearray = field(default_factory=bytearray)
    response_body: bytearray = field(default_factory=bytearray)
    local_reply: LocalReply | None = None
    resume: asyncio.Future[None] | None = None  # set while a filter paused the stream
    call_response: CallResponse | None = None  # readable during on_http_call_response
    done: bool = False
    # (plugin, error): a filter failed in a callback outside the chain's own calls (its
    # http_call response) while the stream waited; the chain applies its on_error.
    failure: tuple[object, WasmError] | None = None
    encoding_local: bool = False  # a local reply is going through the response callbacks

    def open_request_map(self) -> Headers:
        if self.request_map is None:
            ex = self.ex
            self.request_map = [
                (b":authority", ex.authority.encode("latin-1")),
                (b":path", ex.path.encode("latin-1")),
                (b":method", ex.method.encode("latin-1")),
                (b":scheme", ex.scheme.encode("latin-1")),
                *ex.request_headers,
            ]
        return self.request_map

    def close_request_map(self) -> None:
        """Write filter edits back to the exchange (pseudo-headers to their fields)."""
        if self.request_map is None:
            return
        ex = self.ex
        headers: Headers = []
        for name, value in self.request_map:
            if name[:1] != b":":
                headers.append((name, value))
            elif name == b":path":
                ex.path = value.decode("latin-1")
            elif name == b":method":
                ex.method = value.decode("latin-1")
            elif name == b":authority":
                ex.authority = value.decode("latin-1")
            elif name == b":scheme":
                ex.scheme = value.decode("latin-1")
        ex.request_headers[:] = headers
        self.request_map = None

    def open_response_map(self) -> Headers:
        if self.response_map is None:
            status = (b":status", str(self.ex.status).encode())
            self.response_map = [status, *self.ex.response_headers]
        return self.response_map

    def close_response_map(self) -> None:
        if self.response_map is None:
            return
        headers: Headers = []
        for name, value in self.response_map:
            if name == b":status":
                if value.isdigit():
                    self.ex.status = int(value)
            elif name[:1] != b":":
                headers.append((name, value))
        self.ex.response_headers = headers
        self.response_map = None

    def wake(self) -> None:
        """Resume a paused stream (continue, local reply or close)."""
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)
