"""The request span: begin (trace context in), end (sampling, hand-off to export).

Sampling (docs/operations.md, "Tracing"): a trace continued from a trusted client follows
the client's sampled flag (OpenTelemetry's ParentBased sampler); a new trace is sampled
when its id falls under ``sample_ratio`` (TraceIdRatioBased: the low 64 bits of the id
against ratio·2^64, so every service using the same rule agrees). Every request records
its spans either way; at its end the trace is exported when sampled, or when the gateway
answered 5xx: errors are always exported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgegw.model import GatewayConfig, TracingConfig
from edgegw.tracing import w3c
from edgegw.tracing.spans import CURRENT, SERVER, Span, Trace, new_trace_id
from edgegw.types import Headers, Scope

_LOW64 = (1 << 64) - 1
# Semantic conventions (HTTP spans): http.request.method is one of these or "_OTHER"
# (the original in http.request.method_original), and a span name uses "HTTP" for an
# unknown method: a client must not create unbounded span names.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
Submit = Callable[[list[Span]], None]


class Tracer:
    """The tracing of one config; ``submit`` hands an ended trace's spans to export."""

    def __init__(
        self,
        config: TracingConfig,
        routes: dict[str, str],
        submit: Submit,
        release: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.release = release  # called once by ``close``
        self.trust = config.trust_incoming
        self.bound = round(config.sample_ratio * (1 << 64))
        self.routes = routes  # route name -> http.route (its template or prefix)
        self.submit = submit

    def begin(self, headers: Headers, method: str, scope: Scope) -> tuple[Span, Headers]:
        """The request's span, made current; ``headers`` without a client's trace
        context when it is not trusted."""
        came = w3c.incoming(headers) if self.trust else None
        if came is not None:
            trace = Trace(self, came.trace_id, bool(came.flags & w3c.SAMPLED), came.parent_id,
                          came.tracestate)  # fmt: skip
        else:
            trace_id = new_trace_id()
            trace = Trace(self, trace_id, (trace_id & _LOW64) < self.bound, 0, b"")
            if not self.trust:
                headers = [(n, v) for n, v in headers if n not in w3c.TRACE_HEADERS]
        span = Span(trace, trace.remote_parent, method, SERVER)
        span.token = CURRENT.set(span)
        return span, headers

    def close(self) -> None:
        """The pipeline is closing: give back the exporter (the last user flushes it)."""
        release, self.release = self.release, lambda: None
        release()

    def end(self, span: Span, route: str, status: int, path: str, backend: str | None,
            scope: Scope, method: str) -> None:  # fmt: skip
        """End the request's span; export its trace when sampled or failed."""
        span.finish(str(status) if status >= 500 else "")
        if span.token is not None:
            try:
                CURRENT.reset(span.token)
            except ValueError:  # ended in another context (cannot happen from handle)
                pass
            span.token = None
        template = self.routes.get(route, "")
        known = method if method in KNOWN_METHODS else "HTTP"
        span.name = f"{known} {template}" if template else known
        # Named in the exporter thread (``server_attributes``): a tuple costs less here.
        span.attrs = (method, path.partition("?")[0], template, route, status, backend,
                      scope.get("scheme", "http"), scope.get("server"), scope.get("client"),
                      scope.get("http_version", "1.1"))  # fmt: skip
        trace = span.trace
        trace.ended = True
        if trace.sampled or status >= 500:
            self.submit(trace.spans)


def server_attributes(values: tuple[Any, ...]) -> dict[str, Any]:
    """The request span's attributes (OpenTelemetry semantic conventions, HTTP server
    spans: http.request.method, url.path, http.route, http.response.status_code, ...)."""
    method, path, template, route, status, backend, scheme, server, client, version = values
    attrs: dict[str, Any] = {
        "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
        "url.path": path,
        "url.scheme": scheme,
        "network.protocol.name": "http",
        "network.protocol.version": version,
        "edgegw.route": route,
    }
    if method not in KNOWN_METHODS:
        attrs["http.request.method_original"] = method
    if template:
        attrs["http.route"] = template
    if status:
        attrs["http.response.status_code"] = status
    if status >= 500:
        attrs["error.type"] = str(status)
    if backend:
        attrs["edgegw.backend"] = backend
    if server:
        attrs["server.address"], attrs["server.port"] = server[0], server[1]
    if client:
        attrs["client.address"], attrs["client.port"] = client[0], client[1]
    return attrs


def tracer_for(config: GatewayConfig) -> Tracer | None:
    """The tracer of ``config``, None when tracing is off (then nothing is made per
    request). Imports the OpenTelemetry SDK only here."""
    if config.tracing is None:
        return None
    from edgegw.tracing.export import exporter_for

    routes = {r.name: r.match.path or r.match.prefix or "" for r in config.routes}
    exporter = exporter_for(config.tracing)
    return Tracer(config.tracing, routes, exporter.submit, exporter.release)
