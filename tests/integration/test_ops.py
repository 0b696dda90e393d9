"""Operations through a real gateway process: what /readyz, /metrics, the logs and the
request id tell an operator (docs/operations.md)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import (
    REPO,
    GatewayProcess,
    LoopbackBackend,
    free_port,
    start_redis,
    stop_process,
    wait_for,
)

RunGateway = Callable[..., GatewayProcess]
MakeBackend = Callable[..., LoopbackBackend]
RATE_WASM = str(REPO / "filters" / "dist" / "rate_limit.wasm")
HEX_ID = re.compile(r"[0-9a-f]{32}")
HTTP_TIMEOUT = 30  # generous: the machine may be loaded; every wait stays bounded


def metric(gw: GatewayProcess, name: str, **labels: str) -> float | None:
    """The value of one sample on the admin port's /metrics (None when absent)."""
    body = httpx.get(gw.admin_url + "/metrics", timeout=HTTP_TIMEOUT).text
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        got, _, rest = sample.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if got == name and found == labels:
            return float(value)
    return None


def test_readyz_and_metrics_agree_that_memory_store_is_up(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    api = backend_factory()
    gw = run_gateway(
        {
            "backends": {"api": api.url},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "api"}],
        },
        "--workers",
        "2",
    )
    assert httpx.get(gw.url + "/x", timeout=HTTP_TIMEOUT).status_code == 200  # workers are serving
    ready = httpx.get(gw.admin_url + "/readyz", timeout=HTTP_TIMEOUT).json()
    assert ready["store"] == "up"
    assert metric(gw, "edgegw_store_up") == 1.0


def test_a_redis_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    run_gateway: RunGateway, backend_factory: MakeBackend, tmp_path: Path
) -> None:
    port = free_port()
    redis = start_redis(tmp_path / "redis", port)
    try:
        api = backend_factory()
        gw = run_gateway(
            {
                "backends": {"api": api.url},
                "store": {"url": f"redis://127.0.0.1:{port}/0", "timeout": "200ms"},
                "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "api"}],
            },
            "--workers",
            "2",
        )
        assert httpx.get(gw.url + "/x", timeout=HTTP_TIMEOUT).status_code == 200
        assert wait_for(lambda: metric(gw, "edgegw_store_up") == 1.0)

        def count(text: str) -> int:
            return gw.output().count(text)

        stop_process(redis)
        # One worker per host holds the flag subscription (edgegw/store/mirror.py).
        assert wait_for(lambda: count("flag subscription lost") >= 1), gw.output()
        # The gauge of the worker whose subscription failed is the lowest.
        assert wait_for(lambda: metric(gw, "edgegw_store_up") == 0.0)
        time.sleep(3)  # several retries (backoff 0.1 s doubling) while Redis stays down
        assert httpx.get(gw.url + "/x", timeout=HTTP_TIMEOUT).status_code == 200  # traffic goes on
        redis = start_redis(tmp_path / "redis", port)
        assert wait_for(lambda: count("flag subscription restored") >= 1), gw.output()
        assert wait_for(lambda: metric(gw, "edgegw_store_up") == 1.0)
        assert httpx.get(gw.admin_url + "/readyz", timeout=HTTP_TIMEOUT).json()["store"] == "up"
        time.sleep(0.5)  # a late duplicate line would show up now
        assert (count("flag subscription lost"), count("flag subscription restored")) == (1, 1)
        assert count("WARNING edgegw.store: flag subscription lost") == 1
    finally:
        stop_process(redis)


def test_every_upstream_call_is_timed_by_backend_and_outcome(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    fast = backend_factory(name="fast")
    slow = backend_factory(name="slow", delay=3.0)
    reset = backend_factory(name="reset", fail_connection=True)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused
    gw = run_gateway(
        {
            "backends": {
                "fast": fast.url,
                "slow": {"url": slow.url, "timeout": "200ms"},
                "reset": reset.url,
                "dead": dead,
            },
            "routes": [
                {
                    "name": "agg",
                    "match": {"path": "/agg"},
                    "aggregate": {
                        "backends": [
                            {"backend": "fast", "path": "/a"},
                            {
                                "backend": "slow",
                                "path": "/b",
                                "timeout": "200ms",
                                "required": False,
                                "group": "late",
                            },
                        ]
                    },
                },
                *(
                    {"name": name, "match": {"prefix": f"/{name}"}, "backend": name}
                    for name in ("fast", "slow", "reset", "dead")
                ),
            ],
        }
    )
    answers = {
        path: httpx.get(gw.url + path, timeout=HTTP_TIMEOUT).status_code
        for path in ("/agg", "/fast", "/slow", "/reset", "/dead")
    }
    assert answers == {"/agg": 200, "/fast": 200, "/slow": 504, "/reset": 502, "/dead": 502}
    want = {
        ("fast", "ok"): 2.0,  # one fan-out call, one proxied
        ("slow", "timeout"): 2.0,  # one fan-out call, one proxied
        ("reset", "reset"): 1.0,
        ("dead", "connect_error"): 1.0,
    }

    def counts() -> dict[tuple[str, str], float | None]:
        name = "edgegw_upstream_duration_seconds_count"
        return {key: metric(gw, name, backend=key[0], outcome=key[1]) for key in want}

    assert wait_for(lambda: counts() == want), counts()  # batched: within about 1 s


def ids_received(backend: LoopbackBackend) -> list[list[str]]:
    """The x-request-id values of each request ``backend`` received, in order."""
    return [[v for k, v in r["headers"] if k == "x-request-id"] for r in backend.requests]


def access_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    out = []
    for line in gw.output().splitlines():
        if line.startswith('{"time"'):
            out.append(json.loads(line))
    return out


def test_request_id_is_echoed_proxied_and_logged_even_without_a_route(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    api = backend_factory(extra_headers=[("x-request-id", "from-the-backend")])
    gw = run_gateway(
        {
            "backends": {"api": api.url},
            "routes": [{"name": "r", "match": {"prefix": "/api"}, "backend": "api"}],
        }
    )
    with httpx.Client(base_url=gw.url, timeout=HTTP_TIMEOUT) as client:
        kept = client.get("/api/1", headers={"x-request-id": "client-id-1"})
        made = client.get("/api/2")
        bad = client.get("/api/3", headers={"x-request-id": "x" * 200})
        missing = client.get("/nowhere", headers={"x-request-id": "client-id-404"})
        missing_made = client.get("/nowhere")
    assert [r.status_code for r in (kept, made, bad, missing, missing_made)] == [
        200, 200, 200, 404, 404,
    ]  # fmt: skip
    # Echoed: the client's valid id kept, otherwise a generated one; never the backend's.
    assert kept.headers.get_list("x-request-id") == ["client-id-1"]
    assert missing.headers.get_list("x-request-id") == ["client-id-404"]
    generated = [r.headers.get_list("x-request-id") for r in (made, bad, missing_made)]
    assert all(len(ids) == 1 and HEX_ID.fullmatch(ids[0]) for ids in generated), generated
    assert len({ids[0] for ids in generated}) == 3
    # Proxied: the backend saw exactly the id the client got back.
    assert ids_received(api) == [["client-id-1"], generated[0], generated[1]]
    # Logged: every access line carries the id the client got, 404s included.
    echoed = [r.headers["x-request-id"] for r in (kept, made, bad, missing, missing_made)]
    lines = wait_for(lambda: len(access_lines(gw)) >= 5 and access_lines(gw))
    assert [(line["status"], line["request_id"]) for line in lines] == list(
        zip([200, 200, 200, 404, 404], echoed, strict=True)
    )


def test_request_id_reaches_fan_out_backends_and_filter_http_calls(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    users, orders, api = (backend_factory(name=n) for n in ("users", "orders", "api"))
    store = backend_factory(name="store")  # answers the rate_limit filter's store calls
    policy = {"name": "all", "rate": 1000, "period": "1s", "key": ["route"]}
    gw = run_gateway(
        {
            "backends": {
                "users": users.url,
                "orders": orders.url,
                "api": api.url,
                "store": store.url,
            },
            "filters": {
                "limit": {
                    "wasm": RATE_WASM,
                    "config": {
                        "mode": "global",
                        "store_cluster": "store",
                        "on_store_error": "fail_open",
                        "policies": [policy],
                    },
                }
            },
            "routes": [
                {
                    "name": "agg",
                    "match": {"path": "/agg/{id}"},
                    "aggregate": {
                        "backends": [
                            {"backend": "users", "path": "/users/{id}", "group": "user"},
                            {"backend": "orders", "path": "/orders/{id}", "group": "orders"},
                        ]
                    },
                },
                {
                    "name": "api",
                    "match": {"prefix": "/api"},
                    "filters": ["limit"],
                    "backend": "api",
                },
            ],
        }
    )
    with httpx.Client(base_url=gw.url, timeout=HTTP_TIMEOUT) as client:
        fanned = client.get("/agg/7", headers={"x-request-id": "fan-out-id"})
        limited = client.get("/api/x", headers={"x-request-id": "http-call-id"})
        generated = client.get("/api/y")
    assert (fanned.status_code, limited.status_code, generated.status_code) == (200, 200, 200)
    assert fanned.headers["x-request-id"] == "fan-out-id"
    assert ids_received(users) == ids_received(orders) == [["fan-out-id"]]
    new_id = generated.headers["x-request-id"]
    assert HEX_ID.fullmatch(new_id)
    # The filter's store call is made for the request: it carries the request's id.
    assert ids_received(store) == [["http-call-id"], [new_id]]
    assert ids_received(api) == [["http-call-id"], [new_id]]


def test_log_lines_written_while_handling_a_request_carry_its_id(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    one, two = backend_factory(name="one"), backend_factory(name="two")
    store = backend_factory(name="store")  # an echo: not the answer rate_limit expects
    policy = {"name": "all", "rate": 1000, "period": "1s", "key": ["route"]}
    gw = run_gateway(
        {
            "backends": {"one": one.url, "two": two.url, "store": store.url},
            "filters": {
                "limit": {
                    "wasm": RATE_WASM,
                    "config": {"mode": "global", "store_cluster": "store", "policies": [policy]},
                }
            },
            "routes": [
                {
                    "name": "agg",
                    "match": {"path": "/agg"},
                    "filters": ["limit"],
                    # Both echo the same keys: the second one's collide (a warning).
                    "aggregate": {
                        "backends": [
                            {"backend": "one", "path": "/"},
                            {"backend": "two", "path": "/"},
                        ]
                    },
                }
            ],
        }
    )
    r = httpx.get(gw.url + "/agg", headers={"x-request-id": "log-me-1"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    wait_for(lambda: '"request_id":"log-me-1"' in gw.output())  # the access line is last
    lines = [line for line in gw.output().splitlines() if " edgegw." in line]
    collisions = [line for line in lines if "ignored; already set by one" in line]
    filter_lines = [line for line in lines if "edgegw.filter.limit" in line]
    assert collisions and filter_lines, gw.output()
    assert all(line.endswith(" request_id=log-me-1") for line in collisions + filter_lines), lines
