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


_STRINGS_WAT = """
(module
  (import "env" "host" (func $host (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "X-Trivial")
  (data (i32.const 32) "Value-A")
  (data (i32.const 48) "Q")
  (func (export "call") (param i32 i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 call $host)
  (start $warm)
  (global $from_start (export "from_start") (mut i32) (i32.const -1))
  (func $warm (global.set $from_start (call $start_call_inner)))
  (func $start_call_inner (result i32)
    i32.const 0 i32.const 16 i32.const 9 i32.const 32 i32.const 7 call $host))
"""


def test_string_arguments_are_read_in_c() -> None:
    import wasmtime

    from edgegw.wasm.engine import engine
    from edgegw.wasm.fastcall import Memory, define_host_func, raw_func

    seen: list[tuple[object, ...]] = []

    def impl(*args: object) -> int:
        seen.append(args)
        return 0

    eng = engine()
    module = wasmtime.Module(eng, bytes(wasmtime.wat2wasm(_STRINGS_WAT)))
    store = wasmtime.Store(eng)
    store.set_epoch_deadline(10**6)
    linker = wasmtime.Linker(eng)
    ty = wasmtime.FuncType([wasmtime.ValType.i32()] * 5, [wasmtime.ValType.i32()])
    host = define_host_func(linker, "env", "host", ty, impl, (1, 3))
    instance = linker.instantiate(store, module)  # its start function calls the host
    exports = instance.exports(store)
    # Before the memory is attached (a start function), a header map is not found.
    from_start = exports["from_start"]
    assert isinstance(from_start, wasmtime.Global)
    assert from_start.value(store) == 1  # NOT_FOUND
    assert seen == []
    memory = exports["memory"]
    assert isinstance(memory, wasmtime.Memory)
    Memory(store, memory).attach(host)
    call = exports["call"]
    assert isinstance(call, wasmtime.Func)
    fast = raw_func(store, call, "call", 10**6)
    assert fast(2, 16, 9, 32, 7) == 0
    assert seen == [(2, b"x-trivial", b"Value-A")]  # the name lowercased, the value not
    # A one-byte name: CPython shares one-byte bytes objects; lowercasing must not write one.
    assert fast(0, 48, 1, 48, 1) == 0
    assert seen[-1] == (0, b"q", b"Q")
    assert bytes([81])[0] == 81 and bytes([81]) == b"Q"
    seen.clear()
    # Out of bounds: INVALID_MEMORY_ACCESS, and the Python side is never called.
    assert fast(2, 65536 - 4, 9, 32, 7) == 6
    assert fast(2, 16, 9, 0xFFFFFFF0, 0x20) == 6
    assert seen == []
