"""The admin application, served for real on a loopback port."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgegw.admin import EXTENSIONS, create_admin_app, render_metrics
from edgegw.model import Address, AdminConfig, Backend, GatewayConfig, StoreConfig, frozen_map
from tests.conftest import free_port

TOKEN = "s3cret-token"

Serve = Callable[..., Awaitable[str]]


def make_config(listen_port: int = 1, token: str | None = None) -> GatewayConfig:
    return GatewayConfig(
        version=1,
        listen=Address("127.0.0.1", listen_port),
        admin=AdminConfig(listen=Address("127.0.0.1", 0), token=token),
        backends=frozen_map({"users": Backend(name="users", url="http://127.0.0.1:9001")}),
    )


@pytest.fixture
async def serve_admin(tmp_path: Path) -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def serve(config: GatewayConfig, **kwargs: Any) -> str:
        runner = web.AppRunner(create_admin_app(config, tmp_path, **kwargs), access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield serve
    for r in runners:
        await r.cleanup()


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_healthz(serve_admin: Serve) -> None:
    base = await serve_admin(make_config(token=TOKEN))
    status, _ctype, body = await _get(base + "/healthz")
    assert (status, body) == (200, '{"status": "ok"}')


async def test_readyz_follows_the_data_port(serve_admin: Serve) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        base = await serve_admin(make_config(listen_port=port))
        # Bound but not listening: connections are refused, so not ready.
        status, _c, _b = await _get(base + "/readyz")
        assert status == 503
        listener.listen(8)
        status, _c, body = await _get(base + "/readyz")
        assert status == 200, body


@pytest.mark.parametrize(("on_error", "status"), [("fail_open", 200), ("fail_closed", 503)])
async def test_readyz_reports_a_dead_store(serve_admin: Serve, on_error: str, status: int) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        dead = f"redis://127.0.0.1:{free_port()}/0"
        config = dataclasses.replace(
            make_config(listen_port=listener.getsockname()[1]),
            store=StoreConfig(url=dead, on_error=on_error, timeout=0.2),  # type: ignore[arg-type]
        )
        base = await serve_admin(config)
        got, _c, body = await _get(base + "/readyz")
        assert got == status, body
        assert json.loads(body)["store"] == "down"


async def test_metrics_default_registry(
    serve_admin: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    base = await serve_admin(make_config())
    status, ctype, body = await _get(base + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    assert "python_info" in body


def test_metrics_aggregate_other_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prom = tmp_path / "prom"
    prom.mkdir()
    # Two real processes each count once, as two workers would.
    script = textwrap.dedent("""
        from prometheus_client import Counter
        Counter("edgegw_test_hits", "test", ["worker"]).labels(worker="w").inc()
    """)
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", script], env={"PROMETHEUS_MULTIPROC_DIR": str(prom)}, check=True
        )
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(prom))
    body, ctype = render_metrics()
    assert ctype.startswith("text/plain")
    assert 'edgegw_test_hits_total{worker="w"} 2.0' in body.decode()


async def test_token_guards_admin_paths_only(serve_admin: Serve) -> None:
    async def secret(_r: web.Request) -> web.Response:
        return web.json_response({"secret": True})

    def extension(app: web.Application) -> None:
        app.router.add_get("/admin/secret", secret)

    base = await serve_admin(make_config(token=TOKEN), extensions=[extension])
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, ctype, body = await _get(base + "/admin/secret", headers)
        assert status == 401, headers
        assert ctype.startswith("application/problem+json")
        assert "secret" not in body
    status, _c, body = await _get(base + "/admin/secret", {"Authorization": f"Bearer {TOKEN}"})
    assert (status, body) == (200, '{"secret": true}')
    # Probes stay open without the token.
    for path in ("/healthz", "/metrics"):
        status, _c, _b = await _get(base + path)
        assert status == 200, path


async def test_no_token_means_open_admin(serve_admin: Serve) -> None:
    def extension(app: web.Application) -> None:
        async def ping(_r: web.Request) -> web.Response:
            return web.json_response({"pong": True})

        app.router.add_get("/admin/ping", ping)

    EXTENSIONS.append(extension)
    try:
        base = await serve_admin(make_config(token=None))
    finally:
        EXTENSIONS.remove(extension)
    status, _c, _b = await _get(base + "/admin/ping")
    assert status == 200


async def test_admin_config_is_redacted(serve_admin: Serve) -> None:
    base = await serve_admin(make_config(token=TOKEN))
    status, _c, _b = await _get(base + "/admin/config")
    assert status == 401
    status, ctype, body = await _get(base + "/admin/config", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    assert ctype.startswith("application/json")
    assert TOKEN not in body
    assert "users" in body
