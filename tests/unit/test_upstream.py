"""HttpUpstream against real loopback backends: errors, deadlines, streaming, pools,
and the buffered ``call`` used by filters and aggregation."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from edgegw.chain import CallResponse
from edgegw.errors import UpstreamConnectError, UpstreamTimeout
from edgegw.model import Backend
from edgegw.types import Headers
from edgegw.upstream import HttpUpstream
from tests.conftest import LoopbackBackend, LoopThread, free_port

MakeBackend = Callable[..., LoopbackBackend]
GZIPPED = gzip.compress(b'{"hello": "world"}')


@dataclass
class Special:
    """A backend for what the echo backend cannot do (runs in its own loop thread)."""

    loop: LoopThread
    url: str
    release: asyncio.Event  # set (thread-safely) to let /two-chunks finish
    active: int = 0
    peak: int = 0
    received: list[int] = field(default_factory=list)

    def let_go(self) -> None:
        self.loop.loop.call_soon_threadsafe(self.release.set)


@pytest.fixture
def special() -> Iterator[Special]:
    lt = LoopThread()

    async def make_event() -> asyncio.Event:
        return asyncio.Event()

    state = Special(lt, "", lt.run(make_event()))

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=GZIPPED, headers={"content-encoding": "gzip"})

    async def two_chunks(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first")
        await state.release.wait()  # the rest only after the client saw the first chunk
        await resp.write(b"second")
        await resp.write_eof()
        return resp

    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(30)  # never reads the request body
        return web.Response()

    async def sink(request: web.Request) -> web.Response:
        data = await request.read()
        state.received.append(len(data))
        return web.Response(text=str(len(data)))

    async def slow(request: web.Request) -> web.Response:
        state.active += 1
        state.peak = max(state.peak, state.active)
        await asyncio.sleep(0.2)
        state.active -= 1
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/two-chunks", two_chunks)
    app.router.add_post("/stall", stall)
    app.router.add_post("/sink", sink)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    state.url = f"http://127.0.0.1:{lt.run(start())}"
    yield state
    state.let_go()
    lt.run(runner.cleanup())
    lt.close()


def upstream(**urls: str | Backend) -> HttpUpstream:
    backends = {
        name: u if isinstance(u, Backend) else Backend(name=name, url=u, timeout=2)
        for name, u in urls.items()
    }
    return HttpUpstream(backends)


async def read_all(up: HttpUpstream, backend: str, path: str) -> tuple[int, Headers, bytes]:
    resp = await up.request(backend, "GET", path, [], None)
    try:
        body = b"".join([chunk async for chunk, _ in resp.chunks()])
    finally:
        resp.release()
    return resp.status, resp.headers, body


async def test_refused_is_a_connect_error() -> None:
    up = upstream(dead=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(UpstreamConnectError) as info:
            await up.request("dead", "GET", "/", [], None)
    finally:
        await up.aclose()
    assert (info.value.status, info.value.backend) == (502, "dead")
    assert "cannot connect" in info.value.detail


async def test_connect_timeout_is_a_timeout(full_listener: int) -> None:
    backend = Backend("hung", f"http://127.0.0.1:{full_listener}", timeout=5, connect_timeout=0.2)
    up = upstream(hung=backend)
    try:
        with pytest.raises(UpstreamTimeout) as info:
            await up.request("hung", "GET", "/", [], None)
    finally:
        await up.aclose()
    assert (info.value.status, info.value.backend) == (504, "hung")
    assert info.value.detail == "no connection within 0.2s"


async def test_response_timeout_is_a_timeout(backend_factory: MakeBackend) -> None:
    slow = backend_factory(delay=3)
    up = upstream(slow=Backend("slow", slow.url, timeout=0.3))
    try:
        with pytest.raises(UpstreamTimeout) as info:
            await up.request("slow", "GET", "/", [], None)
    finally:
        await up.aclose()
    assert info.value.detail == "no response within 0.3s"


async def test_upload_longer_than_the_timeout_passes(special: Special) -> None:
    """The deadline counts from the end of the request body (Envoy's route timeout)."""
    up = upstream(s=Backend("s", special.url, timeout=1))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):  # about 2 s in all, each gap well within the 1 s deadline
            yield b"x" * 1000
            await asyncio.sleep(0.25)

    try:
        resp = await up.request("s", "POST", "/sink", [], body())
        resp.release()
    finally:
        await up.aclose()
    assert resp.status == 200
    assert special.received == [8000]


async def test_backend_that_stops_reading_the_upload_times_out(special: Special) -> None:
    up = upstream(s=Backend("s", special.url, timeout=0.5))
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        block = b"x" * 65536
        for _ in range(4096):  # 256 MiB at most; loopback buffers fill after a few MiB
            sent += len(block)
            yield block

    try:
        with pytest.raises(UpstreamTimeout):
            await up.request("s", "POST", "/stall", [], body())
    finally:
        await up.aclose()
    assert sent < 256 * 1024 * 1024


async def test_response_body_streams_before_the_backend_finished(special: Special) -> None:
    up = upstream(s=special.url)
    try:
        resp = await up.request("s", "GET", "/two-chunks", [], None)
        chunks = resp.chunks()
        # /two-chunks holds its second chunk until we saw the first: a buffering upstream
        # would wait here forever.
        first, _ = await asyncio.wait_for(anext(chunks), 10)
        special.let_go()
        rest = b"".join([c async for c, _ in chunks])
        resp.release()
    finally:
        await up.aclose()
    assert (first, rest) == (b"first", b"second")


async def test_no_redirects_no_decompression_no_cookie_jar(
    backend_factory: MakeBackend, special: Special
) -> None:
    echo = backend_factory(
        status=302, extra_headers=[("Location", "/elsewhere"), ("Set-Cookie", "sid=1")]
    )
    up = upstream(echo=echo.url, s=special.url)
    try:
        status, headers, _ = await read_all(up, "echo", "/login")
        assert status == 302  # passed on, not followed
        assert (b"location", b"/elsewhere") in headers
        assert (b"set-cookie", b"sid=1") in headers
        await read_all(up, "echo", "/next")
        status, headers, body = await read_all(up, "s", "/gzip")
    finally:
        await up.aclose()
    assert [r["path"] for r in echo.requests] == ["/login", "/next"]
    assert "cookie" not in dict(echo.requests[1]["headers"])  # no jar between requests
    assert (b"content-encoding", b"gzip") in headers
    assert body == GZIPPED  # bytes as the backend sent them


async def test_pool_respects_max_connections(special: Special) -> None:
    up = upstream(s=Backend("s", special.url, timeout=10, max_connections=2))
    try:
        results = await asyncio.gather(*(read_all(up, "s", "/slow") for _ in range(6)))
    finally:
        await up.aclose()
    assert [body for _, _, body in results] == [b"ok"] * 6
    assert special.peak == 2


async def test_call_buffers_and_reports_failures_as_status_0(
    backend_factory: MakeBackend,
) -> None:
    echo = backend_factory(name="echo")
    slow = backend_factory(delay=3)
    seen: list[tuple[str, str]] = []

    async def local(
        cluster: str, method: str, path: str, authority: str, h: Headers, b: bytes, t: float
    ) -> CallResponse:
        seen.append((cluster, path))
        return CallResponse(200, [(b"x-local", b"1")], b"local")

    up = HttpUpstream(
        {
            "echo": Backend("echo", echo.url),
            "slow": Backend("slow", slow.url),
            "dead": Backend("dead", f"http://127.0.0.1:{free_port()}"),
        },
        {"edgegw.test": local},
    )
    try:
        ok = await up.call("echo", "POST", "/c?x=1", "api.internal", [(b"a", b"1")], b"hi", 2)
        unknown = await up.call("nope", "GET", "/", "", [], b"", 1)
        misleading = await up.call("timeout-svc", "GET", "/", "", [], b"", 1)
        dead = await up.call("dead", "GET", "/", "", [], b"", 1)
        timeout = await up.call("slow", "GET", "/", "", [], b"", 0.3)
        extra = await up.call("edgegw.test", "GET", "/v1/x", "", [], b"", 1)
    finally:
        await up.aclose()
    assert ok.status == 200
    sent = echo.requests[0]
    assert (sent["method"], sent["raw_path"], sent["body"]) == ("POST", "/c?x=1", "hi")
    assert dict(sent["headers"])["host"] == "api.internal"  # :authority becomes Host
    assert (unknown.status, unknown.error) == (0, "unknown cluster 'nope'")
    assert dead.status == 0 and "cannot connect" in dead.error
    assert timeout.status == 0 and "timeout" in timeout.error
    # Classified when it happened (UpstreamTimeout, the deadline), not from the text.
    assert timeout.timed_out and not dead.timed_out and not unknown.timed_out
    assert misleading.error == "unknown cluster 'timeout-svc'" and not misleading.timed_out
    assert (extra.status, extra.body, seen) == (200, b"local", [("edgegw.test", "/v1/x")])


async def test_buffered_calls_are_timed_by_outcome(backend_factory: MakeBackend) -> None:
    from prometheus_client import REGISTRY

    from edgegw.observe import metrics

    def count(backend: str, outcome: str) -> float:
        labels = {"backend": backend, "outcome": outcome}
        value = REGISTRY.get_sample_value("edgegw_upstream_duration_seconds_count", labels)
        return value or 0.0

    slow = backend_factory(delay=2.0)
    up = upstream(t_calls=slow.url)
    metrics.flush()
    before = {o: count("t_calls", o) for o in ("timeout", "invalid_request", "ok")}
    try:
        late = await up.call("t_calls", "GET", "/", "", [], b"", 0.1)
        bad = await up.call("t_calls", "GET", "/", "", [(b"x-a", b"1\r\nx-b: 2")], b"", 1)
    finally:
        await up.aclose()
    assert (late.status, late.error, bad.status) == (0, "timeout", 0)
    metrics.flush()
    after = {o: count("t_calls", o) for o in before}
    want = {"timeout": 1.0, "invalid_request": 1.0, "ok": 0.0}
    assert {o: after[o] - before[o] for o in after} == want
