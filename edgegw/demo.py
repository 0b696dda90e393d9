"""The demo microservices that gateway.yaml.example points at.

``edgegw demo`` runs five small aiohttp.web services in one process:

==================  ============  ==============================================
service             default port  answers
==================  ============  ==============================================
users               9001          ``GET /users/{id}``
orders              9002          ``GET /orders?user=ID``
recommendations     9003          ``GET /recommendations?user=ID``
shop-v1             9004          ``/shop/...`` with ``"version": "v1"``
shop-v2             9005          ``/shop/...`` with ``"version": "v2"``
==================  ============  ==============================================

Every JSON answer carries ``"service"`` and ``"headers"``: the request headers a gateway
adds (``x-edgegw-*``, ``x-forwarded-*``, ``x-user-*``, ``x-geo-*``, ``x-request-id``), so a
demo shows what the filters did.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SERVICES: tuple[str, ...] = ("users", "orders", "recommendations", "shop-v1", "shop-v2")
DEFAULT_BASE_PORT = 9001

_ECHO_PREFIXES = ("x-edgegw-", "x-forwarded-", "x-user", "x-geo-", "x-variant", "x-flag")
_ECHO_EXACT = ("x-request-id", "forwarded", "authorization-subject")
_NAMES = ("Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances")
_COUNTRIES = ("DE", "FR", "US", "JP", "BR", "IN")
_PRODUCTS = ("keyboard", "mouse", "monitor", "headphones", "webcam", "dock", "cable")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def echoed_headers(request: web.Request) -> dict[str, str]:
    """The request headers a demo answer repeats back (lower-case names)."""
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        low = name.lower()
        if low.startswith(_ECHO_PREFIXES) or low in _ECHO_EXACT:
            out[low] = value
    return out


def _seed(text: str) -> int:
    # Stable across processes (hash() is salted), so the demo answers are reproducible.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _answer(service: str, request: web.Request, **fields: Any) -> web.Response:
    doc: dict[str, Any] = {"service": service, **fields, "headers": echoed_headers(request)}
    return web.json_response(doc)


def _user_param(request: web.Request) -> str | None:
    user = request.query.get("user", "").strip()
    return user or None


def _missing_user(service: str) -> web.Response:
    return web.json_response(
        {"service": service, "error": "query parameter 'user' is required"}, status=400
    )


async def _users(request: web.Request) -> web.Response:
    uid = request.match_info["id"]
    seed = _seed(uid)
    return _answer(
        "users",
        request,
        id=uid,
        name=f"{_NAMES[seed % len(_NAMES)]} #{uid}",
        country=_COUNTRIES[seed % len(_COUNTRIES)],
        tier="gold" if seed % 3 == 0 else "standard",
    )


async def _orders(request: web.Request) -> web.Response:
    user = _user_param(request)
    if user is None:
        return _missing_user("orders")
    seed = _seed("orders:" + user)
    orders = [
        {"id": f"o-{user}-{i}", "item": _PRODUCTS[(seed + i) % len(_PRODUCTS)], "qty": 1 + i}
        for i in range(seed % 4)
    ]
    return _answer("orders", request, user=user, orders=orders)


async def _recommendations(request: web.Request) -> web.Response:
    user = _user_param(request)
    if user is None:
        return _missing_user("recommendations")
    seed = _seed("reco:" + user)
    items = [_PRODUCTS[(seed + 2 * i) % len(_PRODUCTS)] for i in range(3)]
    return _answer("recommendations", request, user=user, items=items)


def _shop(version: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        body = await request.text() if request.can_read_body else ""
        return _answer(
            f"shop-{version}",
            request,
            version=version,
            method=request.method,
            path=request.path_qs,
            body=body,
        )

    return handler


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_service_app(name: str) -> web.Application:
    """One demo service's aiohttp application (``name`` is one of SERVICES)."""
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    if name == "users":
        app.router.add_get("/users/{id}", _users)
    elif name == "orders":
        app.router.add_get("/orders", _orders)
    elif name == "recommendations":
        app.router.add_get("/recommendations", _recommendations)
    elif name in ("shop-v1", "shop-v2"):
        handler = _shop(name.removeprefix("shop-"))
        app.router.add_route("*", "/shop", handler)
        app.router.add_route("*", "/shop/{tail:.*}", handler)
    else:
        raise ValueError(f"unknown demo service {name!r}")
    return app


@dataclass
class DemoServices:
    """The five services, started on ``host`` at ``base_port`` .. ``base_port + 4``.

    ``base_port=0`` gives every service a free ephemeral port (for tests); ``ports`` maps
    service name to the bound port once started.
    """

    host: str = "127.0.0.1"
    base_port: int = DEFAULT_BASE_PORT
    ports: dict[str, int] = field(default_factory=dict)
    _runners: list[web.AppRunner] = field(default_factory=list)

    async def start(self) -> dict[str, int]:
        try:
            for i, name in enumerate(SERVICES):
                runner = web.AppRunner(create_service_app(name), access_log=None)
                await runner.setup()
                self._runners.append(runner)
                port = self.base_port + i if self.base_port else 0
                site = web.TCPSite(runner, self.host, port)
                await site.start()
                self.ports[name] = _bound_port(runner, port)
        except OSError:
            await self.stop()
            raise
        return dict(self.ports)

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


async def run_demo(
    host: str = "127.0.0.1",
    base_port: int = DEFAULT_BASE_PORT,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the demo services until cancelled (Ctrl-C)."""
    services = DemoServices(host=host, base_port=base_port)
    await services.start()
    try:
        for name, port in services.ports.items():
            announce(f"demo {name:<16} http://{host}:{port}")
        await asyncio.Event().wait()
    finally:
        await services.stop()


#: The HS256 secret gateway.yaml.example's jwt filter uses unless EDGEGW_DEMO_JWT_SECRET
#: is set. For the demo only: a real deployment uses its IdP's keys.
DEMO_JWT_SECRET = "edgegw-demo-secret-do-not-use-in-production-0123456789abcdef"
DEMO_ISSUER = "edgegw-demo"


def demo_token(subject: str = "42", secret: str = DEMO_JWT_SECRET, ttl: int = 3600) -> str:
    """An HS256 token the demo's jwt filter accepts (for `edgegw demo --token`)."""
    import base64
    import hmac
    import json
    import time

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": DEMO_ISSUER, "aud": "demo", "sub": subject, "iat": now, "exp": now + ttl,
              "scope": "profile", "plan": "pro"}  # fmt: skip
    signed = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return signed + "." + b64(mac)
