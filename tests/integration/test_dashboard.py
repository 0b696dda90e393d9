"""Every metric the Grafana dashboard (deploy/grafana-dashboard.json) queries is in a real
/metrics scrape of a gateway that served requests through a filter, the store and a
backend; and the RED, filter, store and connection families hold the values expected."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, GatewayProcess, LoopbackBackend

RunGateway = Callable[..., GatewayProcess]
MakeBackend = Callable[..., LoopbackBackend]
RATE_WASM = str(REPO / "filters" / "dist" / "rate_limit.wasm")
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"


def dashboard_metrics() -> set[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel["targets"]]
    return {name for expr in exprs for name in re.findall(r"\bedgegw_[a-z_]+", expr)}


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for got, v in found.get(name, []) if labels.items() <= got.items())


def test_dashboard_queries_only_metrics_a_gateway_exports(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    api = backend_factory(name="api")
    policy = {"name": "two", "rate": 2, "period": "1m", "key": ["route"]}
    gw = run_gateway(
        {
            "access_log": False,
            "sched_batch": False,
            "backends": {"api": api.url},
            "filters": {
                "limit": {"wasm": RATE_WASM, "config": {"mode": "global", "policies": [policy]}}
            },
            "routes": [
                {"name": "api", "match": {"prefix": "/api"}, "filters": ["limit"], "backend": "api"}
            ],
        }
    )
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        statuses = [client.get(f"/api/{i}").status_code for i in range(3)]
        statuses.append(client.get("/nowhere/secret-path-1").status_code)
    assert statuses == [200, 200, 429, 404]
    wanted = dashboard_metrics()
    assert len(wanted) >= 10, wanted
    deadline = time.monotonic() + 20
    while True:  # the workers hand their samples over at most a second later
        text = httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=10).text
        found = samples(text)
        missing = wanted - set(found)
        if not missing and value(found, "edgegw_requests_total") >= 4:
            break
        assert time.monotonic() < deadline, (missing, text)
        time.sleep(0.2)
    # RED per route; a path never becomes a label.
    assert value(found, "edgegw_requests_total", route="api", status="200") == 2
    assert value(found, "edgegw_requests_total", route="api", status="429") == 1
    assert "secret-path" not in text
    assert value(found, "edgegw_upstream_responses_total", backend="api", code="2xx") == 2
    # The filter paused on each request (its store call), then replied to the third; it
    # went on in the response phases.
    assert value(found, "edgegw_filter_outcomes_total", filter="limit", outcome="pause") == 3
    assert value(found, "edgegw_filter_outcomes_total", filter="limit", outcome="reply") == 1
    assert value(found, "edgegw_filter_outcomes_total", filter="limit", outcome="continue") >= 2
    calls = value(found, "edgegw_filter_call_duration_seconds_count", filter="limit")
    assert calls >= 3
    # Its store calls (the in-process edgegw.store cluster), one per request it saw.
    assert value(found, "edgegw_store_duration_seconds_count", op="ratelimit", outcome="ok") == 3
    # The backend connection kept for reuse.
    assert value(found, "edgegw_upstream_connections", backend="api", state="idle") >= 1
    assert value(found, "edgegw_requests_in_flight") == 0
