"""The HTTP/1.1 wire of the upstream client against a scripted raw-TCP backend: framing
both ways, keep-alive reuse, the stale-connection retry, informational and bodiless
responses, header injection, idle expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from edgegw import http1
from edgegw.errors import UpstreamConnectError
from edgegw.model import Backend
from edgegw.types import Headers
from edgegw.upstream import HttpUpstream

# Answers one request: gets (request head, request body) and the stream writer; returns
# False to close the connection afterwards.
Script = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]


class RawBackend:
    """A loopback server reading whole requests (Content-Length or chunked) and answering
    with what the script writes: exact control over the bytes on the wire."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.closed = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                body = await self._body(head, reader)
                self.requests.append((head, body))
                if not await self.script(head, body, writer):
                    return
                await writer.drain()
        finally:
            self.closed += 1
            self.writers.discard(writer)
            writer.close()

    @staticmethod
    async def _body(head: bytes, reader: asyncio.StreamReader) -> bytes:
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            out = b""
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                out += await reader.readexactly(size + 2)
                out = out[:-2]
            await reader.readuntil(b"\r\n")
            return out
        for line in lower.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                return await reader.readexactly(int(line.split(b":")[1]))
        return b""

    async def aclose(self) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.close()  # the handlers then see end of input and return
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Script], Awaitable[HttpUpstream]]]:
    made: list[tuple[RawBackend, HttpUpstream]] = []

    async def make(script: Script) -> HttpUpstream:
        backend = RawBackend(script)
        url = await backend.start()
        up = HttpUpstream({"b": Backend(name="b", url=url + "/base", timeout=2)})
        up.raw = backend  # type: ignore[attr-defined]
        made.append((backend, up))
        return up

    yield make
    for backend, up in made:
        await up.aclose()
        await backend.aclose()


def ok(body: bytes = b"ok", extra: bytes = b"") -> Script:
    async def script(head: bytes, req_body: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body))
        return True

    return script


async def fetch(
    up: HttpUpstream, method: str = "GET", headers: Headers | None = None, body: object = None
) -> tuple[int, Headers, bytes]:
    resp = await up.request("b", method, "/p?q=1", headers or [], body)  # type: ignore[arg-type]
    try:
        data = b"".join([chunk async for chunk, _ in resp.chunks()])
    finally:
        resp.release()
    return resp.status, resp.headers, data


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_keep_alive_reuses_one_connection_and_frames_requests(raw: Callable) -> None:
    up = await raw(ok())
    for _ in range(3):
        assert (await fetch(up))[2] == b"ok"
    await fetch(up, "POST", [(b"content-length", b"999")], b"abc")  # bytes: length is ours
    await fetch(up, "POST", [], stream(b"ab", b"cd"))  # no length: chunked
    await fetch(up, "PUT", [(b"content-length", b"4")], stream(b"ab", b"cd"))
    await fetch(up, "POST")  # no body: an explicit zero length
    backend: RawBackend = up.raw  # type: ignore[attr-defined]
    assert backend.connections == 1
    heads = [h for h, _ in backend.requests]
    assert heads[0].startswith(b"GET /base/p?q=1 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"content-length" not in heads[0].lower()
    assert b"content-length: 3\r\n" in heads[3] and b"999" not in heads[3]
    assert b"transfer-encoding: chunked\r\n" in heads[4]
    assert b"content-length: 4\r\n" in heads[5] and b"chunked" not in heads[5]
    assert b"content-length: 0\r\n" in heads[6]
    assert [b for _, b in backend.requests[3:6]] == [b"abc", b"abcd", b"abcd"]


async def test_client_host_is_sent_when_given(raw: Callable) -> None:
    up = await raw(ok())
    await fetch(up, headers=[(b"x-a", b"1"), (b"host", b"shop.example")])
    head = up.raw.requests[0][0]  # type: ignore[attr-defined]
    assert head.split(b"\r\n")[1:3] == [b"host: shop.example", b"x-a: 1"]


async def test_response_framings(raw: Callable) -> None:
    answers = iter(
        [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: t\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",  # to HEAD: no body follows
            b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\nuntil close",
        ]
    )

    async def script(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        answer = next(answers)
        w.write(answer)
        return b"until close" not in answer

    up = await raw(script)
    assert (await fetch(up))[::2] == (200, b"hi")
    status, headers, body = await fetch(up)
    assert (status, body) == (200, b"abcde")
    assert b"x-trailer" not in [n for n, _ in headers]  # a trailer is not a header
    assert (await fetch(up))[::2] == (204, b"")
    assert (await fetch(up, "HEAD"))[::2] == (200, b"")
    status, headers, body = await fetch(up)
    assert (status, body) == (200, b"until close")
    assert [v for n, v in headers if n == b"set-cookie"] == [b"a=1", b"b=2"]


async def test_stale_connection_retried_once_for_idempotent_requests_only(
    raw: Callable,
) -> None:
    # The backend answers the first request on each connection and drops the second
    # unanswered: what a backend closing an idle connection as we reuse it looks like.
    async def script(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        if first.setdefault(w, True):
            first[w] = False
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1")
            return True
        return False

    first: dict[asyncio.StreamWriter, bool] = {}
    up = await raw(script)
    await fetch(up)
    assert (await fetch(up))[2] == b"1"  # retried on a second connection
    with pytest.raises(UpstreamConnectError, match="closed"):
        await fetch(up, "POST", body=b"x")  # not idempotent: the backend may have acted
    assert up.raw.connections == 2  # type: ignore[attr-defined]


async def test_header_with_cr_or_lf_is_refused(raw: Callable) -> None:
    up = await raw(ok())
    for bad in ([(b"x-a", b"1\r\nx-b: 2")], [(b"x-a\nx", b"1")]):
        with pytest.raises(UpstreamConnectError, match="CR, LF or NUL"):
            await fetch(up, headers=bad)
    assert up.raw.requests == []  # type: ignore[attr-defined]


async def test_malformed_response_is_a_connect_error(raw: Callable) -> None:
    async def script(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 abc\r\n\r\n")
        return True

    up = await raw(script)
    with pytest.raises(UpstreamConnectError, match="malformed response"):
        await fetch(up)


async def test_idle_connections_expire(raw: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "IDLE_TIMEOUT", 0.05)
    up = await raw(ok())
    await fetch(up)
    backend: RawBackend = up.raw  # type: ignore[attr-defined]
    for _ in range(50):
        if backend.closed:
            break
        await asyncio.sleep(0.02)
    assert backend.closed == 1
    await fetch(up)
    assert backend.connections == 2


async def test_unfinished_response_closes_rather_than_reuses(raw: Callable) -> None:
    async def script(head: bytes, body: bytes, w: asyncio.StreamWriter) -> bool:
        if len(backend.requests) == 1:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf.")  # 5 of 10
        else:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nwhole")
        return True

    up = await raw(script)
    backend: RawBackend = up.raw  # type: ignore[attr-defined]
    resp = await up.request("b", "GET", "/", [], None)
    resp.release()  # mid-body: the connection cannot carry another request
    assert (await fetch(up))[2] == b"whole"
    assert backend.connections == 2
