"""Request metrics and the JSON access log line."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest

from edgegw.observe import metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_observe_request_counts_by_route_and_status() -> None:
    ok = sample("edgegw_requests_total", route="t-metrics", status="200")
    bad = sample("edgegw_requests_total", route="t-metrics", status="502")
    count = sample("edgegw_request_duration_seconds_count", route="t-metrics")
    total = sample("edgegw_request_duration_seconds_sum", route="t-metrics")
    metrics.observe_request("t-metrics", 200, 0.25)
    metrics.observe_request("t-metrics", 200, 0.25)
    metrics.observe_request("t-metrics", 502, 0.5)
    metrics.flush()
    assert sample("edgegw_requests_total", route="t-metrics", status="200") == ok + 2
    assert sample("edgegw_requests_total", route="t-metrics", status="502") == bad + 1
    assert sample("edgegw_request_duration_seconds_count", route="t-metrics") == count + 3
    assert sample("edgegw_request_duration_seconds_sum", route="t-metrics") == total + 1.0


def test_observe_upstream_per_backend_and_outcome() -> None:
    ok = {"backend": "t-backend", "outcome": "ok"}
    timeout = {"backend": "t-backend", "outcome": "timeout"}
    before = sample("edgegw_upstream_duration_seconds_count", **ok)
    before_timeout = sample("edgegw_upstream_duration_seconds_count", **timeout)
    le = sample("edgegw_upstream_duration_seconds_bucket", **ok, le="0.01")
    metrics.observe_upstream("t-backend", "ok", 0.005)
    metrics.observe_upstream("t-backend", "ok", 3.0)
    metrics.observe_upstream("t-backend", "timeout", 5.0)
    metrics.flush()
    assert sample("edgegw_upstream_duration_seconds_count", **ok) == before + 2
    assert sample("edgegw_upstream_duration_seconds_count", **timeout) == before_timeout + 1
    after = sample("edgegw_upstream_duration_seconds_bucket", **ok, le="0.01")
    assert after == le + 1


def test_batched_histogram_equals_direct_observations() -> None:
    # Batching writes prometheus_client's per-bucket values itself: every sample must be
    # what Histogram.observe() would have produced for the same values.
    values = [0.0, 0.0049, 0.005, 0.0051, 0.1, 0.25, 1.0, 7.5, 10.0, 11.0, 1e6]
    direct = Histogram(
        "t_direct", "same buckets", ["backend", "outcome"], registry=CollectorRegistry()
    )
    for value in values:
        direct.labels("x", "ok").observe(value)
        metrics.observe_upstream("t-batched", "ok", value)
    metrics.flush()
    want = {
        (s.name.removeprefix("t_direct"), s.labels.get("le")): s.value
        for s in next(iter(direct.collect())).samples
        if not s.name.endswith("_created")
    }
    got = {
        (s.name.removeprefix("edgegw_upstream_duration_seconds"), s.labels.get("le")): s.value
        for s in next(iter(metrics.UPSTREAM_SECONDS.collect())).samples
        if s.labels.get("backend") == "t-batched" and not s.name.endswith("_created")
    }
    assert got == want


def test_private_histogram_writes_match_the_public_api() -> None:
    # edgegw.observe.metrics.add_observations writes prometheus_client's private per-bucket
    # values. prometheus_client is only bounded below in pyproject.toml: if a version
    # changes these internals, this test fails; fix add_observations (or pin the
    # version) before upgrading.
    values = [0.0, 0.005, 0.0051, 0.3, 2.5, 9.99, 10.0, 10.5, 1e9]
    public_registry, private_registry = CollectorRegistry(), CollectorRegistry()
    public = Histogram("t_h", "h", ["l"], buckets=metrics.BUCKETS, registry=public_registry)
    private = Histogram("t_h", "h", ["l"], buckets=metrics.BUCKETS, registry=private_registry)
    child = private.labels("x")
    assert hasattr(child, "_buckets") and hasattr(child, "_sum"), "prometheus_client changed"
    assert list(child._upper_bounds) == list(metrics.BUCKETS), "prometheus_client changed"
    for value in values:
        public.labels("x").observe(value)
    counts = [0] * len(metrics.BUCKETS)
    for value in values:
        counts[next(i for i, b in enumerate(metrics.BUCKETS) if value <= b)] += 1
    metrics.add_observations(child, counts, sum(values))

    def exposition(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert exposition(private_registry) == exposition(public_registry)
    assert 'le="+Inf"' in "\n".join(exposition(public_registry))


async def test_pending_samples_are_flushed_by_a_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics.flush()
    monkeypatch.setattr(metrics, "FLUSH_SECONDS", 0.05)
    before = sample("edgegw_requests_total", route="t-timer", status="200")
    metrics.observe_request("t-timer", 200, 0.01)
    assert sample("edgegw_requests_total", route="t-timer", status="200") == before
    await asyncio.sleep(0.2)
    assert sample("edgegw_requests_total", route="t-timer", status="200") == before + 1
