"""Recent traffic per route for the admin UI's Overview: req/s, error rate, p50/p99.

Each call of ``LiveMetrics.sample`` reads the same samples ``/metrics`` serves (every
worker's, summed by prometheus_client's multiprocess collector: edgegw/admin.py
``render_metrics``) and keeps the last ``WINDOW`` seconds of them; the windows are the
differences between consecutive samples. Sampling happens when the endpoint is polled (the
UI polls every second), so an admin nobody watches does no work, and the history starts
when a UI opens. Workers hand their counts to prometheus_client at most
``metrics.FLUSH_SECONDS`` late, so the newest window can lag by that much.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from edgegw.observe import metrics

WINDOW = 60.0  # seconds of history kept
MIN_STEP = 0.5  # seconds: polls closer than this share a sample


@dataclass
class RouteTotals:
    count: float = 0.0
    errors: float = 0.0  # 5xx answers
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(metrics.BUCKETS))


@dataclass
class Sample:
    at: float
    routes: dict[str, RouteTotals]
    filter_calls: dict[str, float]  # calls into the filter's stream callbacks
    filter_failures: dict[str, float]  # those that failed (outcome "fail")
    circuit_open: dict[str, float]


def _collect() -> Any:
    from prometheus_client import REGISTRY, CollectorRegistry

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry.collect()
    return REGISTRY.collect()


def read_sample() -> Sample:
    """The cumulative totals now (file I/O in multiprocess mode: call off the loop, after
    ``metrics.flush()`` on it)."""
    routes: dict[str, RouteTotals] = {}
    calls: dict[str, float] = {}
    failures: dict[str, float] = {}
    circuit: dict[str, float] = {}
    index = {bound: i for i, bound in enumerate(metrics.BUCKETS)}
    for family in _collect():
        for s in family.samples:
            if s.name == "edgegw_requests_total":
                totals = routes.setdefault(s.labels["route"], RouteTotals())
                totals.count += s.value
                if s.labels.get("status", "").startswith("5"):
                    totals.errors += s.value
            elif s.name == "edgegw_request_duration_seconds_bucket":
                i = index.get(float(s.labels["le"]))
                if i is not None:  # cumulative counts, as exposed
                    routes.setdefault(s.labels["route"], RouteTotals()).buckets[i] += s.value
            elif s.name == "edgegw_filter_outcomes_total":  # edgegw/wasm/filter_metrics.py
                name = s.labels["filter"]
                calls[name] = calls.get(name, 0) + s.value
                if s.labels["outcome"] == "fail":
                    failures[name] = failures.get(name, 0) + s.value
            elif s.name == "edgegw_upstream_circuit_open_total":
                circuit[s.labels["backend"]] = circuit.get(s.labels["backend"], 0) + s.value
    return Sample(time.time(), routes, calls, failures, circuit)


def quantile(q: float, cumulative: list[float]) -> float | None:
    """Seconds below which ``q`` of the observations fall, interpolated linearly inside a
    bucket as PromQL's histogram_quantile does; None without observations."""
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(metrics.BUCKETS, cumulative, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower_bound  # the highest finite bound, as histogram_quantile
            span = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / span)
        lower_bound, lower_count = bound, count
    return lower_bound


def _delta(new: RouteTotals, old: RouteTotals | None) -> RouteTotals:
    if old is None:
        return new

    # A counter lower than before (a worker's files removed) restarts from zero.
    def sub(a: float, b: float) -> float:
        return a - b if a >= b else a

    return RouteTotals(
        sub(new.count, old.count),
        sub(new.errors, old.errors),
        [sub(a, b) for a, b in zip(new.buckets, old.buckets, strict=True)],
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class LiveMetrics:
    """The last ``WINDOW`` seconds of samples, and the per-route series they give."""

    def __init__(self) -> None:
        self.samples: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        while self.samples and sample.at - self.samples[0].at > WINDOW:
            self.samples.popleft()

    def due(self) -> bool:
        return not self.samples or time.time() - self.samples[-1].at >= MIN_STEP

    def series(self, route_names: list[str]) -> dict[str, Any]:
        """Per route: one point per window (``t``, ``rps``, ``error_rate``, ``p50_ms``,
        ``p99_ms``) and the same over the whole history (``summary``)."""
        samples = list(self.samples)
        names = list(route_names)
        if samples:
            names += sorted(set(samples[-1].routes) - set(names))
        out: dict[str, Any] = {}
        for name in names:
            points = []
            for old, new in pairwise(samples):
                d = _delta(new.routes.get(name, RouteTotals()), old.routes.get(name))
                points.append(_point(new.at, new.at - old.at, d))
            summary = None
            if len(samples) > 1:
                first = samples[0].routes.get(name)
                d = _delta(samples[-1].routes.get(name, RouteTotals()), first)
                summary = _point(samples[-1].at, samples[-1].at - samples[0].at, d)
            out[name] = {"points": points, "summary": summary}
        return out

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None


def _point(at: float, seconds: float, d: RouteTotals) -> dict[str, Any]:
    return {
        "t": round(at, 3),
        "rps": round(d.count / seconds, 3) if seconds > 0 else 0.0,
        "error_rate": round(d.errors / d.count, 4) if d.count else 0.0,
        "p50_ms": _ms(quantile(0.5, d.buckets)),
        "p99_ms": _ms(quantile(0.99, d.buckets)),
    }
