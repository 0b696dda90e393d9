"""The request pipeline in-process (httpx.ASGITransport) against real loopback backends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY

from edgegw.app import GatewayApp
from edgegw.config import parse_config
from edgegw.observe import access_log, metrics
from tests.conftest import LoopbackBackend, free_port

MakeBackend = Callable[..., LoopbackBackend]


def gateway(backends: dict[str, str], routes: str, **extra: str) -> GatewayApp:
    lines = ["version: 1", "backends:"]
    for name, url in backends.items():
        lines.append(f"  {name}: {{url: '{url}', timeout: 1s, connect_timeout: 1s}}")
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return GatewayApp(parse_config("\n".join(lines) + "\nroutes:\n" + routes, env={}))


def received_headers(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in doc["headers"]]


async def test_proxies_method_path_query_body(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    api = backend_factory(name="api")
    client = asgi_client(gateway({"api": api.url}, "  - {match: {prefix: /}, backend: api}\n"))
    r = await client.post("/a%20b/c%3F?x=1&y=%20&z=%2F/../", content=b"payload")
    assert r.status_code == 200
    doc = r.json()
    assert (doc["method"], doc["body"]) == ("POST", "payload")
    # Escapes that are not unreserved characters pass (hex upper-cased, RFC 3986
    # §6.2.2.1); the query is never touched.
    assert doc["raw_path"] == "/a%20b/c%3F?x=1&y=%20&z=%2F/../"


async def test_path_is_normalized_once_for_router_and_backend(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    api = backend_factory(name="api")
    client = asgi_client(
        gateway(
            {"api": api.url},
            "  - {match: {prefix: /public}, backend: api, strip_prefix: true}\n"
            "  - {match: {prefix: /}, backend: api}\n",
        )
    )
    # httpx would resolve "../" itself; the escaped forms reach the gateway as sent.
    doc = (await client.get("/publi%63/x%2e%2e/y")).json()
    assert doc["raw_path"] == "/x../y"  # prefix decoded, matched and cut in one form
    doc = (await client.get("/public/%2E%2E/secret//data")).json()
    assert doc["raw_path"] == "/secret/data"  # not under /public: no prefix to cut
    r = await client.get("/a%2Fb")
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    keep = asgi_client(
        gateway(
            {"api": api.url},
            "  - {match: {prefix: /}, backend: api}\n",
            paths="{escaped_slashes: keep_escaped}",
        )
    )
    assert (await keep.get("/a%2fb/c")).json()["raw_path"] == "/a%2Fb/c"


async def test_404_problem(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    api = backend_factory()
    client = asgi_client(gateway({"api": api.url}, "  - {match: {prefix: /api}, backend: api}\n"))
    r = await client.get("/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no route for GET /nope",
        "instance": "/nope",
    }
    assert api.requests == []


async def test_502_and_504_name_the_backend(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    slow = backend_factory(name="slow", delay=3)
    app = gateway(
        {"dead": f"http://127.0.0.1:{free_port()}", "slow": slow.url},
        "  - {match: {prefix: /dead}, backend: dead}\n"
        "  - {match: {prefix: /slow}, backend: slow}\n",
    )
    client = asgi_client(app)
    r = await client.get("/dead/x")
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["backend"] == "dead" and "dead" in r.json()["detail"]
    r = await client.get("/slow/x")
    assert r.status_code == 504
    assert r.json()["backend"] == "slow" and r.json()["status"] == 504


async def test_413_by_content_length_and_by_streamed_size(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    api = backend_factory()
    app = gateway(
        {"api": api.url},
        "  - {match: {prefix: /}, backend: api}\n",
        limits="{max_request_body: 1KiB}",
    )
    client = asgi_client(app)
    r = await client.post("/up", content=b"x" * 2000)
    assert r.status_code == 413
    assert r.json()["status"] == 413 and "1024" in r.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(4):
            yield b"y" * 400

    r = await client.post("/up", content=chunks())
    assert r.status_code == 413
    r = await client.post("/up", content=b"z" * 1024)  # exactly the limit passes
    assert r.status_code == 200
    assert api.requests[-1]["body"] == "z" * 1024


async def test_hop_by_hop_stripped_both_ways_and_set_cookie_repeats(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    api = backend_factory(
        extra_headers=[
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Connection", "x-resp-hop"),
            ("X-Resp-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
        ]
    )
    client = asgi_client(gateway({"api": api.url}, "  - {match: {prefix: /}, backend: api}\n"))
    r = await client.get(
        "/h",
        headers={"Connection": "x-req-hop", "X-Req-Hop": "1", "TE": "trailers", "X-Keep": "k"},
    )
    assert r.status_code == 200
    sent = dict(received_headers(r.json()))
    assert "x-req-hop" not in sent and "te" not in sent
    assert sent["x-keep"] == "k"
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert "x-resp-hop" not in r.headers and "keep-alive" not in r.headers


async def test_forwarded_headers_untrusted_and_trusted(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    api = backend_factory()
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil"}
    routes = "  - {match: {prefix: /}, backend: api}\n"
    client = asgi_client(gateway({"api": api.url}, routes))
    sent = dict(received_headers((await client.get("/f", headers=spoof)).json()))
    assert sent["x-forwarded-for"] == "203.0.113.7"
    assert sent["x-forwarded-host"] == "gw.test"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["host"] == api.url.removeprefix("http://")  # the backend's, not the client's

    trusting = asgi_client(gateway({"api": api.url}, routes, trusted_proxies="[203.0.113.0/24]"))
    sent = dict(received_headers((await trusting.get("/f", headers=spoof)).json()))
    assert sent["x-forwarded-for"] == "6.6.6.6, 203.0.113.7"
    assert sent["x-forwarded-host"] == "evil"


async def test_split_by_variant_header(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    v1, v2 = backend_factory(name="v1"), backend_factory(name="v2")
    client = asgi_client(
        gateway(
            {"v1": v1.url, "v2": v2.url},
            "  - match: {prefix: /shop}\n"
            # A client-chosen variant: x-edgegw-* (the ab_flags filter's) is stripped from
            # clients, so the header here has a name of its own.
            "    split: {header: x-variant, backends: {A: v1, B: v2}, default: v1}\n",
        )
    )
    assert (await client.get("/shop", headers={"x-variant": "B"})).json()["backend"] == "v2"
    assert (await client.get("/shop", headers={"x-variant": "A"})).json()["backend"] == "v1"
    assert (await client.get("/shop", headers={"x-variant": "Z"})).json()["backend"] == "v1"
    assert (await client.get("/shop")).json()["backend"] == "v1"


async def test_strip_prefix_and_request_id(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    api = backend_factory()
    client = asgi_client(
        gateway(
            {"api": api.url}, "  - {match: {prefix: /api/}, backend: api, strip_prefix: true}\n"
        )
    )
    doc = (await client.get("/api/users/1?q=2")).json()
    assert (doc["path"], doc["query"]) == ("/users/1", "q=2")
    assert len(dict(received_headers(doc))["x-request-id"]) == 32
    doc = (await client.get("/api", headers={"x-request-id": "abc"})).json()
    assert doc["path"] == "/"
    assert dict(received_headers(doc))["x-request-id"] == "abc"


UPSTREAM_OK = {"backend": "api", "outcome": "ok"}


async def test_metrics_and_access_log(
    backend_factory: MakeBackend,
    asgi_client: Callable[..., httpx.AsyncClient],
    tmp_path: Path,
) -> None:
    api = backend_factory()
    log = tmp_path / "access.log"
    client = asgi_client(
        gateway(
            {"api": api.url},
            "  - {name: m, match: {prefix: /}, backend: api}\n",
            access_log=f"{{path: '{log}'}}",
        )
    )
    labels = {"route": "m", "status": "200"}
    before = REGISTRY.get_sample_value("edgegw_requests_total", labels) or 0.0
    upstream_before = (
        REGISTRY.get_sample_value("edgegw_upstream_duration_seconds_count", UPSTREAM_OK) or 0.0
    )
    assert (await client.get("/m?x=1")).status_code == 200
    metrics.flush()
    assert REGISTRY.get_sample_value("edgegw_requests_total", labels) == before + 1
    assert (
        REGISTRY.get_sample_value("edgegw_upstream_duration_seconds_count", UPSTREAM_OK)
        == upstream_before + 1
    )
    access_log.flush_all()
    lines = [json.loads(text) for text in log.read_text().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert (line["route"], line["status"], line["backend"], line["path"]) == (
        "m",
        200,
        "api",
        "/m?x=1",
    )
    assert line["bytes_out"] > 0 and line["duration_ms"] > 0 and line["method"] == "GET"


async def test_connect_timeout_is_504(
    full_listener: int, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    app = GatewayApp(
        parse_config(
            "version: 1\nbackends:\n"
            f"  hung: {{url: 'http://127.0.0.1:{full_listener}', connect_timeout: 200ms}}\n"
            "routes:\n  - {match: {prefix: /}, backend: hung}\n",
            env={},
        )
    )
    r = await asgi_client(app).get("/x")
    assert r.status_code == 504
    assert r.json()["backend"] == "hung"
    assert r.json()["detail"] == "backend 'hung': no connection within 0.2s"


async def test_upload_longer_than_backend_timeout_is_not_cut(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    """``timeout`` counts from the end of the request body, as Envoy's route timeout."""
    api = backend_factory()
    client = asgi_client(gateway({"api": api.url}, "  - {match: {prefix: /}, backend: api}\n"))

    async def slow_body() -> AsyncIterator[bytes]:
        for i in range(8):  # about 2 s in all with the 1 s timeout of gateway()
            yield b"%d" % i
            await asyncio.sleep(0.25)

    r = await client.post("/up", content=slow_body())
    assert r.status_code == 200
    assert r.json()["body"] == "01234567"


async def test_http2_body_without_content_length_is_forwarded(
    backend_factory: MakeBackend,
) -> None:
    """HTTP/2 frames the body itself: no Content-Length does not mean no body."""
    api = backend_factory()
    app = gateway({"api": api.url}, "  - {match: {prefix: /}, backend: api}\n")
    messages = [
        {"type": "http.request", "body": b"hello ", "more_body": True},
        {"type": "http.request", "body": b"h2", "more_body": False},
        {"type": "http.request", "body": b"", "more_body": False},  # a GET without body
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def scope(method: str) -> dict[str, Any]:
        return {
            "type": "http", "http_version": "2", "method": method, "scheme": "http",
            "path": "/h2", "raw_path": b"/h2", "query_string": b"",
            "headers": [(b"host", b"gw.test")], "client": ("127.0.0.1", 1), "server": None,
        }  # fmt: skip

    try:
        await app(scope("POST"), receive, send)
        await app(scope("GET"), receive, send)
    finally:
        await app.aclose()
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200, 200]
    assert [r["body"] for r in api.requests] == ["hello h2", ""]
    assert "transfer-encoding" not in dict(api.requests[1]["headers"])  # GET stays bodiless
    assert messages == []


async def test_access_log_off(
    backend_factory: MakeBackend,
    asgi_client: Callable[..., httpx.AsyncClient],
    tmp_path: Path,
) -> None:
    api = backend_factory()
    routes = "  - {name: quiet, match: {prefix: /}, backend: api}\n"
    log = tmp_path / "access.log"
    off = f"{{path: '{log}', enabled: false}}"
    client = asgi_client(gateway({"api": api.url}, routes, access_log=off))
    assert (await client.get("/q")).status_code == 200
    access_log.flush_all()
    assert not log.exists()
    assert len(api.requests) == 1


async def test_405_with_allow_when_only_the_method_differs(
    backend_factory: MakeBackend, asgi_client: Callable[..., httpx.AsyncClient]
) -> None:
    api = backend_factory()
    routes = (
        "  - {match: {prefix: /users, methods: [GET, HEAD]}, backend: api}\n"
        "  - {match: {path: '/users/{id}', methods: [DELETE]}, backend: api}\n"
        "  - {match: {prefix: /open}, backend: api}\n"
    )
    client = asgi_client(gateway({"api": api.url}, routes))
    r = await client.put("/users/7", content=b"x")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD, DELETE"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "about:blank",
        "title": "Method Not Allowed",
        "status": 405,
        "detail": "PUT is not allowed for /users/7",
        "instance": "/users/7",
        "allow": ["GET", "HEAD", "DELETE"],
    }
    r = await client.post("/nope")  # no route has this path at all: still 404, no Allow
    assert r.status_code == 404 and "allow" not in r.headers
    assert (await client.get("/users/7")).status_code == 200
    assert len(api.requests) == 1  # neither the 405 nor the 404 reached the backend
