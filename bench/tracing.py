"""What tracing costs a request, in process: edgegw's span records against the
OpenTelemetry SDK's spans, for the same two spans (the request's and one upstream try)
with the same attributes.

    .venv/bin/python bench/tracing.py

Prints µs per request on the request path (best of ROUNDS), and the export thread's
µs per request (SDK ReadableSpans built from the records, OTLP-encoded). The served
figures, side by side with Envoy, are bench/run.py's ``tracing`` scenarios.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import write_block
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, set_span_in_context

from edgegw.model import TracingConfig
from edgegw.tracing.hooks import answered, upstream_try
from edgegw.tracing.otlp import Encoder
from edgegw.tracing.spans import Span
from edgegw.tracing.tracer import Tracer

N = int(os.environ.get("BENCH_TRACING_N", "20000"))
ROUNDS = 5
HEADERS = [(b"host", b"gw"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
SCOPE = {"scheme": "http", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5555),
         "http_version": "1.1"}  # fmt: skip


def best(fn: Callable[[], None]) -> float:
    """µs per call, the best of ROUNDS runs of N calls."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(N):
            fn()
        times.append((time.perf_counter() - start) / N * 1e6)
    return min(times)


def records() -> tuple[float, list[Span]]:
    kept: list[Span] = []
    config = TracingConfig(otlp_endpoint="http://127.0.0.1:9/v1/traces")
    tracer = Tracer(config, {"all": "/"}, kept.extend)

    def request() -> None:
        span, headers = tracer.begin(HEADERS, "GET", SCOPE)
        attempt, headers = upstream_try("backend", "GET", "http", "127.0.0.1", 9000, "/bench",
                                        headers)  # fmt: skip
        assert attempt is not None
        answered(attempt, 200)
        tracer.end(span, "all", 200, "/bench", "backend", SCOPE, "GET")
        if len(kept) > 10_000:
            kept.clear()

    return best(request), kept


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if len(self.spans) < 1024:
            self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def sdk() -> tuple[float, list[ReadableSpan]]:
    kept = _Keep()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(kept))  # on_end: about a queue's cost
    tracer = provider.get_tracer("bench")

    def request() -> None:
        server = tracer.start_span("GET /", kind=SpanKind.SERVER, attributes={
            "http.request.method": "GET", "url.path": "/bench", "url.scheme": "http",
            "network.protocol.version": "1.1", "edgegw.route": "all", "http.route": "/",
            "server.address": "127.0.0.1", "server.port": 8080,
            "client.address": "127.0.0.1", "client.port": 5555})  # fmt: skip
        child = tracer.start_span("GET", set_span_in_context(server), SpanKind.CLIENT, {
            "http.request.method": "GET", "server.address": "127.0.0.1", "server.port": 9000,
            "url.full": "http://127.0.0.1:9000/bench", "edgegw.backend": "backend"})  # fmt: skip
        child.set_attribute("http.response.status_code", 200)
        child.end()
        server.set_attribute("http.response.status_code", 200)
        server.end()

    return best(request), kept.spans


def per_request(encode: Callable[[], object], spans: int) -> float:
    """µs per request (2 spans) of encoding a batch of ``spans`` spans."""
    runs = 10
    start = time.perf_counter()
    for _ in range(runs):
        encode()
    return (time.perf_counter() - start) / (runs * spans / 2) * 1e6


def main() -> int:
    ours, kept = records()
    theirs, readable = sdk()
    batch = kept[:512]
    encoder = Encoder({"service.name": "bench"}, ("edgegw", "0"))
    encoded = per_request(lambda: encoder.encode(batch), len(batch))
    sdk_encoded = per_request(lambda: encode_spans(readable[:512]).SerializeToString(),
                              len(readable[:512]))  # fmt: skip
    text = "\n".join([
        "| per request, 2 spans (request + upstream try) | µs |",
        "|---|---:|",
        f"| request path: edgegw span records | {ours:.1f} |",
        f"| request path: OpenTelemetry SDK spans (start, attributes, end) | {theirs:.1f} |",
        f"| export thread: edgegw's OTLP encoding of the records | {encoded:.1f} |",
        f"| export thread: the SDK's OTLP encoding of its ReadableSpans | {sdk_encoded:.1f} |",
    ])  # fmt: skip
    info = f"best of {ROUNDS} runs of {N:,} requests, in process; {time.ctime()}"
    print(text + "\n\n" + info)
    write_block("tracing-cost", f"{text}\n\n_{info}_", "Tracing: the cost of a span")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
