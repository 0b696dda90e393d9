"""One request through the gateway: route → request filters → backend / split / aggregate
→ response filters → client, streaming bodies both ways.

Status values drive the flow (``LocalReply`` ends a request); exceptions only for
failures, translated to problem+json answers here.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from edgegw.aggregate import Values, run_aggregate
from edgegw.chain import Exchange, FilterChains, LocalReply, StreamFilters
from edgegw.disconnect import CLIENT_GONE, Watcher
from edgegw.errors import UpstreamError, UpstreamOverloaded
from edgegw.front.edge import Front
from edgegw.front.rewrite import rewrite_path
from edgegw.headers import (
    HOP_BY_HOP,
    REQUEST_ID,
    TrustedProxies,
    add_forwarded,
    get,
    strip_hop_by_hop,
    upstream_request_headers,
)
from edgegw.ingress import Inbound, RequestPolicy, absolute_form, drop_names, new_request_id
from edgegw.model import GatewayConfig, Route
from edgegw.observe import access_log, metrics
from edgegw.paths import normalize
from edgegw.problem import problem
from edgegw.routing import Router
from edgegw.tracing import Span, tracer_for
from edgegw.types import Headers, Message, Receive, Scope, Send
from edgegw.upstream import Upstream
from edgegw.wsproxy import TUNNEL, Tunnel

# A client's id is kept when it is 1 to 128 visible ASCII characters (VCHAR, RFC 5234
# B.1): it goes into logs and to other services, so no spaces, controls or huge values.
_VALID_REQUEST_ID = re.compile(rb"[!-~]{1,128}").fullmatch
# Dropped from what reaches the client: the gateway sets both itself.
_REPLY_DROP = frozenset({b"content-length", REQUEST_ID})
_RESPONSE_DROP = HOP_BY_HOP | {REQUEST_ID}
_NO_BODY_STATUS = frozenset({204, 304})
# HTTP/1.x: a request without Content-Length or Transfer-Encoding has no body (RFC 9112
# §6.3). HTTP/2 and /3 frame bodies themselves (RFC 9113 §8.1): only the stream tells.
_HTTP1 = frozenset({"1.1", "1.0"})
_connection_ids = iter(range(1, 1 << 62))


class _Abort(Exception):
    """Stops the request body mid-stream (too large, client gone, a filter's reply);
    what to answer is in ``_Counters.abort``: aiohttp wraps exceptions of a body."""


@dataclass(slots=True)
class _Counters:
    request_id: bytes = b""  # as assigned on arrival: echoed to the client and logged
    bytes_in: int = 0
    bytes_out: int = 0
    status: int = 0
    aborted: bool = False
    abort_reply: LocalReply | None = None
    reading: bool = False  # the request body is still being read (by ``_body``)
    gone: bool = False  # the client left before the response ended
    ended: bool = False  # the response's last bytes went to the server
    watcher: asyncio.Task[None] | None = None  # waits for the client to leave (edgegw.disconnect)
    span: Span | None = None  # the request's span when tracing is on (edgegw.tracing)
    tunnel: Tunnel | None = None  # a WebSocket upgrade (edgegw/wsproxy.py)

    def abort(self, reply: LocalReply | None) -> _Abort:
        self.aborted, self.abort_reply = True, reply
        return _Abort()


class Pipeline:
    """Serves requests for one config; immutable once built (a reload builds another)."""

    def __init__(
        self, config: GatewayConfig, upstream: Upstream, chains: FilterChains | None
    ) -> None:
        self.config = config
        self.router = Router(config.routes)
        self.upstream = upstream
        self.chains = chains
        self.trusted = TrustedProxies(config.trusted_proxies)
        self.trust_any = bool(self.trusted)  # some peers are trusted proxies
        self.policy = RequestPolicy(
            config.request_headers_to_remove,
            config.headers_with_underscores_action,
            config.limits.max_header_bytes,
        )
        self.route_removals = {
            r.name: frozenset(n.encode("latin-1") for n in r.request_headers_to_remove)
            for r in config.routes
            if r.request_headers_to_remove
        }
        self.max_body = config.limits.max_request_body
        self.keep_escaped_slashes = config.paths.escaped_slashes == "keep_escaped"
        self.access_log = access_log.for_config(config.access_log)
        self.front = Front.build(config)  # None: no headers/security_headers/cors rules
        self.preserve_host = frozenset(n for n, b in config.backends.items() if b.preserve_host)
        self.tracer = tracer_for(config)  # None: tracing off, no span is made
        self.inflight = 0  # requests started on this pipeline and not finished
        self._drained: asyncio.Event | None = None  # exists once the pipeline is retired
        self.watcher = Watcher()  # running requests, for noticing their clients leave

    async def drain(self, timeout: float) -> bool:
        """Wait until no request uses this pipeline; False if ``timeout`` passed first."""
        self._drained = asyncio.Event()
        if self.inflight == 0:
            return True
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Release pools and filter VMs; call once no request uses this pipeline."""
        self.watcher.close()
        await self.upstream.aclose()
        if self.chains is not None:
            await self.chains.aclose()
        if self.tracer is not None:  # may flush the last spans: not on the loop
            await asyncio.to_thread(self.tracer.close)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or quote(scope["path"]).encode()
        raw_path = raw_path.partition(b"?")[0]
        query: bytes = scope.get("query_string") or b""
        target_authority = None
        if raw_path[:1] != b"/":  # absolute-form (hypercorn passes it on): route on its authority
            absolute = absolute_form(raw_path.decode("latin-1"))
            if absolute is not None:
                target_authority = absolute[0].encode("latin-1")
                raw_path = absolute[1].encode("latin-1")
        version = scope.get("http_version", "1.1")
        inbound = self.policy.inspect(
            scope["headers"], len(method) + len(raw_path) + len(query), version == "1.1",
            target_authority,
        )  # fmt: skip
        if isinstance(inbound, tuple):
            headers, request_id = [], None
        else:
            headers, request_id = inbound.headers, inbound.request_id
        # Before anything is answered: every reply and log line carries the request's id.
        if request_id is None or _VALID_REQUEST_ID(request_id) is None:
            if request_id is not None:
                headers = [(n, v) for n, v in headers if n != REQUEST_ID]
            request_id = new_request_id()
            headers.append((REQUEST_ID, request_id))
        counters = _Counters(request_id)
        counters.tunnel = scope.get(TUNNEL)
        if self.tracer is not None:  # before any reply: error bodies carry the trace id
            counters.span, headers = self.tracer.begin(headers, method, scope)
        edge = None
        if self.front is not None:  # its send edits every response head (edgegw/front/edge.py)
            edge = self.front.start(send, headers, query)
            send = edge.send
        sent = raw_path.decode("latin-1")
        if isinstance(inbound, tuple):
            status, detail = inbound
            await _send_reply(send, _framing_problem(status, detail), counters)
            self._finish("", method, sent, counters, start, None, scope)
            return
        authority = inbound.authority
        # One path for the router, the filters (:path) and the backend (edgegw/paths.py).
        path = normalize(sent, self.keep_escaped_slashes)
        if path is None:
            await _send_reply(send, problem(400, "invalid request path"), counters)
            self._finish("", method, sent, counters, start, None, scope)
            return
        if edge is not None and method == "OPTIONS":
            preflight = edge.preflight(self.router, path, authority)
            if preflight is not None:  # CORS: answered before the filters, never proxied
                await _send_reply(send, preflight[1], counters)
                self._finish(preflight[0], method, path, counters, start, None, scope)
                return
        found = self.router.match(method, path, authority)
        if found is None:
            await _send_reply(send, self._no_route(method, path, authority), counters)
            self._finish("", method, path, counters, start, None, scope)
            return
        route, params = found
        if counters.tunnel is not None and not route.websocket:  # as Envoy: upgrade_failed
            await _send_reply(send, problem(403, "WebSocket upgrade not enabled"), counters)
            self._finish(route.name, method, path, counters, start, None, scope)
            return
        # Names listed by Connection go before the filters run (RFC 9110 §7.6.1): a client
        # must not make the gateway drop a header a filter sets (x-user-id).
        drop = self.route_removals.get(route.name)
        if inbound.nominated:
            drop = inbound.nominated | drop if drop else inbound.nominated
        if drop:
            headers = drop_names(headers, drop)
        peer, port = scope.get("client") or ("", 0)
        trusted_peer = self.trusted.trusts(peer) if self.trust_any else False
        client = self.trusted.client_address(peer, headers) if trusted_peer else peer
        scheme = scope.get("scheme", "http")
        # Before the filters: they read the X-Forwarded-For the backend will get.
        headers = add_forwarded(
            headers, peer, scheme, inbound.host, trusted_peer, inbound.forwarded
        )  # fmt: skip
        full_path = path + "?" + query.decode("latin-1") if query else path
        ex = Exchange(
            route=route,
            method=method,
            path=full_path,
            scheme=scheme,
            authority=authority,
            request_headers=headers,
            client=(client, port),
            server=tuple(scope.get("server") or ("", 0)),
            connection_id=next(_connection_ids),
            start_ns=time.time_ns(),
            trusted_peer=trusted_peer,
        )
        if edge is not None:
            edge.bind(ex)
        filters = self.chains.start(ex) if self.chains is not None and route.filters else None
        self.inflight += 1
        task = asyncio.current_task()
        if task is not None:
            counters.reading = True  # not known yet: _run tells
            self.watcher.add(task, receive, counters)
        try:
            http1 = version in _HTTP1
            await self._run(ex, params, filters, receive, send, counters, http1, inbound)
        except asyncio.CancelledError:
            if not counters.gone:
                raise
            # Cancelled by the watcher, the client gone: the backend exchange was aborted on the
            # way out (its connection closed, never pooled); the request itself is over.
            if task is not None:
                task.uncancel()
        except OSError:  # a server may fail send() once its client left (ASGI spec 2.4)
            counters.gone = True
        finally:
            if task is not None:
                self.watcher.remove(task, counters)
            if counters.gone:
                counters.status = CLIENT_GONE
            self.inflight -= 1
            if self._drained is not None and self.inflight == 0:
                self._drained.set()
            if filters is not None:
                filters.done(ex)
            self._finish(route.name, method, ex.path, counters, start, ex.backend, scope)

    async def _run(
        self,
        ex: Exchange,
        params: dict[str, str],
        filters: StreamFilters | None,
        receive: Receive,
        send: Send,
        counters: _Counters,
        http1: bool,
        inbound: Inbound,
    ) -> None:
        length, chunked = inbound.length, inbound.chunked
        has_body = (length is not None and length > 0) or chunked
        if length is not None and length > self.max_body:
            await _send_reply(send, self._too_large(), counters)
            return
        first: Message | None = None
        if not has_body and length is None and not http1:
            first = await receive()
            if first["type"] == "http.disconnect":
                return
            has_body = bool(first.get("body")) or first.get("more_body", False)
        counters.reading = has_body  # until then a watcher would steal messages
        if filters is not None:
            pending = filters.request_headers(ex, not has_body)
            reply = await pending if pending is not None else None
            if reply is not None:
                await _send_reply(send, reply, counters)
                return
        if self.front is not None:
            self.front.request(ex)  # headers.request: after the filters (edgegw/front/edge.py)
        route = ex.route
        if route.aggregate is not None:
            await self._aggregate(ex, params, filters, send, counters)
            return
        backend = self._backend(route, ex.request_headers)
        ex.backend = backend
        # The backend's framing is edgegw's own (RFC 9112 §6): a Content-Length only when
        # the body sent is checked to have that length (the client's, or the one a filter
        # left), else chunked; the client's Transfer-Encoding never goes upstream.
        declared = get(ex.request_headers, b"content-length") if has_body else None
        if declared is not None and not declared.isdigit():
            await _send_reply(
                send, problem(500, "a filter set an invalid Content-Length"), counters
            )
            return
        body = None
        if has_body:
            expected = int(declared) if declared is not None else None
            body = self._body(ex, filters, receive, counters, expected, first)
        edited = filters is not None or self.front is not None
        upstream_headers = upstream_request_headers(ex.request_headers, edited)
        if backend in self.preserve_host and ex.authority:
            upstream_headers.append((b"host", ex.authority.encode("latin-1")))
        if declared is not None:
            upstream_headers.append((b"content-length", declared))
        path = ex.path
        if route.strip_prefix and route.match.prefix:
            # The router matched the prefix on this same normalized path (a filter may
            # have rewritten :path since: then only a path still under it is cut).
            prefix = route.match.prefix.rstrip("/")
            if path.startswith(prefix):
                path = path[len(prefix) :]
                path = path if path.startswith("/") else "/" + path
        elif route.rewrite is not None:
            rewritten = rewrite_path(route.rewrite, path, self.keep_escaped_slashes)
            if rewritten is None:
                await _send_reply(send, problem(500, "rewrite made an invalid path"), counters)
                return
            path = rewritten
        if counters.tunnel is not None:
            config = self.config.backends[backend]
            reply = await counters.tunnel.open(route.name, config, path, upstream_headers)
            counters.status = 101 if reply is None else 0
            if reply is not None:
                await _send_reply(send, reply, counters)
            return
        try:
            resp = await self.upstream.request(backend, ex.method, path, upstream_headers, body)
        except (UpstreamError, _Abort) as exc:
            if counters.aborted:
                if counters.abort_reply is not None:
                    await _send_reply(send, counters.abort_reply, counters)
                return
            assert isinstance(exc, UpstreamError)
            await _send_reply(send, _upstream_problem(exc, ex.path), counters)
            return
        try:
            chunks = resp.chunks()
            await self._respond(ex, resp.status, resp.headers, chunks, filters, send, counters)
        finally:
            resp.release()

    def _backend(self, route: Route, headers: Headers) -> str:
        if route.backend is not None:
            return route.backend
        split = route.split
        assert split is not None
        variant = get(headers, split.header.encode())
        if variant is not None:
            chosen = split.backends.get(variant.decode("latin-1").strip())
            if chosen is not None:
                return chosen
        return split.default

    async def _body(
        self,
        ex: Exchange,
        filters: StreamFilters | None,
        receive: Receive,
        counters: _Counters,
        expected: int | None,
        first: Message | None = None,
    ) -> AsyncIterator[bytes]:
        """The request body for the backend. With ``expected`` (the Content-Length the
        backend is told) a body of any other size fails the request: a filter may resize
        the body, and the length it leaves in the headers is what the backend is told (as
        in Envoy); a mismatch would desynchronize the backend connection."""
        wants = filters is not None and filters.wants_request_body
        sent = 0
        while True:
            if first is None:
                message = await receive()
            else:  # already read to learn whether an HTTP/2 request has a body
                message, first = first, None
            if message["type"] == "http.disconnect":
                # The client left, or (granian) its chunked body was invalid: either way the
                # body is incomplete (RFC 9112 §7.1); a client still there gets 400 (the two
                # look the same from here, so this is logged as 400, not 499).
                counters.reading = False
                raise counters.abort(problem(400, "incomplete or invalid request body"))
            chunk: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            counters.bytes_in += len(chunk)
            if counters.bytes_in > self.max_body:
                raise counters.abort(self._too_large())
            if wants:
                assert filters is not None
                out = await filters.request_body(ex, chunk, not more)
                if isinstance(out, LocalReply):
                    raise counters.abort(out)
                chunk = out
            sent += len(chunk)
            if expected is not None and (sent > expected or (not more and sent != expected)):
                detail = "the request body does not match its Content-Length"
                if wants:
                    detail = "a filter changed the request body size but not Content-Length"
                raise counters.abort(problem(500 if wants else 400, detail))
            if not more:
                counters.reading = False
            if chunk:
                yield chunk
            if not more:
                return

    async def _respond(
        self,
        ex: Exchange,
        status: int,
        headers: Headers,
        body: AsyncIterator[tuple[bytes, bool]],
        filters: StreamFilters | None,
        send: Send,
        counters: _Counters,
    ) -> None:
        ex.status = status
        # The client gets the gateway's id, whatever the backend answered (as Envoy's
        # always_set_request_id_in_response); response filters may still change it.
        ex.response_headers = strip_hop_by_hop(headers, base=_RESPONSE_DROP)
        ex.response_headers.append((REQUEST_ID, counters.request_id))
        no_body = status in _NO_BODY_STATUS or ex.method == "HEAD"
        if filters is not None:
            pending = filters.response_headers(ex, no_body)
            reply = await pending if pending is not None else None
            if reply is not None:
                await _send_reply(send, reply, counters)
                return
            if filters.wants_response_body and not no_body:
                await self._respond_filtered(ex, body, filters, send, counters)
                return
        counters.status = ex.status
        await send(
            {"type": "http.response.start", "status": ex.status, "headers": ex.response_headers}
        )
        async for chunk, last in body:
            counters.bytes_out += len(chunk)
            counters.ended = last
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if last:
                return
        counters.ended = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _respond_filtered(
        self,
        ex: Exchange,
        body: AsyncIterator[tuple[bytes, bool]],
        filters: StreamFilters,
        send: Send,
        counters: _Counters,
    ) -> None:
        # Headers wait for the first bytes the filters release: a filter buffering the whole
        # body may still change them. A body released whole at the end gets an exact
        # Content-Length; a streamed one keeps the headers the filters left (as in Envoy,
        # a filter that changes a streamed body's size must drop Content-Length itself).
        started = False
        async for chunk in _with_eos(body):
            data, eos = chunk
            out = await filters.response_body(ex, data, eos)
            if isinstance(out, LocalReply):
                if not started:
                    await _send_reply(send, out, counters)
                return  # too late for a reply once headers went out: end the body
            if not started and (out or eos):
                resp_headers = ex.response_headers
                if eos:
                    resp_headers = [(n, v) for n, v in resp_headers if n != b"content-length"]
                    resp_headers.append((b"content-length", str(len(out)).encode()))
                counters.status = ex.status
                start = {"type": "http.response.start", "status": ex.status}
                await send({**start, "headers": resp_headers})
                started = True
            if out or eos:  # the last chunk (eos) always comes: it ends the body
                counters.bytes_out += len(out)
                counters.ended = eos
                await send({"type": "http.response.body", "body": out, "more_body": not eos})

    async def _aggregate(
        self,
        ex: Exchange,
        params: dict[str, str],
        filters: StreamFilters | None,
        send: Send,
        counters: _Counters,
    ) -> None:
        agg = ex.route.aggregate
        assert agg is not None
        _path, _, qs = ex.path.partition("?")
        query: dict[str, str] = {}
        for key, value in parse_qsl(qs, keep_blank_values=True):
            query.setdefault(key, value)
        values = Values(params, query, ex.request_headers)
        merged = await run_aggregate(agg, values, self.upstream.call)
        if filters is None:
            await _send_reply(send, merged, counters)
            return

        async def once() -> AsyncIterator[tuple[bytes, bool]]:
            yield merged.body, True

        await self._respond(ex, merged.status, merged.headers, once(), filters, send, counters)

    def _no_route(self, method: str, path: str, authority: str) -> LocalReply:
        allowed = self.router.allowed(path, authority)
        if not allowed:
            return problem(404, f"no route for {method} {path}", path)
        # The path exists for other methods: 405 with the Allow header (RFC 9110 §15.5.6).
        reply = problem(405, f"{method} is not allowed for {path}", path, allow=list(allowed))
        reply.headers.append((b"allow", ", ".join(allowed).encode("latin-1")))
        return reply

    def _too_large(self) -> LocalReply:
        return problem(413, f"request body over {self.max_body} bytes")

    def _finish(
        self,
        route: str,
        method: str,
        path: str,
        counters: _Counters,
        start: float,
        backend: str | None,
        scope: Scope,
    ) -> None:
        seconds = time.perf_counter() - start
        metrics.observe_request(route, counters.status, seconds)
        if counters.span is not None:
            span = counters.span
            span.trace.tracer.end(span, route, counters.status, path, backend, scope, method)
        log = self.access_log
        if log is not None:
            trace_id = "" if counters.span is None else counters.span.trace_id
            log.add(
                route, method, path, counters.status, seconds, backend,
                counters.bytes_in, counters.bytes_out, counters.request_id, trace_id, scope,
            )  # fmt: skip


async def _with_eos(
    body: AsyncIterator[tuple[bytes, bool]],
) -> AsyncIterator[tuple[bytes, bool]]:
    """The chunks, ending with one marked last (an empty one if none was)."""
    async for chunk, last in body:
        yield chunk, last
        if last:
            return
    yield b"", True


def _framing_problem(status: int, detail: str) -> LocalReply:
    # RFC 9112 §6.1, §9.6: after a request whose framing is in doubt the connection closes.
    reply = problem(status, detail)
    reply.headers.append((b"connection", b"close"))
    return reply


def _upstream_problem(exc: UpstreamError, path: str) -> LocalReply:
    if isinstance(exc, UpstreamOverloaded):  # a circuit breaker: name the limit
        return problem(exc.status, str(exc), path, backend=exc.backend, limit=exc.limit)
    return problem(exc.status, str(exc), path, backend=exc.backend)


async def _send_reply(send: Send, reply: LocalReply, counters: _Counters) -> None:
    counters.status = reply.status
    counters.bytes_out += len(reply.body)
    headers = [(n, v) for n, v in reply.headers if n not in _REPLY_DROP]
    headers.append((REQUEST_ID, counters.request_id))
    if reply.status not in _NO_BODY_STATUS:  # RFC 9110 §8.6: never on a 204
        headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    counters.ended = True
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})
