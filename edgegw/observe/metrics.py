"""Request metrics (prometheus_client); the access log is edgegw/observe/access_log.py.

In ``serve`` every worker writes its samples under PROMETHEUS_MULTIPROC_DIR and the admin
listener sums them (edgegw/admin.py). Each sample written there is an mmap write under a
lock, five per request: a noticeable part of a proxied request. So the hot path only
counts in plain dicts, and ``flush()`` hands the sums to prometheus_client
at most ``FLUSH_SECONDS`` later (a loop timer), at shutdown, and before an in-process
scrape. /metrics of a multi-worker gateway therefore lags by up to ``FLUSH_SECONDS``.
Other modules batch their samples the same way through ``on_flush`` and ``flush_soon``
(the metrics filters define, edgegw/wasm/shared.py).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram

#: The histograms' bucket upper bounds (prometheus_client's defaults, +Inf last).
BUCKETS: tuple[float, ...] = Histogram.DEFAULT_BUCKETS
REQUESTS = Counter("edgegw_requests", "Requests answered", ["route", "status"])
REQUEST_SECONDS = Histogram(
    "edgegw_request_duration_seconds",
    "Time from request to last response byte",
    ["route"],
    buckets=BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "edgegw_upstream_duration_seconds",
    "Time until a backend's response headers, or until the call failed",
    ["backend", "outcome"],
    buckets=BUCKETS,
)
FLUSH_SECONDS = 1.0


def add_observations(child: Any, counts: list[int], total: float) -> None:
    """Add to histogram ``child`` (made with ``BUCKETS``) what observing values summing to
    ``total`` would, ``counts[i]`` of them in bucket i: one write per bucket, not one per
    observation.

    prometheus_client has no public API for this: this function, the only one in edgegw,
    writes its private per-bucket values (``_buckets``, ``_sum``). Its version is pinned by
    uv.lock but only bounded below in pyproject.toml: tests/test_metrics.py
    (test_private_histogram_writes_match_the_public_api) fails when these change.
    """
    for index, count in enumerate(counts):
        if count:
            child._buckets[index].inc(count)
    child._sum.inc(total)


class _Pending:
    """Observations of one histogram child not yet handed to prometheus_client."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.child = child
        self.bounds = bounds  # the histogram's bucket upper bounds, +Inf last
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # Histogram.observe puts a value in the first bucket whose upper bound is >= it,
        # and stores per-bucket (not cumulative) counts: the same as bisect_left here.
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def flush(self) -> None:
        if not self.total and not any(self.counts):
            return
        add_observations(self.child, self.counts, self.total)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0


_requests: dict[str, dict[int, int]] = {}  # route -> status -> count
_durations: dict[str, _Pending] = {}
_upstreams: dict[str, dict[str, _Pending]] = {}  # outcome -> backend -> pending
_labeled: dict[tuple[Any, tuple[str, ...]], _Pending] = {}  # (histogram, labels) -> pending
_counted: dict[tuple[Any, tuple[str, ...]], int] = {}  # (counter, labels) -> increment
_timer: asyncio.TimerHandle | None = None
_timer_loop: asyncio.AbstractEventLoop | None = None
_flush_hooks: list[Callable[[], None]] = []


def on_flush(hook: Callable[[], None]) -> None:
    """Call ``hook()`` at every ``flush``: it hands another module's pending samples to
    prometheus_client (that module calls ``flush_soon`` when it has some)."""
    _flush_hooks.append(hook)


def observe_request(route: str, status: int, seconds: float) -> None:
    # Two lookups rather than a (route, status) key: no tuple per request.
    by_status = _requests.get(route)
    if by_status is None:
        by_status = _requests[route] = {}
    by_status[status] = by_status.get(status, 0) + 1
    pending = _durations.get(route)
    if pending is None:
        pending = _durations[route] = _Pending(REQUEST_SECONDS.labels(route))
    pending.observe(seconds)
    flush_soon()


def observe_upstream(backend: str, outcome: str, seconds: float) -> None:
    """One call to ``backend`` (proxied, fan-out or http_call); ``outcome`` is ``ok`` or
    the ``outcome`` of the ``UpstreamError`` subclass that ended it (edgegw/errors.py)."""
    # Two lookups rather than a (backend, outcome) key: no tuple per call.
    by_backend = _upstreams.get(outcome)
    if by_backend is None:
        by_backend = _upstreams[outcome] = {}
    pending = by_backend.get(backend)
    if pending is None:
        pending = by_backend[backend] = _Pending(UPSTREAM_SECONDS.labels(backend, outcome))
    pending.observe(seconds)
    flush_soon()


def observe(
    histogram: Any, bounds: tuple[float, ...], labels: tuple[str, ...], seconds: float
) -> None:
    """One observation of ``histogram`` (made with ``buckets=bounds``, +Inf last) for
    ``labels``, batched."""
    key = (histogram, labels)
    pending = _labeled.get(key)
    if pending is None:
        pending = _labeled[key] = _Pending(histogram.labels(*labels), bounds)
    pending.observe(seconds)
    flush_soon()


def count(counter: Any, labels: tuple[str, ...], value: int = 1) -> None:
    """Add ``value`` to ``counter`` for ``labels``, batched."""
    key = (counter, labels)
    _counted[key] = _counted.get(key, 0) + value
    flush_soon()


def flush_soon() -> None:
    """Make sure a ``flush`` is due within ``FLUSH_SECONDS`` (at once without a loop)."""
    global _timer, _timer_loop
    if _timer is not None and _timer_loop is not None and not _timer_loop.is_closed():
        return  # already due (a timer of a closed loop never fires)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop to defer to
        flush()
        return
    _timer, _timer_loop = loop.call_later(FLUSH_SECONDS, flush), loop


def flush() -> None:
    """Hand every pending observation to prometheus_client."""
    global _timer, _timer_loop
    if _timer is not None:
        _timer.cancel()
    _timer = _timer_loop = None
    for route, by_status in _requests.items():
        for status, count in by_status.items():
            REQUESTS.labels(route, str(status)).inc(count)
        by_status.clear()
    for pending in _durations.values():
        pending.flush()
    for by_backend in _upstreams.values():
        for pending in by_backend.values():
            pending.flush()
    for pending in _labeled.values():
        pending.flush()
    for (counter, labels), value in _counted.items():
        if value:
            counter.labels(*labels).inc(value)
    _counted.clear()
    for hook in _flush_hooks:
        hook()
