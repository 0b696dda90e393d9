"""Per-call overheads of edgegw's wasm fast path beside wasmtime-py's public API.

    .venv/bin/python bench/wasm_calls.py

Python → wasm: a guest export taking one i32, called through ``fastcall.raw_func`` (the C extension)
(``wasmtime_func_call_unchecked``) and through ``wasmtime.Func.__call__``.
wasm → Python: a guest export that calls one host function, the host function being
registered raw (``define_host_func``, unchecked) or with ``Linker.define_func``.
Results are printed and appended to docs/benchmarks.md between its wasm-calls markers.
``--cpu-time`` times the thread's CPU time instead of wall-clock time (bench/chain.py
says when that matters).
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime
from wasmtime import _bindings as ffi

from edgegw.wasm.engine import engine
from edgegw.wasm.fastcall import define_host_func, raw_func

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_model, write_block

WAT = """
(module
  (import "env" "host" (func $host (param i32) (result i32)))
  (func (export "plain") (param i32) (result i32) local.get 0)
  (func (export "calls_host") (param i32) (result i32) local.get 0 call $host))
"""
N = 200_000
CPU_TIME = "--cpu-time" in sys.argv[1:]
CLOCK = time.thread_time if CPU_TIME else time.perf_counter
VP = ctypes.c_void_p


def per_call_us(fn: Callable[[], object]) -> float:
    for _ in range(2000):
        fn()
    start = CLOCK()
    for _ in range(N):
        fn()
    return (CLOCK() - start) / N * 1e6


_CTYPES_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, VP, VP, VP, ctypes.c_size_t)


def _ctypes_host(linker: wasmtime.Linker, ty: wasmtime.FuncType) -> object:
    def callback(_env: object, _caller: object, args: int, _n: int) -> int:
        words = (ctypes.c_uint64 * 2).from_address(args)
        words[0] = (words[0] & 0xFFFFFFFF) + 1
        return 0

    raw = _CTYPES_CALLBACK(callback)
    define = ffi.dll["wasmtime_linker_define_func_unchecked"]  # type: ignore[attr-defined]
    define.restype = VP
    define.argtypes = [VP, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                       VP, _CTYPES_CALLBACK, VP, VP]  # fmt: skip
    linker_ptr = ctypes.cast(linker.ptr(), VP).value
    assert not define(linker_ptr, b"env", 3, b"host", 4, ctypes.cast(ty.ptr(), VP).value, raw,
                      None, None)  # fmt: skip
    return raw


def ctypes_call(store: wasmtime.Store, func: wasmtime.Func) -> Callable[[int], int]:
    """The raw call through ctypes, with every argument a ready ctypes object."""
    call = ffi.dll["wasmtime_func_call_unchecked"]  # type: ignore[attr-defined]
    call.restype = VP
    buf = (ffi.wasmtime_val_raw_t * 1)()
    words = (ctypes.c_uint64 * 2).from_buffer(buf)
    ctx = VP(ctypes.cast(store._context(), VP).value)
    ref, n, trap = ctypes.byref(func._func), ctypes.c_size_t(1), VP()
    trap_ref = ctypes.byref(trap)

    def run(value: int) -> int:
        words[0] = value
        call(ctx, ref, buf, n, trap_ref)
        return words[0] & 0xFFFFFFFF

    return run


def instance(host: str) -> tuple[wasmtime.Store, dict[str, wasmtime.Func], list[object]]:
    eng = engine()
    module = wasmtime.Module(eng, bytes(wasmtime.wat2wasm(WAT)))
    store = wasmtime.Store(eng)
    store.set_epoch_deadline(10**9)
    linker = wasmtime.Linker(eng)
    ty = wasmtime.FuncType([wasmtime.ValType.i32()], [wasmtime.ValType.i32()])
    keep: list[object] = []
    if host == "fast":
        keep.append(define_host_func(linker, "env", "host", ty, lambda x: x + 1))
    elif host == "ctypes":
        keep.append(_ctypes_host(linker, ty))
    else:
        linker.define_func("env", "host", ty, lambda x: x + 1)
    inst = linker.instantiate(store, module)
    exports = inst.exports(store)
    funcs = {name: exports[name] for name in ("plain", "calls_host")}
    return store, funcs, keep  # type: ignore[return-value]


def main() -> None:
    store, funcs, _keep = instance("fast")
    fast_plain = raw_func(store, funcs["plain"], "plain", 10**9)
    fast_host = raw_func(store, funcs["calls_host"], "calls_host", 10**9)
    public_plain = funcs["plain"]
    call_fast = per_call_us(lambda: fast_plain(7))
    call_public = per_call_us(lambda: public_plain(store, 7))
    host_fast = per_call_us(lambda: fast_host(7)) - call_fast

    store_c, funcs_c, _keep_c = instance("ctypes")
    ctypes_plain = ctypes_call(store_c, funcs_c["plain"])
    ctypes_host = ctypes_call(store_c, funcs_c["calls_host"])
    assert ctypes_plain(7) == 7 and ctypes_host(7) == 8 and fast_host(7) == 8
    call_ctypes = per_call_us(lambda: ctypes_plain(7))
    host_ctypes = per_call_us(lambda: ctypes_host(7)) - call_ctypes

    store_p, funcs_p, _keep_p = instance("public")
    slow_host = raw_func(store_p, funcs_p["calls_host"], "calls_host", 10**9)
    slow_plain = raw_func(store_p, funcs_p["plain"], "plain", 10**9)
    host_public = per_call_us(lambda: slow_host(7)) - per_call_us(lambda: slow_plain(7))

    rows = [
        ("Python → wasm call", call_fast, call_ctypes, call_public),
        ("wasm → Python hostcall", host_fast, host_ctypes, host_public),
    ]
    lines = [
        "| per call | edgegw (C extension) µs | ctypes µs | wasmtime-py public API µs "
        "| ctypes / edgegw | public / edgegw |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {n} | {f:.2f} | {c:.2f} | {p:.2f} | {c / f:.1f}x | {p / f:.1f}x |"
            for n, f, c, p in rows
        ),
        "",
        f"{N:,} calls each, one process{'; thread CPU time' if CPU_TIME else ''}; "
        f"{cpu_model()}; {time.ctime()}",
    ]
    text = "\n".join(lines)
    print(text)
    write_block("wasm-calls", text, "wasm call overheads (`bench/wasm_calls.py`)")


if __name__ == "__main__":
    main()
