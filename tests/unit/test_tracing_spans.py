"""Span records: parents, the current span, and nothing added to an ended trace."""

from __future__ import annotations

import contextvars

from edgegw.model import TracingConfig
from edgegw.tracing import CURRENT, hooks
from edgegw.tracing.spans import Span
from edgegw.tracing.tracer import Tracer, server_attributes

SCOPE = {"scheme": "http", "server": ("127.0.0.1", 8080), "client": ("10.0.0.1", 5555)}


def test_a_task_outliving_its_request_adds_nothing_to_the_trace() -> None:
    """A task started inside a request copies its context (asyncio tasks do); after the
    request ended, a call it makes gets no span and no traceparent of that trace."""
    exported: list[Span] = []
    tracer = Tracer(TracingConfig(otlp_endpoint="http://c/v1/traces"), {}, exported.extend)
    root, _headers = tracer.begin([], "GET", SCOPE)
    leftover = contextvars.copy_context()  # what a task started now would run in
    attempt, sent = hooks.upstream_try("b", "GET", "http", "h", 1, "/", [])
    assert attempt is not None and attempt.parent_id == root.span_id
    assert sent[0][0] == b"traceparent"
    tracer.end(root, "r", 200, "/", "b", SCOPE, "GET")
    assert CURRENT.get() is None  # reset when the request span ended
    assert len(exported) == 2

    late = leftover.run(hooks.upstream_try, "b", "GET", "http", "h", 1, "/", [(b"x", b"y")])
    assert late == (None, [(b"x", b"y")])
    assert leftover.run(hooks.call_span, "b", "GET", "/") is None
    assert leftover.run(hooks.filter_span, "f", "request_headers") is None
    assert len(root.trace.spans) == 2


def test_an_unknown_method_makes_no_span_name_of_its_own() -> None:
    exported: list[Span] = []
    tracer = Tracer(TracingConfig(otlp_endpoint="http://c/v1/traces"), {"r": "/a"}, exported.extend)
    root, _headers = tracer.begin([], "BREW", SCOPE)
    attempt, _sent = hooks.upstream_try("b", "BREW", "http", "h", 1, "/", [])
    assert attempt is not None and attempt.name == "HTTP"
    assert attempt.attrs["http.request.method"] == "_OTHER"
    assert attempt.attrs["http.request.method_original"] == "BREW"
    tracer.end(root, "r", 200, "/a", "b", SCOPE, "BREW")
    assert root.name == "HTTP /a"
    attrs = server_attributes(root.attrs)
    assert attrs["http.request.method"] == "_OTHER"
    assert attrs["http.request.method_original"] == "BREW"
