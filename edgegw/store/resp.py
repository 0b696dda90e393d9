"""A lean Redis connection for the rate-limit hot path: commands packed by hand (RESP2,
https://redis.io/docs/latest/develop/reference/protocol-spec/), replies parsed by
hiredis' C reader, pipelined on one socket (replies come back in command order, so a
FIFO of callbacks matches them). redis-py's asyncio client spends most of a call in
packing, pooling and parsing; here a call is one ``transport.write``, one timer and one
callback, called with the reply inside ``data_received`` (no future, no task).

Any failure (connect, reset, timeout) fails every command in flight with
``StoreUnavailable`` and drops the socket; the next command reconnects.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

from edgegw.errors import StoreError, StoreUnavailable

#: URL schemes this connection speaks (cluster and sentinel go through redis-py).
SCHEMES = ("redis", "rediss", "unix")
#: Called once with a command's reply: the parsed value, a ``hiredis.ReplyError`` (an
#: error reply), or the ``StoreError`` that failed it (connection lost, no answer).
OnReply = Callable[[Any], None]


def speaks(url: str) -> bool:
    """Whether this connection can serve ``url`` as redis-py would: its schemes, and no
    query options but ``db`` (TLS or socket options in the query stay with redis-py)."""
    parts = urlsplit(url)
    options = {p.partition("=")[0] for p in parts.query.split("&") if p}
    return parts.scheme in SCHEMES and options <= {"db"}


def pack(*parts: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RespConnection) -> None:
        self._owner = owner
        self._reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._owner._waiting
        while (reply := self._reader.gets()) is not False:
            if not waiting:
                continue
            on_reply, timer = waiting.popleft()
            timer.cancel()
            try:
                on_reply(reply)
            except Exception as exc:  # a caller's bug must not drop the connection
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "redis reply callback failed", "exception": exc}
                )

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(StoreUnavailable(f"redis: connection lost ({exc or 'closed'})"))


class RespConnection:
    """One pipelined connection to the Redis of ``url`` (``redis://``, ``rediss://``,
    ``unix://``), with the URL's user, password and database."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self._parts = parts
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._waiting: deque[tuple[OnReply, asyncio.TimerHandle]] = deque()
        self._hello: list[bytes] = []
        if parts.password is not None:
            user = unquote(parts.username or "default")
            self._hello.append(pack("AUTH", user, unquote(parts.password)))
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        query_db = dict(p.partition("=")[::2] for p in parts.query.split("&") if p).get("db")
        db = query_db or db
        if db and db != "0":
            self._hello.append(pack("SELECT", int(db)))

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        parts = self._parts
        proto = _Protocol(self)
        if parts.scheme == "unix":
            coro = loop.create_unix_connection(lambda: proto, parts.path)
        else:
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            coro = loop.create_connection(
                lambda: proto, parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context
            )
        try:
            transport, _ = await asyncio.wait_for(coro, self.timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise StoreUnavailable(f"redis: cannot connect: {exc!r}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            # A batch goes out while the previous one is unanswered: without NODELAY
            # Nagle holds it until that ACK (up to 40 ms of delayed ACK; RFC 1122 4.2.3.2).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport = transport
        for command in self._hello:  # AUTH / SELECT answer before anything else is sent
            reply = await self.call(command)
            if isinstance(reply, hiredis.ReplyError):
                self._lost(StoreUnavailable(f"redis refused {command.split()[2]!r}: {reply}"))
                raise StoreUnavailable(f"redis: {reply}")

    async def ensure(self) -> None:
        """Connected (or ``StoreUnavailable``); concurrent callers share one attempt."""
        if self._transport is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        await asyncio.shield(self._connecting)

    def _connected(self, fut: asyncio.Future[None]) -> None:
        self._connecting = None
        if not fut.cancelled():
            fut.exception()  # retrieved: each waiter re-raises its own copy

    @property
    def connected(self) -> bool:
        return self._transport is not None

    def send(self, command: bytes, on_reply: OnReply) -> None:
        """Write ``command`` now (connected: see ``ensure``; else ``StoreUnavailable``);
        ``on_reply`` gets its reply, or the error that failed it: no answer within
        ``timeout`` drops the connection (later replies would no longer match their
        commands), failing every command in flight."""
        if self._transport is None:
            raise StoreUnavailable("redis: not connected")
        timer = asyncio.get_running_loop().call_later(self.timeout, self._expired)
        self._waiting.append((on_reply, timer))
        self._transport.write(command)

    def _expired(self) -> None:
        self._lost(StoreUnavailable(f"redis: no answer within {self.timeout:g} s"))

    async def call(self, command: bytes) -> Any:
        """``send`` and wait for the reply (a ``hiredis.ReplyError`` for an error reply);
        raises the ``StoreError`` that failed it."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.send(command, functools.partial(_wake, fut))
        reply = await fut
        if isinstance(reply, StoreError):
            raise reply
        return reply

    def _lost(self, exc: StoreError) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        waiting, self._waiting = self._waiting, deque()
        for on_reply, timer in waiting:
            timer.cancel()
            try:
                on_reply(exc)
            except Exception as bug:  # as in data_received: the others still get theirs
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "redis reply callback failed", "exception": bug}
                )

    async def aclose(self) -> None:
        self._lost(StoreUnavailable("redis: connection closed"))


def _wake(fut: asyncio.Future[Any], reply: Any) -> None:
    if not fut.done():  # not cancelled meanwhile
        fut.set_result(reply)
