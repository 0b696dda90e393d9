"""A real ``edgegw serve`` in front of backend processes: plain routes, split routing and
aggregation share the balancing; a circuit breaker answers 503 problem+json naming the
backend and the limit; ``/admin/status`` and ``/metrics`` show the endpoints."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import GatewayProcess, Proc


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read()


def eventually(check: Callable[[], Any], seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return result


def test_routes_split_and_aggregation_balance_and_admin_shows_endpoints(
    procs: Callable[[int], list[Proc]], run_gateway: Callable[..., GatewayProcess]
) -> None:
    e0, e1, slow = procs(3)
    slow.control(delay=1.5)
    config = {
        "workers": 1,
        "backends": {
            "pool": {
                "endpoints": [e0.url, e1.url],
                # A 2 s timeout: with 500 ms, a check of a live endpoint that a loaded CPU
                # (parallel tests) delayed marked it unhealthy and /direct missed it. The
                # killed endpoint below is refused at once, whatever the timeout.
                "health_check": {"interval": "200ms", "timeout": "2s", "unhealthy": 1},
            },
            "tight": {"url": slow.url, "limits": {"max_requests": 1}},
        },
        "routes": [
            {"name": "direct", "match": {"prefix": "/direct"}, "backend": "pool"},
            {
                "name": "split",
                "match": {"prefix": "/split"},
                "split": {"header": "x-v", "backends": {"b": "pool"}, "default": "pool"},
            },
            {
                "name": "agg",
                "match": {"path": "/agg"},
                "aggregate": {
                    "backends": [
                        {"backend": "pool", "path": "/a", "group": "one"},
                        {"backend": "pool", "path": "/b", "group": "two"},
                    ]
                },
            },
            {"name": "tight", "match": {"prefix": "/tight"}, "backend": "tight"},
        ],
    }
    gw = run_gateway(config)
    for path in ("/direct", "/split"):
        before = (e0.count(), e1.count())
        for _ in range(6):
            assert fetch(gw.url + path)[0] == 200
        assert e0.count() > before[0] and e1.count() > before[1], path
    before = (e0.count(), e1.count())
    for _ in range(3):
        status, _, body = fetch(gw.url + "/agg")
        assert status == 200, body
    assert e0.count() > before[0] and e1.count() > before[1]  # 6 calls over both

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(fetch, gw.url + "/tight")
        eventually(lambda: slow.count() == 1)
        status, ctype, body = fetch(gw.url + "/tight")  # while the first is in flight
        assert first.result()[0] == 200
    assert (status, ctype) == (503, "application/problem+json")
    doc = json.loads(body)
    assert (doc["backend"], doc["limit"], doc["status"]) == ("tight", "max_requests", 503)

    def endpoints() -> dict[str, Any]:
        status, _, body = fetch(gw.admin_url + "/admin/status")
        assert status == 200
        upstreams = json.loads(body)["upstreams"]
        if not upstreams:
            return {}
        backends: dict[str, Any] = upstreams[0]["backends"]
        return {e["url"]: e["state"] for e in backends.get("pool", {}).get("endpoints", [])}

    assert eventually(endpoints) == {e0.url: "healthy", e1.url: "healthy"}
    e1.kill()
    eventually(lambda: endpoints().get(e1.url) == "unhealthy")
    for _ in range(4):
        assert fetch(gw.url + "/direct")[0] == 200  # the dead one gets nothing
    metrics = eventually(
        lambda: (
            (text := fetch(gw.admin_url + "/metrics")[2].decode())
            and "edgegw_upstream_circuit_open_total" in text
            and text
        )
    )
    assert 'edgegw_upstream_circuit_open_total{backend="tight",limit="max_requests"} 1.0' in metrics
    assert f'edgegw_upstream_endpoint_healthy{{backend="pool",endpoint="{e1.url}@127.0.0.1"' in (
        metrics
    )
