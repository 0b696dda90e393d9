"""Spans as small records: what a request costs when tracing is on.

An SDK span (``opentelemetry.sdk.trace.Span``) is a heavy object (locks, attribute
validation, a processor call at its end); docs/benchmarks.md ("Tracing") measures it. A
request here records its spans as ``Span`` slots (ids, times, a name, a few attributes)
and, when its trace is to be exported, hands the list to the exporter thread
(``edgegw.tracing.export``), which builds the SDK's ``ReadableSpan`` objects there, off
the request path.
"""

from __future__ import annotations

import random
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextvars import Token

    from edgegw.tracing.tracer import Tracer

# OpenTelemetry span kinds (opentelemetry.trace.SpanKind values).
INTERNAL, SERVER, CLIENT = 0, 1, 2

#: The span new child spans hang under: the request's, an aggregate call's. Each request
#: runs in its own task, so in its own copy of the context; tasks it starts (fan-out
#: calls, filters' http_calls) copy it.
CURRENT: ContextVar[Span | None] = ContextVar("edgegw_span", default=None)
#: How many tries of the same request came before this one (edgegw.balance retries):
#: ``http.request.resend_count`` of the next upstream span.
RESEND: ContextVar[int] = ContextVar("edgegw_resend", default=0)

_bits = random.getrandbits  # the ids of the OpenTelemetry SDK's RandomIdGenerator


class Trace:
    """One request's spans; exported whole when sampled or when the request failed."""

    __slots__ = ("ended", "remote_parent", "sampled", "spans", "trace_id", "tracer",
                 "tracestate")  # fmt: skip

    def __init__(
        self, tracer: Tracer, trace_id: int, sampled: bool, remote_parent: int, tracestate: bytes
    ) -> None:
        self.tracer = tracer
        self.trace_id = trace_id
        self.sampled = sampled
        self.remote_parent = remote_parent  # the client's span id (0: a new trace)
        self.tracestate = tracestate
        self.spans: list[Span] = []
        # The request is over: a task that outlives it (a health check or a filter's tick
        # started from within it copies its context) makes no span in it.
        self.ended = False


class Span:
    """A finished or running span. ``attrs`` is a dict, except on the request's span,
    whose values are kept as a tuple that the exporter thread names (``tracer``)."""

    __slots__ = ("attrs", "end", "error", "kind", "name", "parent_id", "span_id", "start",
                 "token", "trace")  # fmt: skip

    def __init__(self, trace: Trace, parent_id: int, name: str, kind: int) -> None:
        self.trace = trace
        self.span_id = _bits(64) or 1
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.start = time.time_ns()
        self.end = 0
        self.attrs: Any = None
        self.error = ""  # the status description of a failed span (status ERROR)
        self.token: Token[Span | None] | None = None
        trace.spans.append(self)

    def child(self, name: str, kind: int, attrs: dict[str, Any]) -> Span:
        span = Span(self.trace, self.span_id, name, kind)
        span.attrs = attrs
        return span

    def finish(self, error: str = "") -> None:
        self.end = time.time_ns()
        self.error = error

    @property
    def trace_id(self) -> str:
        return f"{self.trace.trace_id:032x}"


def current_trace_id() -> str | None:
    """The running request's trace id (hex), for its error bodies and log lines."""
    span = CURRENT.get()
    return None if span is None else span.trace_id


def new_trace_id() -> int:
    return _bits(128) or 1
