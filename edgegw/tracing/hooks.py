"""The spans below the request's: upstream tries, fan-out calls, filter phases.

Each is a child of the current span (``spans.CURRENT``) and costs nothing but a
context-variable read when tracing is off or the code runs outside a request.
Attributes follow the OpenTelemetry semantic conventions for HTTP client spans
(http.request.method, server.address, server.port, url.full, http.response.status_code,
http.request.resend_count, error.type); edgegw's own are under ``edgegw.``.
"""

from __future__ import annotations

from typing import Any

from edgegw.tracing import w3c
from edgegw.tracing.spans import CLIENT, CURRENT, INTERNAL, RESEND, Span
from edgegw.tracing.tracer import KNOWN_METHODS
from edgegw.types import Headers


def upstream_try(
    backend: str, method: str, scheme: str, host: str, port: int, target: str, headers: Headers
) -> tuple[Span | None, Headers]:
    """A span for one try on one endpoint, and the headers telling the backend about it
    (its ``traceparent`` names this span: the backend's spans are its children)."""
    parent = CURRENT.get()
    if parent is None or parent.trace.ended:
        return None, headers
    known = method in KNOWN_METHODS
    attrs: dict[str, Any] = {
        "http.request.method": method if known else "_OTHER",
        "server.address": host,
        "server.port": port,
        "url.full": f"{scheme}://{host}:{port}{target.partition('?')[0]}",
        "edgegw.backend": backend,
    }
    if not known:
        attrs["http.request.method_original"] = method
    resend = RESEND.get()
    if resend:
        attrs["http.request.resend_count"] = resend
    span = parent.child(method if known else "HTTP", CLIENT, attrs)
    trace = span.trace
    value = w3c.traceparent(trace.trace_id, span.span_id, trace.sampled)
    return span, w3c.inject(headers, value, trace.tracestate)


def answered(span: Span, status: int) -> None:
    span.attrs["http.response.status_code"] = status
    if status >= 400:  # a client span's error (semantic conventions: 4xx and 5xx)
        span.attrs["error.type"] = str(status)
        span.finish(str(status))
    else:
        span.finish()


def failed(span: Span, exc: BaseException) -> None:
    kind = type(exc).__name__
    span.attrs["error.type"] = kind
    span.finish(kind)


def call_span(backend: str, method: str, path: str) -> Span | None:
    """A fan-out call (edgegw.aggregate), made current in its task: its tries are its
    children."""
    parent = CURRENT.get()
    if parent is None or parent.trace.ended:
        return None
    attrs = {"edgegw.backend": backend, "http.request.method": method, "url.path": path}
    span = parent.child(f"aggregate {backend}", INTERNAL, attrs)
    CURRENT.set(span)  # the call runs in its own task (its own copy of the context)
    return span


def call_ended(span: Span, status: int, error: str) -> None:
    if status:
        span.attrs["http.response.status_code"] = status
    if error:
        span.attrs["error.type"] = error
    span.finish(error)


def filter_span(name: str, phase: str) -> Span | None:
    """A filter phase that paused or replied; begins when the filter said so."""
    parent = CURRENT.get()
    if parent is None or parent.trace.ended:
        return None
    attrs = {"edgegw.filter": name, "edgegw.filter.phase": phase}
    return parent.child(f"filter {name} {phase}", INTERNAL, attrs)


def filter_ended(span: Span, paused: bool, status: int | None) -> None:
    """``status``: the reply that ended the request there, None when it went on."""
    span.attrs["edgegw.filter.outcome"] = "reply" if status is not None else "continue"
    span.attrs["edgegw.filter.paused"] = paused
    if status is not None:
        span.attrs["http.response.status_code"] = status
    span.finish(str(status) if status is not None and status >= 500 else "")
