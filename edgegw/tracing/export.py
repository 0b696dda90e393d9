"""Export off the request path: one thread per process sends the spans of ended traces
to the OTLP/HTTP collector with the OpenTelemetry SDK's exporter.

What ``BatchSpanProcessor`` does, on our span records (``edgegw.tracing.spans``): a
bounded queue (a full one drops, counted), batches of ``MAX_BATCH``, sent every
``SCHEDULE_DELAY`` or as soon as a batch is full, the rest flushed at close. Spans are
encoded here, in this thread (``edgegw.tracing.otlp``). A dead collector costs the
requests nothing: the export fails (``OTLPSpanExporter`` retries within its timeout,
``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT``, 10 s by default), meanwhile the queue fills and
drops, and ``edgegw_tracing_spans_total`` counts both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from prometheus_client import Counter

from edgegw import __version__
from edgegw.model import TracingConfig
from edgegw.tracing.otlp import Encoder
from edgegw.tracing.spans import Span

log = logging.getLogger("edgegw.tracing")

# BatchSpanProcessor's defaults (OTEL_BSP_*): queue, batch, delay.
MAX_QUEUE = 2048
MAX_BATCH = 512
SCHEDULE_DELAY = 1.0  # seconds
CLOSE_TIMEOUT = 5.0  # seconds close() waits for the last export
WARN_EVERY = 60.0  # seconds between two warnings about a failing collector
SPANS = Counter(
    "edgegw_tracing_spans",
    "Spans of ended traces: exported, failed (the collector did not take them) or "
    "dropped (the export queue was full)",
    ["outcome"],
)
# The SDK exporter logs every failed batch and every retry: with a dead collector that is
# a line per batch and worker. ``Exporter`` warns at most every WARN_EVERY instead.
logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)

_lock = threading.Lock()
_shared: dict[tuple[Any, ...], Exporter] = {}


def exporter_for(config: TracingConfig) -> Exporter:
    """The process's exporter for ``config`` (a reload with the same ``tracing:`` keeps
    it); each call takes a reference, ``Exporter.release`` gives it back."""
    key = (config.otlp_endpoint, config.service_name, tuple(sorted(config.headers.items())))
    with _lock:
        exporter = _shared.get(key)
        if exporter is None:
            exporter = _shared[key] = Exporter(config, key)
        exporter.refs += 1
        return exporter


class Exporter:
    def __init__(self, config: TracingConfig, key: tuple[Any, ...]) -> None:
        self.key = key
        self.refs = 0
        self.dropped = 0  # written by the request path only; read here
        self._reported = 0
        self._queue: deque[Span] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._warned = 0.0
        self._otlp = OTLPSpanExporter(endpoint=config.otlp_endpoint, headers=dict(config.headers))
        # The SDK's resource: service.name, telemetry.sdk.*, OTEL_RESOURCE_ATTRIBUTES.
        resource = Resource.create({"service.name": config.service_name})
        self._encoder = Encoder(dict(resource.attributes), ("edgegw", __version__))

    def submit(self, spans: list[Span]) -> None:
        """Queue an ended trace (the request path: a deque append, nothing more)."""
        queue = self._queue
        if self._closed or len(queue) + len(spans) > MAX_QUEUE:
            self.dropped += len(spans)
            return
        queue.extend(spans)
        if self._thread is None:  # started on first use: never in a process that forks
            self._thread = threading.Thread(target=self._run, name="edgegw-otlp", daemon=True)
            self._thread.start()
        if len(queue) >= MAX_BATCH and not self._wake.is_set():
            self._wake.set()

    def release(self) -> None:
        """Drop one reference; the last one flushes and stops the thread."""
        with _lock:
            self.refs -= 1
            if self.refs > 0:
                return
            if _shared.get(self.key) is self:
                del _shared[self.key]
        self.close()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT)
        self._otlp.shutdown()  # type: ignore[no-untyped-call]
        self._count_drops()

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(SCHEDULE_DELAY)
            self._wake.clear()
            closing = self._closed
            while queue:
                batch = [queue.popleft() for _ in range(min(MAX_BATCH, len(queue)))]
                self._export(batch)
            self._count_drops()
            if closing:
                return

    def _export(self, batch: list[Span]) -> None:
        try:
            data = self._encoder.encode(batch)
            # The SDK exporter's HTTP client: its retries, timeout, headers, compression.
            # Private (it takes encoded bytes; ``export`` takes ReadableSpans, whose
            # encoding costs more than the rest of tracing: edgegw/tracing/otlp.py);
            # tests/integration/test_tracing.py fails if it changes.
            ok = self._otlp._client.export(data).success
        except Exception:  # the exporter's own bug must not end the thread
            log.exception("tracing: exporting %d spans failed", len(batch))
            ok = False
        if ok:
            SPANS.labels("exported").inc(len(batch))
            return
        SPANS.labels("failed").inc(len(batch))
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning("tracing: the collector did not take %d spans (%s)", len(batch),
                        self._otlp._endpoint)  # fmt: skip

    def _count_drops(self) -> None:
        dropped = self.dropped
        if dropped > self._reported:
            SPANS.labels("dropped").inc(dropped - self._reported)
            self._reported = dropped
