"""Metrics per backend and endpoint, and the endpoints' state for ``/admin/status``.

Counters are summed in plain dicts and handed to prometheus_client at ``metrics.flush``
(the hot path never touches prometheus_client). State changes (health, ejection, panic)
are rare: they set gauges at once and rewrite this worker's ``upstreams-<pid>.json`` in
the runtime directory, which the admin listener serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from edgegw.observe import metrics

log = logging.getLogger("edgegw.balance")

REQUESTS = Counter(
    "edgegw_upstream_endpoint_requests", "Tries sent to an endpoint", ["backend", "endpoint"]
)
ERRORS = Counter(
    "edgegw_upstream_endpoint_errors",
    "Tries that failed (no answer, or a 5xx status)",
    ["backend", "endpoint"],
)
RETRIES = Counter("edgegw_upstream_retries", "Retries sent", ["backend"])
EJECTIONS = Counter(
    "edgegw_upstream_ejections", "Outlier ejections of an endpoint", ["backend", "endpoint"]
)
CIRCUIT_OPEN = Counter(
    "edgegw_upstream_circuit_open",
    "Requests or retries refused by an open circuit breaker (a limit, the retry budget)",
    ["backend", "limit"],
)
HEALTHY = Gauge(
    "edgegw_upstream_endpoint_healthy",
    "1 when the endpoint takes traffic (healthy, not ejected)",
    ["backend", "endpoint"],
    multiprocess_mode="livemin",
)
PANIC = Gauge(
    "edgegw_upstream_panic",
    "1 while no endpoint is healthy and all are used (panic mode)",
    ["backend"],
    multiprocess_mode="livemax",
)
STATUS_DELAY = 0.2  # seconds: state changes within this are written together

_counts: dict[tuple[Counter, tuple[str, ...]], int] = {}


def count(counter: Counter, labels: tuple[str, ...], n: int = 1) -> None:
    key = (counter, labels)
    _counts[key] = _counts.get(key, 0) + n
    metrics.flush_soon()


def _flush() -> None:
    # Tries are plain ints on the members (the per-request path); every try is timed by
    # metrics.observe_upstream, whose flush_soon brings this flush.
    for reporter in list(_reporters.values()):
        for endpoint, tries in reporter.tries():
            REQUESTS.labels(*endpoint).inc(tries)
    for (counter, labels), value in _counts.items():
        if value:
            counter.labels(*labels).inc(value)
    _counts.clear()


metrics.on_flush(_flush)


class Reporter(Protocol):
    """A live balancer, as seen here."""

    def report(self) -> tuple[str, dict[str, Any]]:
        """Its backend name and state (``/admin/status``)."""
        ...

    def tries(self) -> list[tuple[tuple[str, str], int]]:
        """(labels, tries) per endpoint since the last call."""
        ...


_reporters: dict[int, Reporter] = {}
_writer: asyncio.TimerHandle | None = None


def register(key: int, reporter: Reporter) -> None:
    _reporters[key] = reporter
    changed()


def unregister(key: int) -> None:
    if _reporters.pop(key, None) is not None:
        changed()


def snapshot() -> dict[str, Any]:
    """The state of every backend balanced in this process."""
    return dict(reporter.report() for reporter in list(_reporters.values()))


def changed() -> None:
    """Schedule a rewrite of the status file (workers of ``edgegw serve`` only)."""
    global _writer
    if _writer is not None or not os.environ.get("EDGEGW_RUNTIME_DIR"):
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    _writer = loop.call_later(STATUS_DELAY, _write)


def _write() -> None:
    global _writer
    _writer = None
    runtime = os.environ.get("EDGEGW_RUNTIME_DIR")
    if not runtime:
        return
    target = Path(runtime) / f"upstreams-{os.getpid()}.json"
    tmp = target.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "backends": snapshot()}))
        tmp.replace(target)
    except OSError as exc:
        log.warning("cannot write %s: %s", target, exc)
