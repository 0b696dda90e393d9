"""WebSocket routes (``routes[].websocket: true``): the upgrade is a request like any
other until its backend answers, then a relay of messages both ways.

The server (granian or hypercorn) makes the client's side of the handshake and hands the
app an ASGI ``websocket`` scope. ``serve_websocket`` runs it through the pipeline as the
GET it is (ingress checks, routing, the request-header filters, X-Forwarded-*), with a
``Tunnel`` in the scope: where the pipeline would call the backend, it calls
``Tunnel.open`` instead, which makes the backend's side of the handshake with the
``websockets`` library (RFC 6455 §4.1) and accepts the client's. A filter's reply, a 404 or
a backend that refuses goes to the client as the HTTP response to its upgrade (the ASGI
``websocket.http.response`` extension) or, on a server without it, as a close before the
accept, which the server answers 403. The relay then runs outside the pipeline (a reload
does not wait for it) until either side closes or no message passed for
``limits.websocket_idle_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from prometheus_client import Counter, Gauge
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from edgegw.balance.tls import client_context
from edgegw.chain import LocalReply
from edgegw.model import Backend, ServerLimits
from edgegw.problem import problem
from edgegw.types import Headers, Message, Receive, Scope, Send

log = logging.getLogger("edgegw.websocket")

#: The scope key under which the pipeline finds the tunnel of a WebSocket upgrade.
TUNNEL = "edgegw.tunnel"
SESSIONS = Counter(
    "edgegw_websocket_sessions", "WebSocket sessions relayed, by the side that ended them",
    ["route", "end"],
)  # fmt: skip
MESSAGES = Counter(
    "edgegw_websocket_messages", "WebSocket messages relayed", ["route", "direction"]
)
OPEN = Gauge(
    "edgegw_websocket_open", "WebSocket sessions open", ["route"], multiprocess_mode="livesum"
)
# The handshake's own headers: the websockets client makes the backend's (RFC 6455 §4.1).
_HANDSHAKE = frozenset(
    {
        b"host",
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"content-length",
        b"transfer-encoding",
    }
)
# RFC 6455 §7.4.1: 1005, 1006 and 1015 are never sent in a Close frame.
_UNSENDABLE = frozenset({1005, 1006, 1015})


def _close_code(code: int | None, default: int) -> int:
    if code is None or code in _UNSENDABLE or not 1000 <= code <= 4999:
        return default
    return code


class Tunnel:
    """One WebSocket upgrade: the client's scope and send, the backend's connection."""

    def __init__(self, scope: Scope, send: Send, limits: ServerLimits) -> None:
        self.scope = scope
        self.client_send = send
        self.limits = limits
        self.backend: ClientConnection | None = None
        self.denial = "websocket.http.response" in (scope.get("extensions") or {})
        self.refused = False
        self.route = ""

    async def open(
        self, route: str, backend: Backend, path: str, headers: Headers
    ) -> LocalReply | None:
        """Connect to ``backend`` and accept the client; or the reply that refuses it."""
        self.route = route
        url = backend.url
        if backend.endpoints:
            # Each endpoint by its weight; health and outlier state is the HTTP
            # balancer's and is not consulted here (docs/configuration.md).
            weights = [e.weight for e in backend.endpoints]
            url = random.choices(backend.endpoints, weights)[0].url
        scheme, _, rest = url.partition("://")
        secure = scheme == "https"
        uri = ("wss://" if secure else "ws://") + rest.rstrip("/") + path
        offered = [
            p.strip()
            for n, v in self.scope["headers"]
            if n == b"sec-websocket-protocol"
            for p in v.decode("latin-1").split(",")
            if p.strip()
        ]
        extra = [(n.decode(), v.decode("latin-1")) for n, v in headers if n not in _HANDSHAKE]
        tls: dict[str, Any] = {}
        if secure:
            tls["ssl"] = client_context(backend.tls)
            if backend.tls is not None and backend.tls.sni:
                tls["server_hostname"] = backend.tls.sni
        try:
            self.backend = await connect(
                uri,
                additional_headers=extra,
                subprotocols=offered or None,
                user_agent_header=None,
                open_timeout=backend.connect_timeout,
                ping_interval=None,  # the idle timeout is the gateway's, both sides alike
                close_timeout=5,
                max_size=self.limits.max_request_body,
                **tls,
            )
        except InvalidStatus as exc:  # the backend refused the upgrade: its answer, as is
            response = exc.response
            kept = [
                (k.lower().encode(), v.encode("latin-1"))
                for k, v in response.headers.raw_items()
                if k.lower() in ("content-type", "www-authenticate", "retry-after")
            ]
            return LocalReply(response.status_code, kept, bytes(response.body or b""))
        except TimeoutError:
            return problem(504, "the backend did not complete the WebSocket handshake in time")
        except (OSError, InvalidHandshake) as exc:
            return problem(502, f"WebSocket handshake with the backend failed: {exc}")
        accept: Message = {"type": "websocket.accept", "subprotocol": self.backend.subprotocol}
        await self.client_send(accept)
        return None

    async def deny(self, message: Message) -> None:
        """The pipeline's ``send`` until the accept: its reply refuses the upgrade."""
        kind = message["type"]
        if self.refused and not self.denial:
            return
        self.refused = True
        if not self.denial:  # the server answers a close before accept with 403
            await self.client_send({"type": "websocket.close", "code": 1008})
        elif kind == "http.response.start":
            await self.client_send(
                {
                    "type": "websocket.http.response.start",
                    "status": message["status"],
                    "headers": message.get("headers", []),
                }
            )
        elif kind == "http.response.body":
            await self.client_send(
                {
                    "type": "websocket.http.response.body",
                    "body": message.get("body", b""),
                    "more_body": message.get("more_body", False),
                }
            )

    async def relay(self, receive: Receive) -> None:
        """Messages both ways until one side closes or the idle timeout."""
        ws, route = self.backend, self.route
        assert ws is not None
        send = self.client_send
        activity = asyncio.Event()  # set by each message; the idle timer restarts
        counts = {"in": 0, "out": 0}
        ended = ""  # the side that closed first (``first``)
        limit = self.limits.max_request_body

        async def client_to_backend() -> str:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    side = first("client")
                    await ws.close(_close_code(message.get("code"), 1000))
                    return side
                if kind != "websocket.receive":
                    continue
                activity.set()
                counts["in"] += 1
                data = message.get("bytes")
                if data is None:
                    data = message.get("text") or ""
                if _size(data, limit) > limit:  # granian's own bound is larger (docs/security.md)
                    side = first("client")
                    await ws.close(1009)
                    await _close_client(send, 1009, "message too big")
                    return side
                try:
                    await ws.send(data)
                except ConnectionClosed:
                    return await backend_closed()

        async def backend_to_client() -> str:
            try:
                async for data in ws:
                    activity.set()
                    counts["out"] += 1
                    if isinstance(data, str):
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
            except ConnectionClosed:
                pass
            except OSError:  # the server could not send: the client is gone
                side = first("client")
                await ws.close(1001)
                return side
            return await backend_closed()

        async def backend_closed() -> str:
            side = first("backend")
            code, reason = _backend_close(ws)
            await _close_client(send, _close_code(code, 1011), reason)
            return side

        async def idle() -> str:
            timeout = self.limits.websocket_idle_timeout
            while True:
                try:
                    await asyncio.wait_for(activity.wait(), timeout)
                except TimeoutError:
                    break
                activity.clear()
            side = first("idle")
            # RFC 6455 §7.4.1: 1001, the endpoint (the gateway) is going away.
            await ws.close(1001, "idle timeout")
            await _close_client(send, 1001, "idle timeout")
            return side

        def first(side: str) -> str:
            """The side that ended the session: the first to close (the other's close
            follows as its answer)."""
            nonlocal ended
            ended = ended or side
            return ended

        OPEN.labels(route).inc()
        tasks = [asyncio.ensure_future(c()) for c in (client_to_backend, backend_to_client, idle)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            next(iter(done)).result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ws.close()
            OPEN.labels(route).dec()
            SESSIONS.labels(route, ended or "error").inc()
            MESSAGES.labels(route, "client_to_backend").inc(counts["in"])
            MESSAGES.labels(route, "backend_to_client").inc(counts["out"])


def _size(data: str | bytes, limit: int) -> int:
    """``data``'s size in bytes, exact when it could be over ``limit`` (a str's UTF-8 is at
    most 4 bytes per character: encoded only then)."""
    if isinstance(data, str) and len(data) * 4 > limit:
        return len(data.encode())
    return len(data)


def _backend_close(ws: ClientConnection) -> tuple[int | None, str]:
    """The close to pass on to the client: the backend's, or the gateway's own when its
    side closed first (a message over ``max_request_body``: 1009, a protocol error: 1002)."""
    protocol = ws.protocol
    sent, received = protocol.close_sent, protocol.close_rcvd
    if sent is not None and protocol.close_rcvd_then_sent is not True:
        return sent.code, sent.reason
    if received is not None:
        return received.code, received.reason
    return None, ""


async def _close_client(send: Send, code: int, reason: str) -> None:
    try:
        await send({"type": "websocket.close", "code": code, "reason": reason})
    except OSError:  # already gone
        pass


class _NoBody:
    """The upgrade's ``receive`` for the pipeline: an empty body, then nothing (the
    pipeline's client watcher waits here until the handshake ends and cancels it)."""

    def __init__(self) -> None:
        self.given = False

    async def __call__(self) -> Message:
        if not self.given:
            self.given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def serve_websocket(pipeline: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """One ASGI ``websocket`` scope: the upgrade through ``pipeline`` (a ``Pipeline``),
    then the relay."""
    if (await receive())["type"] != "websocket.connect":
        return
    tunnel = Tunnel(scope, send, pipeline.config.limits)
    http_scope = dict(scope)
    # The upgrade is a GET (RFC 6455 §4.1); X-Forwarded-Proto says http or https.
    http_scope.update(
        type="http",
        method="GET",
        scheme="https" if scope.get("scheme") == "wss" else "http",
    )
    http_scope[TUNNEL] = tunnel
    try:
        await pipeline.handle(http_scope, _NoBody(), tunnel.deny)
    except BaseException:
        if tunnel.backend is not None:
            await tunnel.backend.close()
        raise
    if tunnel.backend is not None:
        await tunnel.relay(receive)
