"""Span records → the bytes of an OTLP ``ExportTraceServiceRequest`` (protobuf wire
format, https://protobuf.dev/programming-guides/encoding/; messages of
opentelemetry-proto's trace.proto, common.proto, resource.proto).

Why not the SDK's encoder: it takes ``ReadableSpan`` objects and spends most of its time
grouping them by resource (a JSON dump of the resource per span) and building message
objects; on one core, at every request sampled, that work in the export thread takes the
GIL from the requests (docs/benchmarks.md, "Tracing"). All our spans share one resource
and one scope, and most attribute pairs repeat from request to request (method, route,
status, backend, addresses), so this writes the fields directly and keeps the encoded
bytes of repeated pairs. tests/unit/test_tracing_otlp.py decodes the result with
opentelemetry-proto and compares it with the messages built field by field.
"""

from __future__ import annotations

import struct
from typing import Any

from edgegw.tracing.spans import SERVER, Span
from edgegw.tracing.tracer import server_attributes

# trace.proto Span.SpanKind: our kinds are opentelemetry.trace.SpanKind's (0, 1, 2).
_KIND = {0: b"\x30\x01", 1: b"\x30\x02", 2: b"\x30\x03"}  # field 6, varint
# trace.proto SpanFlags: bits 0-7 the W3C trace flags (every exported span is sampled),
# bit 8 "has is_remote", bit 9 "the parent is remote". Field 16, fixed32.
_FLAGS = b"\x85\x01" + struct.pack("<I", 0x101)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x301)
_STATUS_ERROR = b"\x18\x02"  # Status.code (field 3) = STATUS_CODE_ERROR
_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
# Attribute pairs whose values come from a small set (never a path, a port of the
# client, an id): their encoded bytes are kept, up to _CACHE_MAX of them.
_CACHED = frozenset({
    "http.request.method", "url.scheme", "network.protocol.name", "network.protocol.version",
    "edgegw.route", "http.route", "http.response.status_code", "error.type", "edgegw.backend",
    "server.address", "server.port", "client.address", "edgegw.filter", "edgegw.filter.phase",
    "edgegw.filter.outcome", "edgegw.filter.paused", "http.request.resend_count",
})  # fmt: skip
_CACHE_MAX = 4096
_PER_REQUEST = frozenset({"url.path", "client.port"})  # never in Encoder.servers


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len(tag: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2); ``tag`` < 16."""
    return bytes((tag << 3 | 2,)) + varint(len(data)) + data


def any_value(item: Any) -> bytes:
    """common.proto AnyValue: string 1, bool 2, int 3, double 4."""
    if isinstance(item, bool):
        return b"\x10\x01" if item else b"\x10\x00"
    if isinstance(item, int):
        return b"\x18" + varint(item & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement
    if isinstance(item, float):
        return b"\x21" + _double(item)
    return _len(1, str(item).encode())


def key_value(key: str, item: Any) -> bytes:
    """common.proto KeyValue (key 1, value 2), as a repeated field 1 or 9 entry's body."""
    return _len(1, key.encode()) + _len(2, any_value(item))


class Encoder:
    """Encodes batches for one resource (``service.name`` and the SDK's resource
    attributes) and one instrumentation scope (name, version)."""

    def __init__(self, resource: dict[str, Any], scope: tuple[str, str]) -> None:
        # ResourceSpans.resource (1): Resource.attributes (1).
        attrs = b"".join(_len(1, key_value(k, v)) for k, v in resource.items())
        self.resource = _len(1, attrs)
        # ScopeSpans.scope (1): InstrumentationScope name (1), version (2).
        self.scope = _len(1, _len(1, scope[0].encode()) + _len(2, scope[1].encode()))
        self.pairs: dict[tuple[str, Any], bytes] = {}
        # The request span's attributes but its path and client port, encoded together:
        # the same route, status and addresses give the same bytes.
        self.servers: dict[tuple[Any, ...], bytes] = {}

    def encode(self, batch: list[Span]) -> bytes:
        spans = b"".join(_len(2, self.span(s)) for s in batch)  # ScopeSpans.spans (2)
        scoped = _len(2, self.scope + spans)  # ResourceSpans.scope_spans (2)
        return _len(1, self.resource + scoped)  # ExportTraceServiceRequest.resource_spans

    def attribute(self, key: str, item: Any) -> bytes:
        """Span.attributes (9) entry."""
        if key not in _CACHED:
            return b"\x4a" + _lenbody(key_value(key, item))
        pair = (key, item)
        encoded = self.pairs.get(pair)
        if encoded is None:
            if len(self.pairs) >= _CACHE_MAX:
                self.pairs.clear()
            encoded = self.pairs[pair] = b"\x4a" + _lenbody(key_value(key, item))
        return encoded

    def span(self, span: Span) -> bytes:
        """trace.proto Span, fields in number order."""
        trace = span.trace
        attrs = span.attrs
        parts = [
            b"\x0a\x10" + trace.trace_id.to_bytes(16, "big"),  # trace_id (1)
            b"\x12\x08" + span.span_id.to_bytes(8, "big"),  # span_id (2)
        ]
        if trace.tracestate:
            parts.append(_len(3, trace.tracestate))  # trace_state (3)
        if span.parent_id:
            parts.append(b"\x22\x08" + span.parent_id.to_bytes(8, "big"))  # parent_span_id
        parts.append(_len(5, span.name.encode()))  # name (5)
        parts.append(_KIND[span.kind])
        parts.append(b"\x39" + _fixed64(span.start))  # start_time_unix_nano (7)
        parts.append(b"\x41" + _fixed64(span.end or span.start))  # end_time_unix_nano (8)
        if span.kind == SERVER and isinstance(attrs, tuple):
            parts.append(self.server(attrs))
        elif attrs:
            # A try still running when its request ended (a filter's http_call it did not
            # wait for) may set attributes meanwhile: copy them at once (one C call).
            parts.extend(self.attribute(k, v) for k, v in tuple(attrs.items()))
        if span.error:  # status (15): message (2), code (3)
            parts.append(b"\x7a" + _lenbody(_len(2, span.error.encode()) + _STATUS_ERROR))
        remote = span.parent_id and span.parent_id == trace.remote_parent
        parts.append(_FLAGS_REMOTE if remote else _FLAGS)
        return b"".join(parts)

    def server(self, values: tuple[Any, ...]) -> bytes:
        """The request span's attributes (``tracer.server_attributes``)."""
        path, client = values[1], values[8]
        key = (*values[:1], *values[2:8], client[0] if client else None, *values[9:])
        encoded = self.servers.get(key)
        if encoded is None:
            if len(self.servers) >= _CACHE_MAX:
                self.servers.clear()
            attrs = server_attributes(values)
            encoded = self.servers[key] = b"".join(
                self.attribute(k, v) for k, v in attrs.items() if k not in _PER_REQUEST
            )
        encoded += self.attribute("url.path", path)
        if client:
            encoded += self.attribute("client.port", client[1])
        return encoded


def _lenbody(data: bytes) -> bytes:
    return varint(len(data)) + data
