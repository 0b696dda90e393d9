"""The admin listener: an aiohttp.web application served from the supervisor process.

Built-in routes: ``/healthz``, ``/readyz``, ``/metrics`` (open) and ``/admin/config``
(token-protected when ``admin.token`` is set). Other modules add routes with an
*extension*: a function ``(app: web.Application) -> None`` that calls
``app.router.add_*``; list it in ``EXTENSIONS`` or pass it to ``create_admin_app``.
Handlers read the live state through ``app[STATE]`` (an ``AdminState``), which a reload
may update in place.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from edgegw.model import Address, GatewayConfig
from edgegw.observe import metrics

Extension = Callable[[web.Application], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class AdminState:
    """What admin handlers read; mutable so a reload can swap ``config``."""

    config: GatewayConfig
    runtime_dir: Path


STATE = web.AppKey("edgegw_admin_state", AdminState)

#: Paths under these prefixes need ``Authorization: Bearer <admin.token>`` when a token is
#: set: the admin API, and the store API (it spends and can lock any rate-limit key).
PROTECTED_PREFIXES: tuple[str, ...] = ("/admin/", "/store/")

#: Extensions applied by every ``create_admin_app`` call (other modules append here).
EXTENSIONS: list[Extension] = []

_READY_TIMEOUT = 0.5
_RELOAD_WAIT = 30.0  # seconds POST /admin/reload waits for every worker


def problem(status: int, title: str, detail: str = "", **extra: Any) -> web.Response:
    """An RFC 9457 problem+json response."""
    doc: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    doc.update(extra)
    return web.Response(
        status=status, text=json.dumps(doc), content_type="application/problem+json"
    )


def _bearer_ok(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant-time compare so the token cannot be guessed byte by byte from timings.
    return hmac.compare_digest(given.strip().encode(), token.encode())


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[STATE].config.admin.token
    if token and request.path.startswith(PROTECTED_PREFIXES) and not _bearer_ok(request, token):
        resp = problem(401, "Unauthorized", "a valid 'Authorization: Bearer <token>' is required")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="edgegw-admin"'
        return resp
    return await handler(request)


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def probe_host(address: Address) -> str:
    """Where to connect to reach a listener bound to ``address`` (wildcards -> loopback)."""
    if address.host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address.host == "::":
        return "::1"
    return address.host


async def port_open(address: Address) -> bool:
    """True when a TCP connection to ``address`` succeeds (bounded by a short timeout)."""
    try:
        async with asyncio.timeout(_READY_TIMEOUT):
            _reader, writer = await asyncio.open_connection(probe_host(address), address.port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def _readyz(request: web.Request) -> web.Response:
    """Ready when the data plane accepts connections. The store's health is reported;
    it makes the gateway unready only with ``store.on_error: fail_closed``, the one
    policy under which a dead store fails requests."""
    from edgegw.store.admin import store_health

    config = request.app[STATE].config
    listen = config.listen
    store_up = await store_health(request.app)
    doc = {"listen": str(listen), "store": "up" if store_up else "down"}
    if not await port_open(listen):
        doc.update(status="not ready", detail="data plane port not accepting")
        return web.json_response(doc, status=503)
    if not store_up and config.store.on_error == "fail_closed":
        doc.update(status="not ready", detail="store unreachable and store.on_error is fail_closed")
        return web.json_response(doc, status=503)
    return web.json_response({"status": "ready", **doc})


def render_metrics() -> tuple[bytes, str]:
    """Prometheus exposition of every worker (multiprocess mode) or this process."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
    )

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


async def _metrics(_request: web.Request) -> web.Response:
    metrics.flush()  # this process's pending samples (on the loop that records them)
    # The multiprocess collector reads every worker's mmap files: file I/O, so off the loop.
    body, content_type = await asyncio.to_thread(render_metrics)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def running_config(state: AdminState) -> dict[str, Any]:
    """The config the workers serve: the newest one a live worker loaded (a reload changes
    it; the supervisor's own ``state.config`` is the one it started with), with the keys
    only a restart changes as they are; the start config until a worker has reported."""
    from edgegw.config import in_effect, redacted
    from edgegw.reload import live_worker_files

    started = redacted(state.config)
    loaded = await asyncio.to_thread(live_worker_files, state.runtime_dir, "config")
    if not loaded:
        return started
    newest = max(loaded, key=lambda doc: float(doc["loaded_at"]))
    return in_effect(started, newest["config"])


async def _admin_config(request: web.Request) -> web.Response:
    return web.json_response(await running_config(request.app[STATE]))


async def _admin_status(request: web.Request) -> web.Response:
    from edgegw.reload import live_worker_files, worker_statuses

    state = request.app[STATE]
    workers = await asyncio.to_thread(worker_statuses, state.runtime_dir)
    # Each worker's endpoints and their state (health, ejection) as of its last change.
    upstreams = await asyncio.to_thread(live_worker_files, state.runtime_dir, "upstreams")
    doc = {"workers": workers, "expected_workers": state.config.workers, "upstreams": upstreams}
    return web.json_response(doc)


async def _admin_reload(request: web.Request) -> web.Response:
    """Ask every worker to reload and wait (bounded) for their answers."""
    return await _reload_workers(request.app[STATE])


async def _reload_workers(state: AdminState, **extra: Any) -> web.Response:
    from edgegw.reload import request_reload, worker_statuses

    token = await asyncio.to_thread(request_reload, state.runtime_dir)
    deadline = asyncio.get_running_loop().time() + _RELOAD_WAIT
    while True:
        workers = await asyncio.to_thread(worker_statuses, state.runtime_dir)
        done = [w for w in workers if w.get("request_seen") == token]
        # A reload is judged on the workers' last attempt, which is this one when seen.
        if len(done) >= state.config.workers or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    failed = [w for w in done if w.get("last_result") == "error"]
    if len(done) < state.config.workers:
        return problem(504, "Reload Pending", "not every worker answered in time", workers=done)
    if failed:
        detail = failed[0].get("last_error", "")
        return problem(422, "Reload Rejected", detail, workers=workers)
    return web.json_response({"status": "reloaded", **extra, "workers": workers})


async def _get_log_levels(request: web.Request) -> web.Response:
    """The admin overrides and each filter's configured level (edgegw/observe/loglevels.py)."""
    from edgegw.observe.loglevels import read_overrides

    state = request.app[STATE]
    overrides = await asyncio.to_thread(read_overrides, state.runtime_dir)
    filters = {name: spec.log_level for name, spec in state.config.filters.items()}
    return web.json_response({"overrides": overrides, "filters": filters})


async def _put_log_levels(request: web.Request) -> web.Response:
    """``{"<logger>": "<level>" | null}``: set (null: drop) overrides, then every worker
    applies them by a reload (the config is re-read too, as by POST /admin/reload)."""
    from edgegw.observe.loglevels import validate, write_overrides

    try:
        changes = validate(await request.json())
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        return problem(400, "Bad Log Levels", str(exc))
    state = request.app[STATE]
    merged = await asyncio.to_thread(write_overrides, state.runtime_dir, changes)
    return await _reload_workers(state, overrides=merged)


def _core_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/admin/config", _admin_config)
    app.router.add_get("/admin/status", _admin_status)
    app.router.add_post("/admin/reload", _admin_reload)
    app.router.add_get("/admin/log-levels", _get_log_levels)
    app.router.add_put("/admin/log-levels", _put_log_levels)


def create_admin_app(
    config: GatewayConfig,
    runtime_dir: Path,
    extensions: Iterable[Extension] = (),
) -> web.Application:
    """The admin application for ``config``; ``extensions`` add routes after the core ones."""
    app = web.Application(middlewares=[_auth_middleware])
    app[STATE] = AdminState(config=config, runtime_dir=runtime_dir)
    _core_routes(app)
    from edgegw.store.admin import add_store_routes

    add_store_routes(app, config.store, runtime_dir)
    from edgegw.ui.routes import add_ui_routes

    add_ui_routes(app)
    for extend in (*EXTENSIONS, *extensions):
        extend(app)
    return app
