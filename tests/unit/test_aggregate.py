"""Fan-out aggregation against real loopback backends: every merge and failure rule."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from edgegw.aggregate import Values, dot_segment_value, render_path
from edgegw.app import GatewayApp
from edgegw.config import parse_config
from tests.conftest import LoopThread

Reply = tuple[int, Any, float]  # status, JSON body (bytes = raw), delay seconds


class JsonBackends:
    """One aiohttp server; ``routes[path] = (status, body, delay)``; records requests."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.inflight = 0
        self.max_inflight = 0
        self.loop = LoopThread()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)

        async def start() -> int:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            return int(self.runner.addresses[0][1])

        self.url = f"http://127.0.0.1:{self.loop.run(start())}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.path_qs, {k.lower(): v for k, v in request.headers.items()}))
        status, body, delay = self.routes.get(request.path, (404, {"error": "nope"}, 0.0))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(delay)
        finally:
            self.inflight -= 1
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return web.Response(status=status, body=raw, content_type="application/json")

    def close(self) -> None:
        self.loop.run(self.runner.cleanup())
        self.loop.close()


@pytest.fixture
def backends() -> Iterator[JsonBackends]:
    b = JsonBackends()
    yield b
    b.close()


@pytest.fixture
async def gateway(
    backends: JsonBackends, asgi_client: Callable[..., httpx.AsyncClient]
) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    def make(aggregate_yaml: str) -> httpx.AsyncClient:
        text = f"""
version: 1
backends:
  a: {{url: "{backends.url}"}}
  b: {{url: "{backends.url}"}}
  c: {{url: "{backends.url}"}}
routes:
  - name: agg
    match: {{path: "/agg/{{id}}"}}
    aggregate:
{aggregate_yaml}
"""
        return asgi_client(GatewayApp(parse_config(text, env={})))

    yield make


def indent(text: str) -> str:
    return "\n".join("      " + line for line in text.strip().splitlines())


async def test_merge_in_config_order_not_arrival_order(
    backends: JsonBackends, gateway: Callable[[str], httpx.AsyncClient]
) -> None:
    backends.routes["/slow"] = (200, {"name": "slow", "x": 1}, 0.2)
    backends.routes["/fast"] = (200, {"name": "fast", "y": 2}, 0.0)
    client = gateway(
        indent("""
backends:
  - {backend: a, path: /slow}
  - {backend: b, path: /fast}
""")
    )
    r = await client.get("/agg/1")
    assert r.status_code == 200
    # The collision on "name" goes to the backend listed first, although it answered last.
    assert r.json() == {"name": "slow", "x": 1, "y": 2}
    assert r.headers["x-edgegw-completed"] == "true"


async def test_calls_run_concurrently(
    backends: JsonBackends, gateway: Callable[[str], httpx.AsyncClient]
) -> None:
    for name in ("p", "q", "r"):
        backends.routes[f"/{name}"] = (200, {name: True}, 0.3)
    client = gateway(
        indent("""
backends:
  - {backend: a, path: /p}
  - {backend: b, path: /q}
  - {backend: c, path: /r}
""")
    )
    r = await client.get("/agg/1")
    assert r.json() == {"p": True, "q": True, "r": True}
    assert backends.max_inflight == 3  # all three were in flight at the same time


async def test_templates_group_target_allow_deny_mapping(
    backends: JsonBackends, gateway: Callable[[str], httpx.AsyncClient]
) -> None:
    backends.routes["/users/a b"] = (200, {"id": "a b", "secret": "s", "name": "N"}, 0.0)
    backends.routes["/orders"] = (200, [{"o": 1}], 0.0)
    backends.routes["/recs"] = (200, {"data": {"items": [1, 2], "debug": {"t": 1}}}, 0.0)
    client = gateway(
        indent("""
forward_headers: [x-user-id]
backends:
  - {backend: a, path: "/users/{id}", deny: [secret], mapping: {name: full_name}}
  - {backend: b, path: "/orders?user={header.x-user-id}&q={query.q}", group: orders}
  - {backend: c, path: /recs, target: data, allow: [items], group: recs}
""")
    )
    r = await client.get("/agg/a b", params={"q": "x/y"}, headers={"x-user-id": "u&1"})
    assert r.json() == {
        "id": "a b",
        "full_name": "N",
        "orders": [{"o": 1}],
        "recs": {"items": [1, 2]},
    }
    paths = sorted(p for p, _h in backends.seen)
    assert "/orders?user=u%261&q=x%2Fy" in paths  # values are URL-encoded, "/" too
    orders_headers = next(h for p, h in backends.seen if p.startswith("/orders"))
    assert orders_headers["x-user-id"] == "u&1"  # forwarded because configured


async def test_required_failure_is_502_naming_backend(
    backends: JsonBackends, gateway: Callable[[str], httpx.AsyncClient]
) -> None:
    backends.routes["/ok"] = (200, {"ok": 1}, 0.0)
    backends.routes["/boom"] = (500, {"err": 1}, 0.0)
    client = gateway(
        indent("backends:\n  - {backend: a, path: /ok}\n  - {backend: b, path: /boom}")
    )
    r = await client.get("/agg/1")
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["backend"] == "b"
    assert "status 500" in r.json()["detail"]


async def test_required_timeout_is_504(
    backends: JsonBackends, gateway: Callable[[str], httpx.AsyncClient]
) -> None:
    backends.routes["/slow"] = (200, {"late": 1}, 1.0)
    client = gateway(indent("backends:\n  - {backend: a, path: /slow, timeout: 100ms}"))
    r = await client.get("/agg/1")
    assert r.status_code == 504
    assert r.json()["backend"] == "a"


async def test_optional_failures_default_meta_and_completed_header(
    backends: JsonBackends, gateway: Callable[[str], httpx.AsyncClient]
) -> None:
    backends.routes["/user"] = (200, {"id": 1}, 0.0)
    backends.routes["/notjson"] = (200, b"<html>", 0.0)
    backends.routes["/slow"] = (200, {"late": 1}, 1.0)
    backends.routes["/list"] = (200, [1, 2], 0.0)
    client = gateway(
        indent("""
timeout: 300ms
meta: true
backends:
  - {backend: a, path: /user}
  - {backend: b, path: /notjson, required: false, group: extra}
  - {backend: c, path: /slow, required: false, group: orders, default: []}
  - {backend: a, path: /list, required: false}
""")
    )
    r = await client.get("/agg/1")
    assert r.status_code == 200
    assert r.headers["x-edgegw-completed"] == "false"
    doc = r.json()
    meta = doc.pop("_meta")
    assert doc == {"id": 1, "orders": []}
    assert meta["completed"] is False
    errors = [(m["backend"], m.get("error", "")) for m in meta["backends"]]
    assert errors == [
        ("a", ""),
        ("b", "body is not JSON"),
        ("c", "route deadline exceeded"),
        ("a", "response is not a JSON object and the backend has no group"),
    ]
    assert meta["backends"][0]["status"] == 200


async def test_oversized_body_fails_that_backend(
    backends: JsonBackends, gateway: Callable[[str], httpx.AsyncClient]
) -> None:
    backends.routes["/huge"] = (200, {"blob": "x" * 5000}, 0.0)
    client = gateway(indent("max_body: 1KiB\nbackends:\n  - {backend: a, path: /huge}"))
    r = await client.get("/agg/1")
    assert r.status_code == 502
    assert "1024 bytes" in r.json()["detail"]


async def test_collision_is_logged(
    backends: JsonBackends,
    gateway: Callable[[str], httpx.AsyncClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    backends.routes["/one"] = (200, {"k": 1}, 0.0)
    backends.routes["/two"] = (200, {"k": 2}, 0.0)
    client = gateway(
        indent("backends:\n  - {backend: a, path: /one}\n  - {backend: b, path: /two}")
    )
    with caplog.at_level(logging.WARNING, logger="edgegw.aggregate"):
        assert (await client.get("/agg/1")).json() == {"k": 1}
    assert any("'k'" in r.getMessage() and "b" in r.getMessage() for r in caplog.records)


def test_render_path_reports_missing_values() -> None:
    values = Values({"id": "7"}, {}, [])
    assert render_path("/u/{id}", values) == "/u/7"
    with pytest.raises(KeyError):
        render_path("/u/{header.x-user-id}", values)


async def test_filters_run_once_around_the_fan_out(
    backends: JsonBackends, test_wasm: Callable[[str], Path]
) -> None:
    from edgegw.app import wasm_chains
    from tests.conftest import REPO

    backends.routes["/users/trivial-AAAA"] = (200, {"user": 1}, 0.0)
    backends.routes["/orders"] = (200, {"orders": []}, 0.0)
    limit = json.dumps({"policies": [{"name": "once", "rate": 1, "period": "1h", "burst": 1,
                                      "key": ["route"]}]})  # fmt: skip
    text = f"""
version: 1
backends: {{a: "{backends.url}", b: "{backends.url}"}}
filters:
  trivial: {{wasm: {test_wasm("trivial")}}}
  limit: {{wasm: {REPO / "filters/dist/rate_limit.wasm"}, config: '{limit}'}}
routes:
  - name: agg
    match: {{path: "/agg/{{id}}"}}
    filters: [limit, trivial]
    aggregate:
      backends:
        - {{backend: a, path: "/users/{{header.x-trivial}}"}}
        - {{backend: b, path: "/orders?user={{id}}"}}
"""
    app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
    await app.startup()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as client:
            r = await client.get("/agg/7")
            # The template used a header a request filter set; the response filter ran
            # on the merged answer.
            assert r.json() == {"user": 1, "orders": []}
            assert r.headers["x-trivial"] == "trivial-AAAA"
            # The limit of 1 counted the aggregated request once, not once per backend.
            assert (await client.get("/agg/7")).status_code == 429
        assert len(backends.seen) == 2
    finally:
        await app.aclose()


def test_dot_segment_values_are_found_in_the_path_part_only() -> None:
    values = Values({"id": "7"}, {"q": "..", "d": "."}, [])
    assert dot_segment_value("/u/{id}/x", values) is None
    assert dot_segment_value("/u/{query.q}/x", values) == "query.q"
    assert dot_segment_value("/u/{query.d}", values) == "query.d"
    assert dot_segment_value("/u/{id}?q={query.q}", values) is None  # a query value
