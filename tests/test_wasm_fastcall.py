"""The raw C-API fast path is the one in use, and guest memory access is bounds-checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import parse_config
from edgegw.wasm import _fastcall, fastcall
from edgegw.wasm.fastcall import RawFunc
from edgegw.wasm.plugin import Plugin
from tests.conftest import LoopbackBackend


async def test_requests_run_through_unchecked_calls(
    backend_factory: Callable[..., LoopbackBackend], test_wasm: Callable[[str], Path]
) -> None:
    backend = backend_factory()
    text = f"""
version: 1
backends: {{api: "{backend.url}"}}
filters: {{f: {{wasm: {test_wasm("faulty")}}}}}
routes: [{{match: {{prefix: /}}, filters: [f], backend: api}}]
"""
    app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
    await app.startup()
    plugin = app.pipeline.chains.plugins["f"]  # type: ignore[union-attr]
    assert isinstance(plugin, Plugin)
    assert all(isinstance(f, RawFunc) for f in plugin.funcs.values())
    # Every import is a raw unchecked callback into _fastcall, none a wasmtime-py Func.
    assert plugin._callbacks
    assert all(isinstance(cb, _fastcall.Host) for cb in plugin._callbacks)
    guest, host = fastcall.calls()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw"
    ) as client:
        for _ in range(3):
            assert (await client.get("/")).headers["x-faulty"] == "ok"
    # per request: context_create, request_headers, response_headers, log, done, delete
    guest_after, host_after = fastcall.calls()
    assert guest_after - guest >= 3 * 6
    assert host_after - host >= 3 * 2  # get_header_map_value + add_header
    await app.aclose()


def test_memory_is_bounds_checked(test_wasm: Callable[[str], Path]) -> None:
    from edgegw.model import FilterSpec
    from edgegw.wasm.plugin import compile_filter

    spec = FilterSpec(name="f", wasm=test_wasm("faulty"))
    module, _digest = compile_filter(spec)

    async def no_call(*_a: object) -> object:
        raise AssertionError("unused")

    plugin = Plugin(spec, module, "x", no_call, frozenset())  # type: ignore[arg-type]
    plugin.memory.write(16, b"abc")
    assert plugin.memory.read(16, 3) == b"abc"
    with pytest.raises(IndexError):
        plugin.memory.read(0xFFFFFF00, 512)
    with pytest.raises(IndexError):
        plugin.memory.write(0xFFFFFFFF, b"xy")
    plugin.close()
