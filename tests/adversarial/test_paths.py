"""Request paths: one normalized path for the router, the filters and the backend.

Raw sockets send the hostile paths as bytes (an HTTP client would resolve ``..`` or
re-encode itself); loopback backends record what reached them. Under both servers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from edgegw.filterbuild import build_all
from tests.adversarial.conftest import raw_exchange, status_of
from tests.conftest import REPO, GatewayProcess, LoopbackBackend

SECRET = "adversarial-paths-secret-0123456789"


def wasm(name: str) -> str:
    [path] = build_all(REPO / "filters", REPO / "filters" / "dist", lambda _m: None, only=[name])
    return str(path)


def get(gw: GatewayProcess, target: str) -> bytes:
    request = f"GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"
    return raw_exchange(gw.port, request.encode("latin-1"))


def seen(backend: LoopbackBackend) -> list[str]:
    return [str(r["raw_path"]) for r in backend.requests]


@pytest.fixture
def edge(
    run_gateway: Callable[..., GatewayProcess],
    backend_factory: Callable[..., LoopbackBackend],
    server_kind: str,
) -> tuple[GatewayProcess, LoopbackBackend, LoopbackBackend]:
    """A gateway whose /secure needs a JWT, /login is rate limited (1 per hour), /public
    strips its prefix, /shop aggregates and everything else is public."""
    public, secure = backend_factory(name="public"), backend_factory(name="secure")
    jwt = {"providers": [{"issuer": "internal", "audiences": ["api"], "secret": SECRET}]}
    login = {"name": "login", "rate": 1, "period": "1h", "path_prefixes": ["/login"]}
    doc: dict[str, Any] = {
        "server": server_kind,
        "backends": {"public": {"url": public.url}, "secure": {"url": secure.url}},
        "filters": {
            "jwt": {"wasm": wasm("jwt_auth"), "config": jwt},
            "ratelimit": {"wasm": wasm("rate_limit"), "config": {"policies": [login]}},
        },
        "routes": [
            {"name": "secure", "match": {"prefix": "/secure"}, "filters": ["jwt"],
             "backend": "secure"},
            {"name": "login", "match": {"prefix": "/login"}, "filters": ["ratelimit"],
             "backend": "public"},
            {"name": "strip", "match": {"prefix": "/public"}, "backend": "public",
             "strip_prefix": True},
            {"name": "shop", "match": {"path": "/shop/{id}/tail"},
             "aggregate": {"backends": [
                 {"backend": "public", "path": "/items/{id}/tail", "group": "a"},
                 {"backend": "public", "path": "/items/{query.q}/x", "group": "b",
                  "required": False},
             ]}},
            {"name": "users", "match": {"prefix": "/users"}, "backend": "public"},
            {"name": "rest", "match": {"prefix": "/"}, "backend": "public"},
        ],
        "access_log": False,
    }  # fmt: skip
    return run_gateway(doc), public, secure


# Spellings of /secure/data: before, /users (or the catch-all) matched them and the public
# backend got them as sent, dots included, without the JWT /secure needs.
SECURE_SPELLINGS = [
    "/users/../secure/data",
    "/users/%2e%2e/secure/data",
    "/users/%2E%2E/secure/data",
    "/users/.%2E/secure/data",
    "/users/./../secure/data",
    "/users/../../../secure/data",
    "//secure/data",
    "/%73ecure/data",
]
# Encoded "/" or "\", a literal "\", Tomcat's "..;", a broken escape: refused.
REFUSED = [
    "/users/..%2Fsecure/data",
    "/users/%2E%2E%2Fsecure/data",
    "/users/..%5csecure/data",
    "/users\\..\\secure/data",
    "/users/..;/secure/data",
    "/users/%zz",
]


def test_no_spelling_of_a_path_dodges_its_route(
    edge: tuple[GatewayProcess, LoopbackBackend, LoopbackBackend],
) -> None:
    gw, public, secure = edge
    for target in SECURE_SPELLINGS:
        response = get(gw, target)
        # The path is /secure/data: the JWT filter answers, no backend sees it.
        assert status_of(response) == 401, (target, response[:300])
    for target in REFUSED:
        response = get(gw, target)
        assert status_of(response) == 400, (target, response[:300])
        assert b"application/problem+json" in response
    assert seen(public) == [] and seen(secure) == []


def test_the_rate_limit_sees_the_path_the_router_saw(
    edge: tuple[GatewayProcess, LoopbackBackend, LoopbackBackend],
) -> None:
    gw, public, _secure = edge
    assert status_of(get(gw, "/login/x")) == 200
    # "/%6cogin" is "/login": it reached the /login route but, with the raw path in
    # :path, escaped the policy's path_prefixes [/login] (before: 200, unlimited).
    for target in ("/%6cogin/x", "/%6C%6F%67%69%6E/x", "//login/x", "/x/../login/x"):
        assert status_of(get(gw, target)) == 429, target
    assert seen(public) == ["/login/x"]


def test_strip_prefix_and_templates_use_the_path_the_router_matched(
    edge: tuple[GatewayProcess, LoopbackBackend, LoopbackBackend],
) -> None:
    gw, public, _secure = edge
    assert status_of(get(gw, "/publi%63/x?q=%2F..")) == 200
    assert status_of(get(gw, "/public//y/./z")) == 200
    # before: "/63/x" (the raw path cut by the decoded prefix's length)
    assert seen(public) == ["/x?q=%2F..", "/y/z"]  # the query is never touched
    # Template values are never dot segments. "%2E%2E" is "..": the path is /tail, which
    # the template does not match (before: the aggregate called /items/../tail).
    assert status_of(get(gw, "/shop/%2E%2E/tail")) == 200  # the catch-all route
    assert seen(public)[2:] == ["/tail"]
    # A query value put into a path segment may not be one either (before: /items/../x).
    response = get(gw, "/shop/7/tail?q=..")
    assert status_of(response) == 400, response[:300]
    assert seen(public)[2:] == ["/tail"]
    assert status_of(get(gw, "/shop/7/tail?q=a.b")) == 200
    assert sorted(seen(public)[3:]) == ["/items/7/tail", "/items/a.b/x"]
