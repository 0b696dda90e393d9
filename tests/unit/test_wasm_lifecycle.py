"""A filter VM is freed once a reload has replaced it and its last request has ended:
reloads leave neither Plugin nor wasmtime Store objects behind, nor their memory, even
for the VMs alive at startup, which ``gc.freeze()`` hides from the cycle collector."""

from __future__ import annotations

import asyncio
import gc
import resource
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import load_config, parse_config
from edgegw.reload import Reloader
from edgegw.wasm import WasmRuntime, stream
from edgegw.wasm.plugin import Plugin
from tests.conftest import LoopbackBackend

REPO = Path(__file__).resolve().parents[2]
RELOADS = 30
# Resident memory a reload may add for good (allocator slack, caches that fill once);
# a leaked generation of these VMs holds more than this: the bound is per reload.
RSS_PER_RELOAD = 256 * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


@pytest.fixture
def production_gc() -> Iterator[None]:
    """What ``GatewayApp.startup`` does to the collector, undone after the test."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def write_config(path: Path, backend: LoopbackBackend, generation: int) -> None:
    dist = REPO / "filters" / "dist"
    path.write_text(f"""
version: 1
access_log: false
backends: {{api: "{backend.url}"}}
filters:
  limit:
    wasm: {dist / "rate_limit.wasm"}
    config: {{policies: [{{name: g{generation}, rate: 1000, period: 1s}}]}}
  flags: {{wasm: {dist / "ab_flags.wasm"}, config: {{}}}}
routes:
  - {{name: r, match: {{prefix: /}}, filters: [limit, flags], backend: api}}
""")


def vms(app: GatewayApp) -> list[Plugin]:
    runtime = app.pipeline.chains
    assert isinstance(runtime, WasmRuntime)
    return list(runtime.plugins.values())


async def test_reloads_free_every_replaced_vm(
    backend_factory: Callable[..., LoopbackBackend], tmp_path: Path, production_gc: None
) -> None:
    backend = backend_factory()
    path = tmp_path / "gateway.yaml"
    write_config(path, backend, 0)
    app = GatewayApp(load_config(path), chains_factory=wasm_chains)
    await app.startup()  # loads the VMs, then gc.freeze() as in every worker
    reloader = Reloader(app, path, None)
    plugins: list[weakref.ref[Plugin]] = []
    stores: list[weakref.ref[object]] = []

    def track() -> None:
        for plugin in vms(app):
            plugins.append(weakref.ref(plugin))
            stores.append(weakref.ref(plugin.store))

    track()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        base = 0
        for generation in range(1, RELOADS + 1):
            assert (await client.get("/x")).status_code == 200  # the VMs serve
            write_config(path, backend, generation)
            assert await reloader.reload("test")
            await asyncio.gather(*app._retiring)  # drained, then closed
            track()
            if generation == 5:  # caches and allocator arenas are warm by now
                base = rss()
        grown = rss() - base
        assert (await client.get("/x")).status_code == 200
    # Before any collection: a replaced VM is freed by reference counting alone.
    assert grown < RSS_PER_RELOAD * (RELOADS - 5), f"RSS grew {grown} bytes"
    gc.collect()
    live = [ref() for ref in plugins if ref() is not None]
    assert sorted(map(id, live)) == sorted(map(id, vms(app)))  # only the serving VMs
    assert sum(ref() is not None for ref in stores) == len(live)
    del live
    await app.aclose()
    gc.collect()
    assert all(ref() is None for ref in plugins)


@pytest.fixture
async def faulty_app(
    backend_factory: Callable[..., LoopbackBackend], test_wasm: Callable[[str], Path]
) -> AsyncIterator[tuple[GatewayApp, LoopbackBackend]]:
    backend = backend_factory()
    text = f"""
version: 1
backends: {{api: "{backend.url}"}}
filters:
  faulty: {{wasm: {test_wasm("faulty")}, on_error: fail_closed}}
routes:
  - {{name: f, match: {{prefix: /f}}, filters: [faulty], backend: api}}
"""
    app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
    await app.startup()
    yield app, backend
    await app.aclose()


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail("condition never met")


async def test_a_request_still_on_a_closed_vm_fails_by_its_policy(
    faulty_app: tuple[GatewayApp, LoopbackBackend],
) -> None:
    """The runtime closes under a request (the drain timeout passed): its response
    phase does not call into the freed Store, the filter fails (fail_closed: 503)."""
    app, backend = faulty_app
    backend.delay = 2.0  # holds the request at the backend while the runtime closes
    [plugin] = vms(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.get("/f")).headers["x-faulty"] == "ok"
        pending = asyncio.ensure_future(client.get("/f"))
        await until(lambda: len(backend.requests) == 2)
        runtime = app.pipeline.chains
        assert isinstance(runtime, WasmRuntime)
        await runtime.aclose()
        assert plugin.closed and not plugin.streams
        r = await pending
    assert r.status_code == 503
    assert r.json()["filter"] == "faulty"
    assert "x-faulty" not in r.headers


async def test_a_request_paused_on_a_closed_vm_fails_at_once(
    faulty_app: tuple[GatewayApp, LoopbackBackend],
) -> None:
    """A request paused by a filter (here forever) fails when its VM closes, instead of
    waiting for the pause timeout."""
    app, backend = faulty_app
    [plugin] = vms(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        stalled = asyncio.ensure_future(
            client.post("/f", headers={"x-fault": "stall"}, content=b"data")
        )
        await until(lambda: any(s.resume is not None for s in plugin.streams.values()))
        plugin.close()
        r = await asyncio.wait_for(stalled, stream.PAUSE_TIMEOUT / 2)
    assert r.status_code == 503
    assert r.json()["filter"] == "faulty"
    assert backend.requests == []
