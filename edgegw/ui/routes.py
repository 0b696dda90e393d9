"""The admin UI's routes: the static app under ``/ui/`` and two read endpoints under
``/admin/`` (so the admin token guards them like the rest of the API: edgegw/admin.py).

Everything else the UI shows or changes goes through the existing admin API
(``/admin/config``, ``/admin/status``, ``/admin/flags``, ``/admin/reload``, ``/readyz``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from edgegw.observe import metrics
from edgegw.store.base import validate_flag
from edgegw.ui import preview
from edgegw.ui.live import LiveMetrics, read_sample

STATIC = Path(__file__).with_name("static")
#: The files served under /ui/ (a fixed list: no path from the request reaches the disk).
FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in (".html", ".js", ".css")}
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# The page runs only its own files and talks only to this listener.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

LIVE = web.AppKey("edgegw_ui_live", LiveMetrics)


async def _index_redirect(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


async def _static(request: web.Request) -> web.Response:
    name = request.match_info.get("name") or "index.html"
    path = FILES.get(name)
    if path is None:
        raise web.HTTPNotFound()
    body = await asyncio.to_thread(path.read_bytes)
    return web.Response(
        body=body, headers={**HEADERS, "Content-Type": TYPES[path.suffix] + "; charset=utf-8"}
    )


async def _live(request: web.Request) -> web.Response:
    """Per route: req/s, error rate and p50/p99 of each window of the last minute."""
    from edgegw.admin import STATE, running_config

    live = request.app[LIVE]
    if live.due():
        metrics.flush()  # this process's pending samples, on the loop that records them
        live.add(await asyncio.to_thread(read_sample))
    latest = live.latest()
    names = [route["name"] for route in (await running_config(request.app[STATE]))["routes"]]
    return web.json_response(
        {
            "routes": live.series(names),
            "route_totals": {n: t.count for n, t in latest.routes.items()} if latest else {},
            "filter_calls": latest.filter_calls if latest else {},
            "filter_failures": latest.filter_failures if latest else {},
            "circuit_open": latest.circuit_open if latest else {},
        }
    )


def _subject(doc: Any) -> tuple[str, str, dict[str, str], dict[str, Any] | None]:
    if not isinstance(doc, dict):
        raise ValueError("the body is a JSON object")
    key, country = doc.get("key", ""), doc.get("country", "")
    headers, claims = doc.get("headers", {}), doc.get("claims")
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    if not isinstance(country, str):
        raise ValueError("country must be a string")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("headers must map names to strings")
    if claims is not None and not isinstance(claims, dict):
        raise ValueError("claims must be an object")
    return key, country, headers, claims


async def _preview(request: web.Request) -> web.Response:
    """Which flags a sample subject gets, evaluated as the ab_flags filter does
    (edgegw/ui/preview.py). ``definition`` (with ``name``) previews an unsaved edit."""
    from edgegw.admin import problem
    from edgegw.store.admin import API

    if request.content_type != "application/json":
        return problem(415, "Unsupported Media Type", "send 'Content-Type: application/json'")
    try:
        doc = json.loads(await request.read())
        key, country, headers, claims = _subject(doc)
        table = dict((await request.app[API].flags()).flags)
        if "definition" in doc:
            name = doc.get("name")
            if not isinstance(name, str):
                raise ValueError("name must be a string")
            table[name] = validate_flag(name, doc["definition"])
    except ValueError as exc:
        return problem(400, "Bad Request", str(exc))
    results = {
        name: preview.evaluate(name, table[name], key, country, headers, claims)
        for name in sorted(table)
    }
    header = ",".join(f"{n}={'on' if r['on'] else 'off'}" for n, r in results.items())
    return web.json_response({"key": key, "flags": results, "x-edgegw-flags": header})


def add_ui_routes(app: web.Application) -> None:
    app[LIVE] = LiveMetrics()
    app.router.add_get("/ui", _index_redirect)
    app.router.add_get("/ui/", _static)
    app.router.add_get("/ui/{name}", _static)
    app.router.add_get("/admin/live", _live)
    app.router.add_post("/admin/preview/flags", _preview)
