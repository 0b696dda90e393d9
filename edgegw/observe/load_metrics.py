"""Gauges of what a worker holds (requests in flight, backend connections) and the
backends' response status classes. Gauges are set at each ``metrics.flush`` from the live
objects, so nothing is counted per request for them."""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from edgegw.observe import metrics

IN_FLIGHT = Gauge(
    "edgegw_requests_in_flight",
    "Requests being served on the current configuration (every worker summed)",
    multiprocess_mode="livesum",
)
UPSTREAM_CONNECTIONS = Gauge(
    "edgegw_upstream_connections",
    "Open backend connections (state: active, idle), every worker summed",
    ["backend", "state"],
    multiprocess_mode="livesum",
)
UPSTREAM_RESPONSES = Counter(
    "edgegw_upstream_responses",
    "Backend responses by status class (code: 1xx to 5xx)",
    ["backend", "code"],
)
_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class _Pool(Protocol):
    name: str
    conns: set[Any]
    idle: list[Any]


class _App(Protocol):
    @property
    def inflight(self) -> int: ...


_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_apps: weakref.WeakSet[Any] = weakref.WeakSet()
_backends_seen: set[str] = set()
_responses: dict[str, list[int]] = {}  # backend -> responses per status class (_CLASSES)


def track_pool(pool: _Pool) -> None:
    _pools.add(pool)


def track_app(app: _App) -> None:
    _apps.add(app)


def upstream_response(backend: str, status: int) -> None:
    """One response from ``backend``. Called right after ``metrics.observe_upstream``
    (edgegw.upstream), whose ``flush_soon`` brings the flush that hands this on: no
    second timer check, and no label tuple per response."""
    counts = _responses.get(backend)
    if counts is None:
        counts = _responses[backend] = [0] * len(_CLASSES)
    counts[status // 100 if 100 <= status < 600 else 0] += 1


def _flush() -> None:
    for backend, counts in _responses.items():
        for index, count in enumerate(counts):
            if count:
                UPSTREAM_RESPONSES.labels(backend, _CLASSES[index]).inc(count)
                counts[index] = 0
    if _apps:
        IN_FLIGHT.set(sum(app.inflight for app in list(_apps)))
    totals = {name: [0, 0] for name in _backends_seen}  # gone ones report 0
    for pool in list(_pools):
        total = totals.setdefault(pool.name, [0, 0])
        idle = len(pool.idle)
        total[0] += len(pool.conns) - idle
        total[1] += idle
    for backend, (active, idle) in totals.items():
        UPSTREAM_CONNECTIONS.labels(backend, "active").set(active)
        UPSTREAM_CONNECTIONS.labels(backend, "idle").set(idle)
    _backends_seen.update(totals)


metrics.on_flush(_flush)
