"""CORS at the edge (edgegw/front/cors.py) in-process, against a real loopback backend
and the real jwt_auth filter: preflights are answered before the filters and never
proxied; actual responses carry the route's policy and nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt

from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import parse_config
from tests.conftest import LoopbackBackend

MakeBackend = Callable[..., LoopbackBackend]
Client = Callable[..., httpx.AsyncClient]
REPO = Path(__file__).resolve().parents[2]
SECRET = "cors-test-secret-" + "k" * 48
JWT = json.dumps({"providers": [{"issuer": "t", "audiences": ["api"], "secret": SECRET}]})
APP = "https://app.example.com"
PREFLIGHT = {"origin": APP, "access-control-request-method": "POST"}
CORS_NAMES = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
)


async def gateway(client: Client, backend: LoopbackBackend, cors: str) -> httpx.AsyncClient:
    text = f"""
version: 1
backends: {{app: "{backend.url}"}}
filters:
  jwt: {{wasm: {REPO / "filters/dist/jwt_auth.wasm"}, config: '{JWT}'}}
routes:
  - name: app
    match: {{prefix: /app, methods: [GET, POST]}}
    filters: [jwt]
    backend: app
    cors: {cors}
  - {{name: plain, match: {{prefix: /plain}}, backend: app}}
"""
    app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
    await app.startup()
    return client(app)


CREDENTIALED = (
    '{allow_origins: ["https://app.example.com", "regex:^https://[a-z]+\\\\.example\\\\.com$"],'
    " allow_methods: [GET, POST], allow_headers: [authorization, content-type],"
    " expose_headers: [x-request-id], allow_credentials: true, max_age: 10m}"
)


def token() -> str:
    return jwt.encode({"iss": "t", "aud": "api", "sub": "u1"}, SECRET, "HS256")


def cors_headers(r: httpx.Response) -> dict[str, str]:
    return {n: r.headers[n] for n in CORS_NAMES if n in r.headers}


async def test_preflight_is_answered_at_the_edge_before_the_filters(
    backend_factory: MakeBackend, asgi_client: Client
) -> None:
    backend = backend_factory()
    client = await gateway(asgi_client, backend, CREDENTIALED)
    # No token: the jwt filter would answer 401; a preflight never carries credentials
    # (Fetch, "CORS-preflight fetch"), so it must not meet the filter.
    r = await client.options("/app/orders", headers=PREFLIGHT)
    assert r.status_code == 204
    assert r.content == b"" and "content-length" not in r.headers  # RFC 9110 §8.6
    assert cors_headers(r) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "600",
    }
    assert r.headers["vary"] == "Origin"
    # The route takes GET and POST only: the preflight was routed by the method it asks
    # about, not as an OPTIONS request.
    assert backend.requests == []


async def test_preflight_from_a_disallowed_origin_gets_no_cors_headers(
    backend_factory: MakeBackend, asgi_client: Client
) -> None:
    backend = backend_factory()
    client = await gateway(asgi_client, backend, CREDENTIALED)
    for origin in (
        "https://evil.com",
        "https://app.example.com.evil.net",  # the regex is matched whole
        "http://app.example.com",  # another scheme is another origin
        "null",
    ):
        r = await client.options("/app/orders", headers={**PREFLIGHT, "origin": origin})
        assert r.status_code == 204, origin
        assert cors_headers(r) == {}, origin
        assert r.headers["vary"] == "Origin"
    assert backend.requests == []


async def test_regex_origin_and_actual_requests(
    backend_factory: MakeBackend, asgi_client: Client
) -> None:
    backend = backend_factory(
        extra_headers=[("access-control-allow-origin", "*"), ("vary", "Accept-Encoding")]
    )
    client = await gateway(asgi_client, backend, CREDENTIALED)
    auth = {"authorization": f"Bearer {token()}"}
    r = await client.get("/app/x", headers={"origin": "https://shop.example.com", **auth})
    assert r.status_code == 200
    # The origin echoed, never the backend's "*" (never "*" with credentials: Fetch,
    # "HTTP responses").
    assert cors_headers(r) == {
        "access-control-allow-origin": "https://shop.example.com",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-request-id",
    }
    assert r.headers.get_list("vary") == ["Accept-Encoding", "Origin"]
    r = await client.get("/app/x", headers={"origin": "https://evil.com", **auth})
    assert r.status_code == 200 and cors_headers(r) == {}  # the backend's "*" is gone too
    assert r.headers.get_list("vary") == ["Accept-Encoding", "Origin"]
    # A filter's own reply (401, no token) carries them too: the browser can read it.
    r = await client.post("/app/x", headers={"origin": APP})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["vary"] == "Origin"
    assert len(backend.requests) == 2
    # Not a preflight (no Access-Control-Request-Method): an OPTIONS goes the usual way.
    r = await client.options("/plain/x", headers={"origin": APP})
    assert r.status_code == 200 and cors_headers(r) == {"access-control-allow-origin": "*"}
    r = await client.options("/plain/x", headers=PREFLIGHT)  # no cors on this route
    assert r.status_code == 200 and len(backend.requests) == 4


async def test_wildcard_origin_without_credentials(
    backend_factory: MakeBackend, asgi_client: Client
) -> None:
    backend = backend_factory()
    client = await gateway(asgi_client, backend, "{allow_origins: ['*'], allow_methods: ['*']}")
    r = await client.options("/app/x", headers={**PREFLIGHT, "origin": "https://any.test"})
    assert cors_headers(r) == {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "*",
    }
    r = await client.get(
        "/app/x", headers={"origin": "https://any.test", "authorization": f"Bearer {token()}"}
    )
    assert cors_headers(r) == {"access-control-allow-origin": "*"}
    assert backend.requests[0]["path"] == "/app/x"
