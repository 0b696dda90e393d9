"""CORS preflights and header templates through real servers (granian, hypercorn) on raw
sockets: a 204 preflight keeps the connection's framing, a hostile query never becomes a
header, and nothing of a preflight reaches the backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.adversarial.conftest import raw_exchange
from tests.conftest import LoopbackBackend

MakeBackend = Callable[..., LoopbackBackend]


def config(server: str, backend: LoopbackBackend) -> dict[str, Any]:
    return {
        "server": server,
        "admin": None,
        "backends": {"app": backend.url},
        "security_headers": "default",
        "routes": [
            {
                "name": "app",
                "match": {"prefix": "/app", "methods": ["GET", "POST"]},
                "backend": "app",
                "cors": {"allow_origins": ["https://app.example.com"], "allow_methods": ["POST"]},
                "headers": {"request": {"set": {"x-lang": "{param.lang}"}}},
            }
        ],
    }


def test_preflight_then_request_on_one_connection(
    server_kind: str, backend_factory: MakeBackend, run_gateway: Callable[..., Any]
) -> None:
    backend = backend_factory()
    gw = run_gateway(config(server_kind, backend))
    preflight = (
        b"OPTIONS /app/x HTTP/1.1\r\nHost: gw\r\nOrigin: https://app.example.com\r\n"
        b"Access-Control-Request-Method: POST\r\nContent-Length: 0\r\n\r\n"
    )
    follow = b"GET /app/y HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    out = raw_exchange(gw.port, preflight + follow)
    first, sep, rest = out.partition(b"\r\n\r\n")
    assert sep and first.startswith(b"HTTP/1.1 204"), out[:300]
    head = first.lower()
    assert b"access-control-allow-origin: https://app.example.com" in head
    assert b"vary: origin" in head and b"x-frame-options: deny" in head
    assert b"\r\ncontent-length:" not in head  # RFC 9110 §8.6
    # The next response starts right after the 204's head: no body bytes in between.
    assert rest.startswith(b"HTTP/1.1 200"), rest[:200]
    assert [r["path"] for r in backend.requests] == ["/app/y"]


def test_a_query_with_crlf_never_becomes_a_header(
    server_kind: str, backend_factory: MakeBackend, run_gateway: Callable[..., Any]
) -> None:
    backend = backend_factory()
    gw = run_gateway(config(server_kind, backend))
    request = (
        b"GET /app/x?lang=en%0d%0aX-Injected:%20yes HTTP/1.1\r\nHost: gw\r\n"
        b"Connection: close\r\n\r\n"
    )
    out = raw_exchange(gw.port, request)
    assert out.startswith(b"HTTP/1.1 200"), out[:300]
    (got,) = backend.requests
    names = [name for name, _ in got["headers"]]
    assert "x-injected" not in names and "x-lang" not in names
