"""The wire under ``upstream``: HTTP/1.1 keep-alive connections to one backend.

A connection is an asyncio ``Protocol`` parsing with ``httptools`` (llhttp, the parser of
Node.js): no per-request objects beyond one future and a header list. docs/upstream.md has
the measurements that made this replace aiohttp's client. httptools exceptions stop here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

from edgegw.errors import (
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from edgegw.model import Backend
from edgegw.observe import load_metrics
from edgegw.types import Headers

_READ_HIGH = 256 * 1024  # response bytes buffered before the socket stops being read
_READ_LOW = 64 * 1024
IDLE_TIMEOUT = 30.0  # an idle pooled connection is closed after this (seconds)
# Response deadlines are checked this often rather than each having its own timer: a
# uvloop timer per request (asyncio.timeout) cost more than the rest of the exchange.
DEADLINE_TICK = 0.02
# Response fields that frame the body (RFC 9112 §6.3); without one it ends at close.
_FRAMED_BY = frozenset({b"content-length", b"transfer-encoding"})


class Conn(asyncio.Protocol):
    """One connection. An exchange: ``start()``, write the request, await ``head``,
    ``read()`` the body; the pool then keeps the connection if ``reusable()``."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.head: asyncio.Future[tuple[int, Headers]] | None = None
        self.headers: Headers = []
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False  # the response message ended
        self.keep_alive = False  # the backend lets the connection carry another request
        self.sent = False  # the request ended (body included)
        self.writer: asyncio.Task[None] | None = None  # streams the request body
        self.error: BaseException | None = None
        self.got_data = False
        self.until_close = False  # body delimited by the connection closing (RFC 9112 §6.3)
        self.framed = False  # the response head has Content-Length or Transfer-Encoding
        self._in_head = False  # fields reported now belong to the response head
        self.is_head = False
        self._informational = False
        self._extra = False  # the backend sent bytes past the end of the response
        self._body_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False

    # -- exchange (called by upstream) --------------------------------------------------
    def start(self, is_head: bool) -> asyncio.Future[tuple[int, Headers]]:
        self._reset()
        self.is_head = is_head
        self._in_head = True
        self.head = self.loop.create_future()
        return self.head

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamReset(self.pool.name, "backend closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            self._write_waiter = self.loop.create_future()
            await self._write_waiter
        if self.closed:
            raise UpstreamReset(self.pool.name, "backend closed the connection")

    async def read(self) -> bytes:
        """The next buffered body chunk; b"" once the body ended."""
        while not self.body:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            self._body_waiter = self.loop.create_future()
            await self._body_waiter
        chunk = self.body.popleft()
        self.buffered -= len(chunk)
        if self._read_paused and self.buffered < _READ_LOW and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return chunk

    def at_eof(self) -> bool:
        return self.complete and not self.body

    def reusable(self) -> bool:
        return (
            self.complete
            and self.sent
            and self.error is None
            and not self.closed
            and not self.is_head
            and not self.until_close
            and self.keep_alive
        )

    def fail(self, exc: BaseException) -> None:
        """End the exchange with ``exc`` (the request body failed, or a deadline)."""
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved: whoever awaits head sees it anyway
        self.abort()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            # Closed from now on, not only once connection_lost runs: the pool must not
            # hand out (or take back) a connection that is going away.
            self.closed = True
            self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.head is None or self.complete:  # nothing asked: a closing notice or junk
            self.abort()
            return
        self.got_data = True
        try:
            self.parser.feed_data(data)
            if self.complete and self._extra:
                # Bytes after a complete response answer no request of ours: kept, they
                # would be read as the next request's response (RFC 9112 §9.3: a client
                # must not reuse a connection it cannot parse in step).
                self._broken(UpstreamProtocolError(self.pool.name, "bytes after the response"))
        except httptools.HttpParserUpgrade:
            self._broken(UpstreamProtocolError(self.pool.name, "backend switched protocols"))
        except httptools.HttpParserError as exc:
            self._broken(UpstreamProtocolError(self.pool.name, f"malformed response: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        if self.head is not None and not self.complete:
            if self.head.done() and self.until_close and exc is None:
                self._message_done()
            else:
                where = "response body broken" if self.head.done() else "connection closed"
                detail = f"{where}: {exc}" if exc else f"{where} by the backend"
                self._broken(UpstreamReset(self.pool.name, detail))
        self._wake_writer()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # a second message in the bytes of this exchange
            self._extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp reports a chunked body's trailer fields here too: once the head went out
        # they are trailers, which edgegw does not forward (docs/upstream.md). A flag, not
        # head.done(): a call less per field (fields of a failed head land in a dead list).
        if self._in_head:
            name = name.lower()
            if name in _FRAMED_BY:  # noted here: no second pass over the head for it
                self.framed = True
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: another head follows (RFC 9110 §15.2)
            self._informational = True
            self.headers = []
            self.framed = False
            return
        assert self.head is not None
        self._in_head = False
        self.until_close = not self.framed and status not in (204, 304) and not self.is_head
        if not self.head.done():
            self.head.set_result((status, self.headers))
        if self.is_head:  # llhttp cannot be told the request was HEAD: no body follows
            self._message_done()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _READ_HIGH and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._message_done()

    # -- internals ---------------------------------------------------------------------
    def _message_done(self) -> None:
        # Asked now: once the message is complete llhttp resets for the next one.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake_reader()

    def _broken(self, exc: BaseException) -> None:
        self.error = exc  # for a reader of the body, which fail() leaves alone
        self._wake_reader()
        self.fail(exc)

    def _wake_reader(self) -> None:
        waiter, self._body_waiter = self._body_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Active(Protocol):
    active: int  # requests in flight


class Counted(Active, Protocol):
    """A balanced endpoint address (edgegw.balance.members.Member): its requests and its
    balancer's are counted in flight until the response is released."""

    @property
    def balancer(self) -> Active: ...


class Pool:
    """At most ``backend.max_connections`` connections to one backend, the idle ones
    reused most-recent first; waiting for a free one counts against the caller's deadline."""

    def __init__(
        self,
        backend: Backend,
        address: str | None = None,
        tls: ssl.SSLContext | None = None,
        sni: str | None = None,
    ) -> None:
        """``address``: connect there instead of the URL's host (a resolved endpoint
        address, edgegw.balance); ``tls``/``sni``: the context and server name for an
        https URL (default: the system's CAs and the URL's host)."""
        self.name = backend.name
        self.backend = backend
        self.loop = asyncio.get_running_loop()
        url = urlsplit(backend.url)
        tls_url = url.scheme == "https"
        self.host = address or url.hostname or "127.0.0.1"
        self.port = url.port or (443 if tls_url else 80)
        self.authority = url.netloc.rsplit("@", 1)[-1].encode("latin-1")
        self.base_path = url.path.rstrip("/")
        self.ssl = (tls or ssl.create_default_context()) if tls_url else None
        self.sni = (sni or url.hostname) if tls_url else None
        self.member: Counted | None = None  # the balanced endpoint address it serves
        self.idle: list[Conn] = []
        self.conns: set[Conn] = set()
        self.opening = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closing = False
        self.deadlines: dict[Conn, tuple[float, float]] = {}
        self._ticker: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        load_metrics.track_pool(self)  # edgegw_upstream_connections

    async def acquire(self, seconds: float) -> tuple[Conn, bool]:
        """A connection and whether it was reused; waits at most ``seconds`` for a free
        slot when all ``max_connections`` are busy."""
        while True:
            idle = self.take()
            if idle is not None:
                return idle
            if len(self.conns) + self.opening < self.backend.max_connections:
                return await self.connect(), False
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            self.queued(1)
            try:
                async with asyncio.timeout(seconds):
                    await waiter
            except TimeoutError as exc:
                detail = f"all {self.backend.max_connections} connections busy for {seconds:g}s"
                raise UpstreamTimeout(self.name, detail) from exc
            finally:
                self.queued(-1)
                if not waiter.done():
                    waiter.cancel()

    def take(self) -> tuple[Conn, bool] | None:
        """``acquire``'s answer when an idle connection is there (no await), else None."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn, True
        return None

    def queued(self, delta: int) -> None:
        """A caller starts (1) or stops (-1) waiting for a free connection."""

    def watch(self, conn: Conn, seconds: float) -> None:
        """Fail ``conn``'s exchange with a timeout unless its response head arrives (or
        ``watch`` is called again) within ``seconds``."""
        self.deadlines[conn] = (self.loop.time() + seconds, seconds)
        if self._ticker is None:
            self._ticker = self.loop.call_later(DEADLINE_TICK, self._tick)

    def unwatch(self, conn: Conn) -> None:
        self.deadlines.pop(conn, None)

    async def connect(self) -> Conn:
        seconds = self.backend.connect_timeout
        self.opening += 1
        try:
            async with asyncio.timeout(seconds):
                _, conn = await self.loop.create_connection(
                    lambda: Conn(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.sni,
                )
        except TimeoutError as exc:
            detail = f"no connection within {seconds:g}s"
            raise UpstreamConnectTimeout(self.name, detail) from exc
        except OSError as exc:  # ssl.SSLError (a refused certificate) is one too
            raise UpstreamUnreachable(self.name, f"cannot connect: {exc}") from exc
        finally:
            self.opening -= 1
            self._wake()
        self.conns.add(conn)
        return conn

    def release(self, conn: Conn) -> None:
        member = self.member
        if member is not None:  # the request's count on a balanced endpoint ends
            member.active -= 1
            member.balancer.active -= 1
        if conn.writer is not None and not conn.writer.done():
            conn.writer.cancel()  # the response came first; the rest of the upload is moot
        if conn.reusable() and not self.closing:
            conn.head = None
            conn.idle_since = self.loop.time()
            self.idle.append(conn)
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(IDLE_TIMEOUT, self._sweep)
            self._wake()
        else:
            conn.abort()

    def lost(self, conn: Conn) -> None:
        self.conns.discard(conn)
        self._wake()

    def close(self) -> None:
        self.closing = True
        for timer in (self._sweeper, self._ticker):
            if timer is not None:
                timer.cancel()
        for conn in list(self.conns):
            conn.abort()

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _tick(self) -> None:
        now = self.loop.time()
        expired = [(c, s) for c, (when, s) in self.deadlines.items() if when <= now]
        for conn, seconds in expired:
            del self.deadlines[conn]
            conn.fail(UpstreamTimeout(self.name, f"no response within {seconds:g}s"))
        self._ticker = None
        if self.deadlines and not self.closing:
            self._ticker = self.loop.call_later(DEADLINE_TICK, self._tick)

    def _sweep(self) -> None:
        self._sweeper = None
        expired = self.loop.time() - IDLE_TIMEOUT
        keep = []
        for conn in self.idle:
            if conn.idle_since <= expired:
                conn.abort()
            else:
                keep.append(conn)
        self.idle = keep
        if keep and not self.closing:
            self._sweeper = self.loop.call_later(IDLE_TIMEOUT / 2, self._sweep)
