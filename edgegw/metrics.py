"""Request metrics (prometheus_client) and the JSON access log.

In ``serve`` every worker writes its samples under PROMETHEUS_MULTIPROC_DIR and the admin
listener sums them (edgegw/admin.py). Labelled children are cached: ``labels()`` costs
more than the increment itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import Counter, Histogram

REQUESTS = Counter("edgegw_requests", "Requests answered", ["route", "status"])
REQUEST_SECONDS = Histogram(
    "edgegw_request_duration_seconds", "Time from request to last response byte", ["route"]
)
UPSTREAM_SECONDS = Histogram(
    "edgegw_upstream_duration_seconds", "Time until a backend's response headers", ["backend"]
)

access_log = logging.getLogger("edgegw.access")

_requests: dict[tuple[str, int], Any] = {}
_durations: dict[str, Any] = {}
_upstreams: dict[str, Any] = {}


def observe_request(route: str, status: int, seconds: float) -> None:
    child = _requests.get((route, status))
    if child is None:
        child = _requests[(route, status)] = REQUESTS.labels(route, str(status))
    child.inc()
    hist = _durations.get(route)
    if hist is None:
        hist = _durations[route] = REQUEST_SECONDS.labels(route)
    hist.observe(seconds)


def observe_upstream(backend: str, seconds: float) -> None:
    hist = _upstreams.get(backend)
    if hist is None:
        hist = _upstreams[backend] = UPSTREAM_SECONDS.labels(backend)
    hist.observe(seconds)


def log_access(
    *,
    route: str,
    method: str,
    path: str,
    status: int,
    seconds: float,
    backend: str | None,
    bytes_in: int,
    bytes_out: int,
    client: str,
    request_id: str,
) -> None:
    """One JSON line on logger ``edgegw.access``."""
    access_log.info(
        json.dumps(
            {
                "route": route,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "backend": backend,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "client": client,
                "request_id": request_id,
            },
            separators=(",", ":"),
        )
    )
