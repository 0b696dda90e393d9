"""Talking to backends: a keep-alive HTTP/1.1 connection pool per backend (``http1``).

Callers see ``UpstreamConnectError`` (502), ``UpstreamTimeout`` (504) and, from a
backend's circuit breakers, ``UpstreamOverloaded`` (503) from ``edgegw.errors``. A backend
with several endpoints (or retries, health checks, limits) is balanced by edgegw.balance,
which calls ``request`` with the chosen endpoint's ``pool`` for each try. Bodies stream
in both directions; only ``call`` (for filters' ``proxy_http_call`` and aggregation)
buffers, up to a limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol

from edgegw.balance import Balancer, client_context
from edgegw.chain import CallResponse, HttpCall
from edgegw.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamInvalidRequest,
    UpstreamTimeout,
)
from edgegw.http1 import Conn, Pool
from edgegw.model import Backend
from edgegw.observe import load_metrics, metrics
from edgegw.tracing import CURRENT
from edgegw.tracing.hooks import answered, failed, upstream_try
from edgegw.types import Headers

# A replayable request that died on a reused connection before any response byte is
# retried once on a new one: the backend closed an idle connection as we reused it
# (RFC 9112 §9.3.1 allows it for idempotent methods).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host"})
# ``outcome`` labels of edgegw_upstream_duration_seconds besides UpstreamError.outcome.
OK = "ok"
TIMEOUT = UpstreamTimeout.outcome  # the deadline of a buffered call (``call``)
CANCELLED = "cancelled"
ABORTED = "aborted"


class UpstreamResponse:
    """Status and headers of a backend response whose body is still to be read."""

    __slots__ = ("_conn", "_pool", "backend", "headers", "status")

    def __init__(self, status: int, headers: Headers, conn: Conn, pool: Pool) -> None:
        self.status = status
        self.headers = headers
        self.backend = pool.name
        self._conn: Conn | None = conn
        self._pool = pool

    def chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        """Body chunks with "this is the last one" when known (it saves the server a
        separate empty end-of-body message)."""
        assert self._conn is not None
        return _Chunks(self._conn)

    def release(self) -> None:
        """Give the connection back (kept alive only if the exchange completed)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)


class _Chunks:
    """``UpstreamResponse.chunks``: an iterator, not an async generator, because the event
    loop keeps every async generator in a WeakSet until it is finalized (sys asyncgen
    hooks): WeakSet additions and removals on every proxied request."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> tuple[bytes, bool]:
        conn = self._conn
        chunk = await conn.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk, conn.at_eof()


def _outcome(exc: BaseException) -> str | None:
    """The ``outcome`` label of a call that ended with ``exc`` (None: not timed)."""
    if isinstance(exc, UpstreamError):
        return exc.outcome
    if isinstance(exc, asyncio.CancelledError):  # the gateway stopped waiting (client gone)
        return CANCELLED
    if isinstance(exc, Exception):  # the request body failed (client gone mid-upload, too large)
        return ABORTED
    return None


class Upstream(Protocol):
    """Sends requests to the backends of one config."""

    async def request(
        self,
        backend: str,
        method: str,
        path: str,
        headers: Headers,
        body: AsyncIterable[bytes] | bytes | None,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send a request; returns once the response headers arrived. ``timeout``
        (default: the backend's) counts from the end of the request body. Raises
        ``UpstreamConnectError`` or ``UpstreamTimeout``."""
        ...

    def call(
        self,
        cluster: str,
        method: str,
        path: str,
        authority: str,
        headers: Headers,
        body: bytes,
        timeout: float,
    ) -> Awaitable[CallResponse]: ...

    async def aclose(self) -> None: ...


def _head(method: str, target: str, headers: Headers, pool: Pool, framing: bytes) -> bytes:
    # One join of the pieces (no formatted line per header); host first, as RFC 9110 §7.2
    # asks, in the slot kept for it.
    parts = [method.encode("latin-1"), b" ", target.encode("latin-1"), b" HTTP/1.1\r\nhost: "]
    parts += (pool.authority, b"\r\n")
    lines = 2
    for name, value in headers:
        if name in _FRAMING:
            if name == b"host":
                parts[4] = value
            continue  # the body given here decides the framing
        parts += (name, b": ", value, b"\r\n")
        lines += 1
    parts.append(framing)
    parts.append(b"\r\n")
    head = b"".join(parts)
    # A value with CR or LF would smuggle a second request, NUL is cut or refused by
    # backends (RFC 9110 §5.5). Filters' header edits are checked when made; this is the
    # last line for everything else (proxy_http_call headers, paths).
    lines_expected = lines + 1 + (1 if framing else 0)
    if head.count(b"\n") != lines_expected or head.count(b"\r") != lines_expected or b"\0" in head:
        raise UpstreamInvalidRequest(pool.name, "a header name or value holds CR, LF or NUL")
    return head


async def _send_body(
    conn: Conn, body: AsyncIterable[bytes], chunked: bool, progress: Callable[[], None]
) -> None:
    """Streams a request body (its own task, as the response may come before it ends)."""
    try:
        async for chunk in body:
            progress()
            if chunked:
                conn.write(b"%x\r\n" % len(chunk))
                conn.write(chunk)
                conn.write(b"\r\n")
            else:
                conn.write(chunk)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
        conn.sent = True
        progress()
    except Exception as exc:  # a broken connection, or the body's own failure (too large,
        conn.fail(exc)  # client gone): request() raises it unless the response came first


class HttpUpstream:
    """The production ``Upstream``: pools are created on first use inside the loop."""

    def __init__(
        self, backends: Mapping[str, Backend], extra_calls: Mapping[str, HttpCall] | None = None
    ) -> None:
        self._backends = backends
        self._pools: dict[str, Pool] = {}
        # Backends with endpoints, retries, health checks or limits (edgegw.balance).
        self._balanced = frozenset(n for n, b in backends.items() if b.balanced)
        self._balancers: dict[str, Balancer] = {}
        self._extra = dict(extra_calls or {})
        self._writers: set[asyncio.Task[None]] = set()

    def _pool(self, name: str) -> Pool:
        pool = self._pools.get(name)
        if pool is None:
            backend = self._backends[name]
            tls = sni = None
            if backend.tls is not None:
                tls, sni = client_context(backend.tls), backend.tls.sni
            pool = self._pools[name] = Pool(backend, tls=tls, sni=sni)
        return pool

    def start(self) -> None:
        """Make the balancers now (inside the loop), so that health checks and DNS
        resolution begin before the first request; else each begins with its first."""
        for name in self._balanced:
            self._balancer(name)

    def _balancer(self, name: str) -> Balancer:
        balancer = self._balancers.get(name)
        if balancer is None:
            balancer = self._balancers[name] = Balancer(self._backends[name], self.request)
        return balancer

    async def request(
        self,
        backend: str,
        method: str,
        path: str,
        headers: Headers,
        body: AsyncIterable[bytes] | bytes | None,
        timeout: float | None = None,
        pool: Pool | None = None,
        *,
        observe: bool = True,
    ) -> UpstreamResponse:
        """One try on ``pool`` when given (a retry: edgegw.balance chose the endpoint);
        else the one pool of a plain single-URL backend, or the endpoint the backend's
        balancer picks. A balanced request's first try runs here, in this coroutine (no
        await layers of the balancer's); the balancer takes over for retries."""
        member = balancer = None
        if pool is None:
            if backend in self._balanced:
                balancer = self._balancers.get(backend) or self._balancer(backend)
                member = balancer.first(headers, body)
                if member is None:  # DNS not answered yet, or a streamed body to buffer
                    return await balancer.request(method, path, headers, body, timeout)
                pool = member.pool
                observe = True  # each try of a balanced backend is timed (call() does not)
            else:
                pool = self._pools.get(backend) or self._pool(backend)
        seconds = timeout or pool.backend.timeout
        if balancer is not None and balancer.per_try is not None:
            seconds = min(seconds, balancer.per_try)
        target = pool.base_path + path
        streamed = body is not None and not isinstance(body, bytes)
        if body is None:
            framing = b"content-length: 0\r\n" if method in _BODY_METHODS else b""
        elif isinstance(body, bytes):
            framing = b"content-length: %d\r\n" % len(body)
        else:
            # The caller gives a Content-Length only for a body it checks has that size
            # (edgegw.pipeline); anything else goes chunked. The client's framing headers
            # are never copied (RFC 9112 §6; §11.2 request smuggling).
            length = next((v for n, v in headers if n == b"content-length"), None)
            framing = (
                b"content-length: %s\r\n" % length
                if length is not None and length.isdigit()
                else b"transfer-encoding: chunked\r\n"
            )
        retry = not streamed and method in _IDEMPOTENT
        # Every call is timed, failed ones too, labelled by how it ended (by type:
        # UpstreamError.outcome).
        started = time.perf_counter()
        span = None
        if CURRENT.get() is not None:  # tracing on, in a request: a span for this try
            scheme = "http" if pool.ssl is None else "https"
            span, try_headers = upstream_try(backend, method, scheme, pool.host, pool.port,
                                             target, headers)  # fmt: skip
        else:
            try_headers = headers
        try:
            head = _head(method, target, try_headers, pool, framing)
            while True:
                # An idle connection is taken without a coroutine of Pool.acquire's.
                conn, reused = pool.take() or await pool.acquire(seconds)
                pool.watch(conn, seconds)
                try:
                    if body is None or isinstance(body, bytes):
                        response = conn.start(method == "HEAD")
                        conn.write(head + body if body else head)
                        conn.sent = True
                        status, resp_headers = await response
                    else:
                        status, resp_headers = await self._stream(conn, method, head, body, seconds)
                except UpstreamConnectError:
                    conn.abort()
                    if retry and reused and not conn.got_data:
                        retry = False
                        continue
                    raise
                except BaseException:
                    conn.abort()
                    raise
                finally:
                    pool.unwatch(conn)
                break
        except BaseException as exc:
            outcome = _outcome(exc)
            if outcome is not None:
                if observe:
                    metrics.observe_upstream(backend, outcome, time.perf_counter() - started)
                if span is not None:
                    failed(span, exc)
            if member is None or balancer is None:
                raise
            balancer.abandoned(member, exc)
            if not isinstance(exc, UpstreamError):
                raise
            deadline = balancer.retry_deadline(exc, method, timeout, started)
            if deadline is None:
                raise
        else:
            if observe:
                metrics.observe_upstream(backend, OK, time.perf_counter() - started)
                load_metrics.upstream_response(backend, status)
            if span is not None:
                answered(span, status)
            resp = UpstreamResponse(status, resp_headers, conn, pool)
            if member is None or balancer is None:
                return resp
            # Below 500 the balancer has nothing to do unless the member had failed (its
            # error run ends); retried statuses are 5xx (edgegw/config/backends.py).
            if (status < 500 and not member.errors) or not balancer.answered(member, status):
                return resp
            deadline = balancer.retry_deadline(status, method, timeout, started)
            if deadline is None:
                return resp
            resp.release()  # its body never reached the client
        assert body is None or isinstance(body, bytes)  # Balancer.first: streamed ones go there
        return await balancer.resume(member, deadline, method, path, headers, body, timeout)

    async def _stream(
        self, conn: Conn, method: str, head: bytes, body: AsyncIterable[bytes], seconds: float
    ) -> tuple[int, Headers]:
        """An exchange whose request body streams (a buffered one is written at once, in
        ``request``)."""
        response = conn.start(method == "HEAD")
        conn.write(head)
        loop = conn.loop
        pool = conn.pool

        # Like Envoy's route timeout, the deadline counts from the end of the request body,
        # so a long upload to a healthy backend is not cut; every chunk pushes it back,
        # so a stalled upload still fails after ``seconds`` without progress.
        def progress() -> None:
            if not response.done():
                pool.watch(conn, seconds)

        chunked = b"transfer-encoding: chunked" in head
        writer = conn.writer = loop.create_task(_send_body(conn, body, chunked, progress))
        self._writers.add(writer)
        writer.add_done_callback(self._writers.discard)
        try:
            return await response
        except BaseException:
            writer.cancel()
            raise

    def call(
        self,
        cluster: str,
        method: str,
        path: str,
        authority: str,
        headers: Headers,
        body: bytes,
        timeout: float,
        max_body: int = 16 * 1024 * 1024,
    ) -> Awaitable[CallResponse]:
        """A buffered request to backend ``cluster`` (or an in-process extra cluster,
        whose own awaitable is returned as it is: the store's is a ``Promise`` that a
        filter's call waits on without a task, edgegw/promise.py)."""
        extra = self._extra.get(cluster)
        if extra is not None:
            return extra(cluster, method, path, authority, headers, body, timeout)
        return self._call(cluster, method, path, authority, headers, body, timeout, max_body)

    async def _call(
        self,
        cluster: str,
        method: str,
        path: str,
        authority: str,
        headers: Headers,
        body: bytes,
        timeout: float,
        max_body: int,
    ) -> CallResponse:
        if cluster not in self._backends:
            return CallResponse(0, error=f"unknown cluster '{cluster}'")
        if authority:
            headers = [(n, v) for n, v in headers if n != b"host"]
            headers.append((b"host", authority.encode()))
        # Timed here, not in request(): this call's own deadline surfaces as TimeoutError
        # out here, as CancelledError in there.
        started = time.perf_counter()
        # A balanced backend's tries are timed one by one (edgegw.balance), not here too.
        timed = cluster in self._balanced
        try:
            async with asyncio.timeout(timeout):
                resp = await self.request(
                    cluster, method, path, headers, body or None, timeout, observe=False
                )
                if not timed:
                    metrics.observe_upstream(cluster, OK, time.perf_counter() - started)
                timed = True  # once headers came, a failure reading the body is not counted
                try:
                    data = bytearray()
                    async for chunk, _last in resp.chunks():
                        data += chunk
                        if len(data) > max_body:
                            return CallResponse(0, error=f"response body over {max_body} bytes")
                finally:
                    resp.release()
        except TimeoutError:
            if not timed:
                metrics.observe_upstream(cluster, TIMEOUT, time.perf_counter() - started)
            return CallResponse(0, error="timeout", timed_out=True)
        except UpstreamError as exc:
            if not timed:
                metrics.observe_upstream(cluster, exc.outcome, time.perf_counter() - started)
            if isinstance(exc, UpstreamTimeout):
                return CallResponse(0, error=f"timeout: {exc.detail}", timed_out=True)
            return CallResponse(0, error=exc.detail)
        except asyncio.CancelledError:
            if not timed:
                metrics.observe_upstream(cluster, CANCELLED, time.perf_counter() - started)
            raise
        return CallResponse(resp.status, resp.headers, bytes(data))

    async def aclose(self) -> None:
        for writer in list(self._writers):
            writer.cancel()
        balancers, self._balancers = self._balancers, {}
        for balancer in balancers.values():
            await balancer.aclose()
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
