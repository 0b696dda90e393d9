"""Filters that trap, loop, bomb memory or pass bad pointers: each follows its on_error
policy and never takes the worker or other filters down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import parse_config
from edgegw.wasm import stream
from tests.conftest import LoopbackBackend

MakeBackend = Callable[..., LoopbackBackend]
Client = Callable[..., AsyncIterator[httpx.AsyncClient]]


@pytest.fixture
async def gateway(
    backend_factory: MakeBackend,
    test_wasm: Callable[[str], Path],
    asgi_client: Callable[..., httpx.AsyncClient],
) -> AsyncIterator[Callable[..., object]]:
    backend = backend_factory()
    faulty = test_wasm("faulty")

    async def make(
        on_error: str, limits: str = "{cpu: 20ms, memory: 2MiB}", config: str = "''"
    ) -> httpx.AsyncClient:
        text = f"""
version: 1
backends: {{api: "{backend.url}"}}
filters:
  faulty: {{wasm: {faulty}, on_error: {on_error}, limits: {limits}, config: {config}}}
  other: {{wasm: {faulty}}}
routes:
  - {{name: f, match: {{prefix: /f}}, filters: [faulty], backend: api}}
  - {{name: o, match: {{prefix: /o}}, filters: [other], backend: api}}
"""
        app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
        await app.startup()
        return asgi_client(app)

    yield make


async def test_trap_fail_closed_then_recovers(gateway: Callable[..., object]) -> None:
    client = await gateway("fail_closed")  # type: ignore[misc]
    r = await client.get("/f", headers={"x-fault": "trap"})
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["filter"] == "faulty"
    assert "x-faulty" not in r.headers  # a failed filter is not called again (Envoy)
    r = await client.get("/f")
    assert (r.status_code, r.headers["x-faulty"]) == (200, "ok")
    r = await client.get("/o")  # another filter of the same module is unaffected
    assert (r.status_code, r.headers["x-faulty"]) == (200, "ok")


async def test_trap_fail_open_skips_the_filter(gateway: Callable[..., object]) -> None:
    client = await gateway("fail_open")  # type: ignore[misc]
    r = await client.get("/f", headers={"x-fault": "trap"})
    assert r.status_code == 200  # the backend answered
    assert "x-faulty" not in r.headers  # the failed filter did not run for this request
    assert (await client.get("/f")).headers["x-faulty"] == "ok"


async def test_trap_reload_gives_a_fresh_vm(gateway: Callable[..., object]) -> None:
    client = await gateway("reload")  # type: ignore[misc]
    app = client._transport.app  # type: ignore[attr-defined]
    before = app.pipeline.chains.plugins["faulty"]
    r = await client.get("/f", headers={"x-fault": "trap"})
    assert r.status_code == 503
    after = app.pipeline.chains.plugins["faulty"]
    assert after is not before and before.closed
    assert (await client.get("/f")).headers["x-faulty"] == "ok"


async def test_infinite_loop_hits_cpu_deadline(gateway: Callable[..., object]) -> None:
    client = await gateway("fail_closed")  # type: ignore[misc]
    r = await client.get("/f", headers={"x-fault": "loop"})
    assert r.status_code == 503
    assert (await client.get("/f")).headers["x-faulty"] == "ok"


async def test_memory_bomb_is_capped(gateway: Callable[..., object]) -> None:
    client = await gateway("fail_closed")  # type: ignore[misc]
    r = await client.get("/f", headers={"x-fault": "bomb"})
    assert r.status_code == 200
    pages = int(r.headers["x-pages"])
    assert 0 < pages * 65536 <= 2 * 1024 * 1024  # limits.memory: 2MiB


async def test_bad_pointer_gets_invalid_memory_access(gateway: Callable[..., object]) -> None:
    client = await gateway("fail_closed")  # type: ignore[misc]
    r = await client.get("/f", headers={"x-fault": "badptr"})
    assert r.status_code == 200
    assert r.headers["x-badptr-status"] == "6"  # INVALID_MEMORY_ACCESS


async def test_context_creation_failure_follows_on_error(
    gateway: Callable[..., object],
) -> None:
    closed = await gateway("fail_closed", config="trap-on-create")  # type: ignore[misc]
    opened = await gateway("fail_open", config="trap-on-create")  # type: ignore[misc]
    for _ in range(2):  # the failed context leaves nothing behind for the next request
        r = await closed.get("/f")
        assert (r.status_code, r.json()["filter"]) == (503, "faulty")
        assert "x-faulty" not in r.headers
        r = await opened.get("/f")
        assert r.status_code == 200 and "x-faulty" not in r.headers
    for client in (closed, opened):
        app = client._transport.app  # type: ignore[attr-defined]
        assert app.pipeline.chains.plugins["faulty"].streams == {}


async def test_body_pause_timeout_passes_the_response_callbacks(
    gateway: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "PAUSE_TIMEOUT", 0.05)
    client = await gateway("fail_closed")  # type: ignore[misc]
    r = await client.post("/f", headers={"x-fault": "stall"}, content=b"hello")
    assert r.status_code == 504
    # Like any reply sent in the request direction: the (paused, not failed) filter sees it.
    assert r.headers["x-faulty"] == "ok"


@pytest.mark.parametrize(("on_error", "status"), [("fail_open", 200), ("fail_closed", 503)])
async def test_trap_in_http_call_response_follows_on_error(
    gateway: Callable[..., object], on_error: str, status: int
) -> None:
    client = await gateway(on_error)  # type: ignore[misc]
    r = await client.get("/f", headers={"x-fault": "calltrap"})
    assert r.status_code == status
    assert "x-faulty" not in r.headers  # the failed filter is not called again
    assert (await client.get("/f")).headers["x-faulty"] == "ok"
