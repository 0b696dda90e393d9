"""Talking to backends: one long-lived aiohttp session and connection pool per backend.

aiohttp exceptions stop here: callers see ``UpstreamConnectError`` (502) and
``UpstreamTimeout`` (504) from ``edgegw.errors``. Bodies stream in both directions; only
``call`` (for filters' ``proxy_http_call`` and aggregation) buffers, up to a limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey
from yarl import URL

from edgegw.chain import CallResponse, HttpCall
from edgegw.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout
from edgegw.model import Backend
from edgegw.types import Headers

# aiohttp would add these itself; a proxy forwards exactly what the client sent.
_SKIP_AUTO = ("User-Agent", "Accept-Encoding", "Accept", "Content-Type")
CHUNK = 64 * 1024


@dataclass(slots=True)
class UpstreamResponse:
    """Status and headers of a backend response whose body is still to be read."""

    status: int
    headers: Headers
    _response: aiohttp.ClientResponse
    backend: str

    async def chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        """Body chunks with "this is the last one" when known (it saves the server a
        separate empty end-of-body message)."""
        content = self._response.content
        try:
            while chunk := await content.readany():
                yield chunk, content.at_eof()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamConnectError(self.backend, f"response body broken: {exc}") from exc

    def release(self) -> None:
        self._response.release()


class _Deadline:
    """The response deadline of a request with a streamed body. Like Envoy's route
    timeout, it counts from the end of the request body, so a long upload to a healthy
    backend is not cut; while the body streams, every chunk pushes it back, so a client
    or backend that stalls the upload still fails after ``seconds`` without progress."""

    __slots__ = ("active", "seconds", "timeout")

    def __init__(self, timeout: asyncio.Timeout, seconds: float) -> None:
        self.timeout = timeout
        self.seconds = seconds
        self.active = True  # False once request() returned: the Timeout is gone

    async def extending(self, body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        async for chunk in body:
            self._push(loop)
            yield chunk
        self._push(loop)

    def _push(self, loop: asyncio.AbstractEventLoop) -> None:
        # An expired Timeout is being unwound in the request's task: leave it alone.
        if self.active and not self.timeout.expired():
            self.timeout.reschedule(loop.time() + self.seconds)


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

    async def call(
        self,
        cluster: str,
        method: str,
        path: str,
        authority: str,
        headers: Headers,
        body: bytes,
        timeout: float,
    ) -> CallResponse: ...

    async def aclose(self) -> None: ...


class _Connector(aiohttp.TCPConnector):
    """A TCPConnector that aborts, rather than closes, a discarded connection with unsent
    request bytes: asyncio's close() waits for the write buffer to drain, so a backend
    that stopped reading an upload (the request then timed out) would keep the socket
    open for as long as it likes."""

    def _release(
        self,
        key: ConnectionKey,
        protocol: ResponseHandler,
        *,
        should_close: bool = False,
    ) -> None:
        transport = protocol.transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()
        super()._release(key, protocol, should_close=should_close)


class _Pool:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        url = URL(backend.url)
        self.origin = f"{url.scheme}://{url.raw_authority}"
        self.base_path = url.raw_path.rstrip("/")
        self.host = url.raw_authority
        connector = _Connector(limit=backend.max_connections, limit_per_host=0, ttl_dns_cache=10)
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one user's cookies to the next
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=backend.connect_timeout),
        )

    def url(self, path: str) -> URL:
        return URL(self.origin + self.base_path + path, encoded=True)


class AiohttpUpstream:
    """The production ``Upstream``: pools are created on first use inside the loop."""

    def __init__(
        self, backends: Mapping[str, Backend], extra_calls: Mapping[str, HttpCall] | None = None
    ) -> None:
        self._backends = backends
        self._pools: dict[str, _Pool] = {}
        self._extra = dict(extra_calls or {})

    def _pool(self, name: str) -> _Pool:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = _Pool(self._backends[name])
        return pool

    async def request(
        self,
        backend: str,
        method: str,
        path: str,
        headers: Headers,
        body: AsyncIterable[bytes] | bytes | None,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        pool = self._pool(backend)
        str_headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
        seconds = timeout or pool.backend.timeout
        streamed: _Deadline | None = None
        try:
            async with asyncio.timeout(seconds) as deadline:
                if body is not None and not isinstance(body, bytes):
                    streamed = _Deadline(deadline, seconds)
                    body = streamed.extending(body)
                resp = await pool.session.request(
                    method,
                    pool.url(path),
                    headers=str_headers,
                    data=body,
                    allow_redirects=False,
                    compress=None,
                )
        except aiohttp.ServerTimeoutError as exc:  # sock_connect: also a TimeoutError
            detail = f"no connection within {pool.backend.connect_timeout:g}s"
            raise UpstreamTimeout(backend, detail) from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(backend, f"no response within {seconds:g}s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(backend, f"cannot connect: {exc.os_error}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamConnectError(backend, f"{type(exc).__name__}: {exc}") from exc
        finally:
            if streamed is not None:
                streamed.active = False  # the body may still stream: leave the deadline
        raw = [(n.lower(), v) for n, v in resp.raw_headers]
        return UpstreamResponse(resp.status, raw, resp, backend)

    async def call(
        self,
        cluster: str,
        method: str,
        path: str,
        authority: str,
        headers: Headers,
        body: bytes,
        timeout: float,
        max_body: int = 16 * 1024 * 1024,
    ) -> CallResponse:
        """A buffered request to backend ``cluster`` (or an in-process extra cluster)."""
        extra = self._extra.get(cluster)
        if extra is not None:
            return await extra(cluster, method, path, authority, headers, body, timeout)
        if cluster not in self._backends:
            return CallResponse(0, error=f"unknown cluster '{cluster}'")
        if authority:
            headers = [(n, v) for n, v in headers if n != b"host"]
            headers.append((b"host", authority.encode()))
        try:
            async with asyncio.timeout(timeout):
                resp = await self.request(cluster, method, path, headers, body or None, timeout)
                try:
                    data = bytearray()
                    async for chunk, _last in resp.chunks():
                        data += chunk
                        if len(data) > max_body:
                            return CallResponse(0, error=f"response body over {max_body} bytes")
                finally:
                    resp.release()
        except TimeoutError:
            return CallResponse(0, error="timeout")
        except UpstreamTimeout as exc:
            return CallResponse(0, error=f"timeout: {exc.detail}")
        except UpstreamError as exc:
            return CallResponse(0, error=exc.detail)
        return CallResponse(resp.status, resp.headers, bytes(data))

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        await asyncio.gather(*(p.session.close() for p in pools.values()))
