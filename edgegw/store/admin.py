"""Store routes of the admin listener: the filters' JSON API under ``/store`` (for
filters running in Envoy) and flag editing under ``/admin/flags``, both token-protected
when ``admin.token`` is set (``edgegw.admin.PROTECTED_PREFIXES``)."""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path

from aiohttp import web

from edgegw.errors import StoreUnavailable
from edgegw.model import StoreConfig
from edgegw.store import open_store
from edgegw.store.api import STORE_UP, StoreAPI
from edgegw.store.base import validate_flag

API = web.AppKey("edgegw_store_api", StoreAPI)


def _problem(status: int, detail: str) -> web.Response:
    from edgegw.admin import problem  # admin imports this module when it builds its app

    return problem(status, HTTPStatus(status).phrase, detail)


async def _store_api(request: web.Request) -> web.Response:
    # Only JSON: a browser sends text/plain or a form cross-site without a preflight
    # (Fetch standard, CORS-safelisted request headers), so another page could spend or
    # lock a key through a visitor's browser (CSRF). The token (admin.py) covers the rest.
    if request.method == "POST" and request.content_type != "application/json":
        return _problem(415, "the store API takes 'Content-Type: application/json'")
    api = request.app[API]
    path = request.path.removeprefix("/store")
    status, doc = await api.handle(request.method, path, await request.read(), remote=True)
    return web.json_response(doc, status=status)


async def _list_flags(request: web.Request) -> web.Response:
    return web.json_response((await request.app[API].flags()).as_json())


async def _get_flag(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    snapshot = await request.app[API].flags()
    if name not in snapshot.flags:
        return _problem(404, f"no flag '{name}'")
    return web.json_response({"name": name, "definition": snapshot.flags[name],
                              "version": snapshot.version})  # fmt: skip


async def _put_flag(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        definition = validate_flag(name, json.loads(await request.read()))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        return _problem(400, f"invalid flag '{name}': {exc}")
    try:
        version = await request.app[API].store.put_flag(name, definition)
    except StoreUnavailable as exc:
        return _problem(503, str(exc))
    return web.json_response({"name": name, "definition": definition, "version": version})


async def _delete_flag(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        version = await request.app[API].store.delete_flag(name)
    except StoreUnavailable as exc:
        return _problem(503, str(exc))
    if version is None:
        return _problem(404, f"no flag '{name}'")
    return web.json_response({"name": name, "deleted": True, "version": version})


async def store_health(app: web.Application) -> bool:
    """Whether the store answers (also updates ``edgegw_store_up``)."""
    api = app.get(API)
    if api is None:
        return True
    up = await api.store.health()
    STORE_UP.set(1 if up else 0)
    return up


def add_store_routes(app: web.Application, config: StoreConfig, runtime_dir: Path) -> None:
    """Open a store for the admin process and add its routes; closed with the app."""
    api = StoreAPI(open_store(config, runtime_dir), config)
    app[API] = api

    async def close(_app: web.Application) -> None:
        await api.aclose()

    app.on_cleanup.append(close)
    app.router.add_post("/store/v1/ratelimit", _store_api)
    app.router.add_get("/store/v1/flags", _store_api)
    app.router.add_get("/admin/flags", _list_flags)
    app.router.add_get("/admin/flags/{name}", _get_flag)
    app.router.add_put("/admin/flags/{name}", _put_flag)
    app.router.add_delete("/admin/flags/{name}", _delete_flag)
