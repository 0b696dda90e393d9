"""The OTLP/HTTP collector of the tracing scenarios: both servers export to it; it
decodes each ``ExportTraceServiceRequest`` and counts spans per ``service.name``.

It runs as a thread of the bench process (not pinned: it takes well under a percent of a
core at these rates); ``snippets`` give each server's config for it.
"""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_ANSWER = ExportTraceServiceResponse().SerializeToString()
spans: Counter[str] = Counter()  # service.name -> spans received
_server: ThreadingHTTPServer | None = None  # _Server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as both exporters expect

    def do_POST(self) -> None:
        body = self._body()
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            name = next((a.value.string_value for a in rs.resource.attributes
                         if a.key == "service.name"), "?")  # fmt: skip
            spans[name] += sum(len(ss.spans) for ss in rs.scope_spans)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(_ANSWER)))
        self.end_headers()
        self.wfile.write(_ANSWER)

    def _body(self) -> bytes:
        """The request body, by Content-Length or chunked (Envoy's exporter streams)."""
        length = self.headers["content-length"]
        if length is not None:
            return self.rfile.read(int(length))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def log_message(self, *_args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        errors[0] += 1  # an exporter that gave up on a slow answer (counted, not printed)


errors = [0]


def port() -> int:
    """The sink's port (started on first use, for the rest of the process)."""
    global _server
    if _server is None:
        _server = _Server(("127.0.0.1", 0), _Handler)
        threading.Thread(target=_server.serve_forever, daemon=True).start()
    return int(_server.server_address[1])


def envoy_tracing(ratio: float) -> tuple[str, str]:
    """(the HttpConnectionManager ``tracing:`` lines, the collector's cluster) for Envoy's
    OpenTelemetry tracer over OTLP/HTTP, sampling ``ratio``, a span per upstream request
    as edgegw makes (``spawn_upstream_span``)."""
    hcm = f"""
          tracing:
            random_sampling: {{value: {ratio * 100}}}
            spawn_upstream_span: true
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: envoy
                http_service:
                  http_uri:
                    uri: "http://127.0.0.1:{port()}/v1/traces"
                    cluster: otlp
                    timeout: 5s"""
    cluster = f"""  - name: otlp
    type: STATIC
    load_assignment:
      cluster_name: otlp
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {port()}}}}}
"""
    return hcm, cluster


def edgegw_tracing(ratio: float) -> str:
    return (
        f'tracing: {{otlp_endpoint: "http://127.0.0.1:{port()}", sample_ratio: {ratio}, '
        "service_name: edgegw}\n"
    )
