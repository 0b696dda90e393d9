"""A filter that traps must not leave a torn VM serving later requests (issue #15,
item 13): ``on_trap`` decides what serves them, a fresh VM by default."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import parse_config
from edgegw.errors import ConfigError
from edgegw.wasm import runtime
from tests.conftest import LoopbackBackend

Make = Callable[..., object]


@pytest.fixture
async def gateway(
    backend_factory: Callable[..., LoopbackBackend],
    test_wasm: Callable[[str], Path],
    asgi_client: Callable[..., httpx.AsyncClient],
) -> AsyncIterator[Make]:
    backend = backend_factory()
    faulty = test_wasm("faulty")

    async def make(options: str) -> httpx.AsyncClient:
        text = f"""
version: 1
backends: {{api: "{backend.url}"}}
filters:
  faulty: {{wasm: {faulty}, limits: {{cpu: 20ms, memory: 2MiB}}, {options}}}
  other: {{wasm: {faulty}}}
routes:
  - {{name: f, match: {{prefix: /f}}, filters: [faulty], backend: api}}
  - {{name: o, match: {{prefix: /o}}, filters: [other], backend: api}}
"""
        app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
        await app.startup()
        return asgi_client(app)

    yield make


@pytest.mark.parametrize("options", ["on_error: fail_closed", "on_error: fail_open"])
async def test_a_trap_replaces_the_vm_by_default(gateway: Make, options: str) -> None:
    client: httpx.AsyncClient = await gateway(options)  # type: ignore[assignment]
    r = await client.get("/f", headers={"x-fault": "halftrap"})
    assert r.status_code == (503 if "closed" in options else 200)
    for _ in range(2):
        r = await client.get("/f")
        assert (r.status_code, r.headers["x-faulty"]) == (200, "ok")
        # Before: the VM the trap left kept serving, its state torn halfway.
        assert "x-faulty-state" not in r.headers


async def test_on_trap_keep_keeps_the_torn_vm(gateway: Make) -> None:
    client: httpx.AsyncClient = await gateway("on_trap: keep")  # type: ignore[assignment]
    assert (await client.get("/f", headers={"x-fault": "halftrap"})).status_code == 503
    r = await client.get("/f")
    assert (r.status_code, r.headers["x-faulty-state"]) == (200, "torn")


async def test_on_trap_fail_fails_the_filter_for_good(gateway: Make) -> None:
    closed: httpx.AsyncClient = await gateway("on_trap: fail")  # type: ignore[assignment]
    opened: httpx.AsyncClient = await gateway(  # type: ignore[assignment]
        "on_trap: fail, on_error: fail_open"
    )
    for client in (closed, opened):
        await client.get("/f", headers={"x-fault": "halftrap"})
    for _ in range(2):  # as in Envoy: the VM is not called again, on_error applies
        r = await closed.get("/f")
        assert (r.status_code, r.json()["filter"]) == (503, "faulty")
        r = await opened.get("/f")
        assert r.status_code == 200 and "x-faulty" not in r.headers
    # Another filter of the same module has its own VM.
    r = await closed.get("/o")
    assert (r.status_code, r.headers["x-faulty"]) == (200, "ok")
    app = closed._transport.app  # type: ignore[attr-defined]
    assert app.pipeline.chains.plugins["faulty"].closed


async def test_reloads_are_rate_limited(gateway: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "RELOAD_INTERVAL", 0.3)
    client: httpx.AsyncClient = await gateway("on_error: fail_closed")  # type: ignore[assignment]
    app = client._transport.app  # type: ignore[attr-defined]
    first = app.pipeline.chains.plugins["faulty"]
    assert (await client.get("/f", headers={"x-fault": "halftrap"})).status_code == 503
    second = app.pipeline.chains.plugins["faulty"]
    assert second is not first  # a fresh VM at once
    assert (await client.get("/f", headers={"x-fault": "halftrap"})).status_code == 503
    # A trap right after a reload: no new VM yet, the filter is failed meanwhile.
    assert app.pipeline.chains.plugins["faulty"] is second and second.closed
    r = await client.get("/f")
    assert (r.status_code, r.json()["filter"]) == (503, "faulty")
    await asyncio.sleep(0.5)
    r = await client.get("/f")
    assert (r.status_code, r.headers["x-faulty"]) == (200, "ok")
    assert "x-faulty-state" not in r.headers
    assert app.pipeline.chains.plugins["faulty"] not in (first, second)


def test_on_trap_is_validated(tmp_path: Path) -> None:
    wasm = tmp_path / "f.wasm"
    wasm.write_bytes(b"")
    base = f"version: 1\nfilters:\n  f: {{wasm: {wasm}, "
    assert parse_config(base + "}\n", env={}).filters["f"].on_trap == "reload"
    for options, expected in (
        ("on_trap: sometimes", "filters.f.on_trap: expected one of reload, fail, keep"),
        ("on_error: reload, on_trap: keep", "on_trap: keep contradicts on_error: reload"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(base + options + "}\n", env={})
        assert expected in str(info.value)
