"""edgegw/tracing/otlp.py writes OTLP protobuf by hand: opentelemetry-proto must read
back exactly the spans recorded."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from edgegw.model import TracingConfig
from edgegw.tracing import hooks
from edgegw.tracing.otlp import Encoder
from edgegw.tracing.spans import Span
from edgegw.tracing.tracer import Tracer

SCOPE = {"scheme": "http", "server": ("127.0.0.1", 8080), "client": ("10.0.0.1", 5555)}
PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _value(any_value: object) -> object:
    kind = any_value.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(any_value, kind)


def test_records_decode_as_recorded() -> None:
    kept: list[Span] = []
    tracer = Tracer(
        TracingConfig(otlp_endpoint="http://c/v1/traces"), {"r": "/a/{id}"}, kept.extend
    )
    headers = [(b"traceparent", PARENT), (b"tracestate", b"k=v")]
    root, headers = tracer.begin(headers, "GET", SCOPE)
    attempt, _sent = hooks.upstream_try("b", "GET", "http", "127.0.0.1", 9, "/x?q=1", headers)
    assert attempt is not None
    attempt.attrs["big"] = -(1 << 40)
    attempt.attrs["ratio"] = 0.5
    hooks.failed(attempt, TimeoutError())
    tracer.end(root, "r", 503, "/a/7?q=1", "b", SCOPE, "GET")
    assert len(kept) == 2

    encoder = Encoder({"service.name": "svc", "n": 3}, ("edgegw", "1.2"))
    data = encoder.encode(kept) + encoder.encode(kept)  # repeated fields concatenate
    request = ExportTraceServiceRequest.FromString(data)
    assert len(request.resource_spans) == 2
    rs = request.resource_spans[0]
    assert {a.key: _value(a.value) for a in rs.resource.attributes} == {
        "service.name": "svc",
        "n": 3,
    }
    [ss] = rs.scope_spans
    assert (ss.scope.name, ss.scope.version) == ("edgegw", "1.2")
    server, client = ss.spans
    assert server.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert server.parent_span_id.hex() == "b7ad6b7169203331"
    assert server.span_id == root.span_id.to_bytes(8, "big")
    assert server.trace_state == "k=v"
    assert server.name == "GET /a/{id}" and server.kind == PbSpan.SPAN_KIND_SERVER
    assert (server.start_time_unix_nano, server.end_time_unix_nano) == (root.start, root.end)
    assert server.status.code == Status.STATUS_CODE_ERROR and server.status.message == "503"
    assert server.flags == 0x301  # sampled, has is_remote, the parent is remote
    attrs = {a.key: _value(a.value) for a in server.attributes}
    assert attrs["http.response.status_code"] == 503 and attrs["url.path"] == "/a/7"
    assert attrs["http.route"] == "/a/{id}" and attrs["client.address"] == "10.0.0.1"
    assert client.parent_span_id == server.span_id and client.kind == PbSpan.SPAN_KIND_CLIENT
    assert client.flags == 0x101
    cattrs = {a.key: _value(a.value) for a in client.attributes}
    assert cattrs["big"] == -(1 << 40) and cattrs["ratio"] == 0.5
    assert cattrs["url.full"] == "http://127.0.0.1:9/x" and cattrs["server.port"] == 9
    assert cattrs["error.type"] == "TimeoutError"
    assert client.status.message == "TimeoutError"
