"""Per-call overheads of edgegw's wasm fast path beside wasmtime-py's public API.

    .venv/bin/python bench/wasm_calls.py

Python → wasm: a guest export taking one i32, called through ``fastcall.raw_func`` (the C extension)
(``wasmtime_func_call_unchecked``) and through ``wasmtime.Func.__call__``.
wasm → Python: a guest export that calls one host function, the host function being
registered raw (``define_host_func``, unchecked) or with ``Linker.define_func``.
Results are printed and appended to docs/benchmarks.md between its wasm-calls markers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from edgegw.wasm.engine import engine
from edgegw.wasm.fastcall import define_host_func, raw_func

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import write_block

WAT = """
(module
  (import "env" "host" (func $host (param i32) (result i32)))
  (func (export "plain") (param i32) (result i32) local.get 0)
  (func (export "calls_host") (param i32) (result i32) local.get 0 call $host))
"""
N = 200_000


def per_call_us(fn: Callable[[], object]) -> float:
    for _ in range(2000):
        fn()
    start = time.perf_counter()
    for _ in range(N):
        fn()
    return (time.perf_counter() - start) / N * 1e6


def instance(raw_host: bool) -> tuple[wasmtime.Store, dict[str, wasmtime.Func], list[object]]:
    eng = engine()
    module = wasmtime.Module(eng, wasmtime.wat2wasm(WAT))
    store = wasmtime.Store(eng)
    store.set_epoch_deadline(10**9)
    linker = wasmtime.Linker(eng)
    ty = wasmtime.FuncType([wasmtime.ValType.i32()], [wasmtime.ValType.i32()])
    keep: list[object] = []
    if raw_host:
        keep.append(define_host_func(linker, "env", "host", ty, lambda x: x + 1))
    else:
        linker.define_func("env", "host", ty, lambda x: x + 1)
    inst = linker.instantiate(store, module)
    exports = inst.exports(store)
    funcs = {name: exports[name] for name in ("plain", "calls_host")}
    return store, funcs, keep  # type: ignore[return-value]


def main() -> None:
    store, funcs, _keep = instance(raw_host=True)
    fast_plain = raw_func(store, funcs["plain"], "plain", 10**9)
    fast_host = raw_func(store, funcs["calls_host"], "calls_host", 10**9)
    public_plain = funcs["plain"]
    call_fast = per_call_us(lambda: fast_plain(7))
    call_public = per_call_us(lambda: public_plain(store, 7))
    host_fast = per_call_us(lambda: fast_host(7)) - call_fast

    store2, funcs2, _k2 = instance(raw_host=False)
    slow_host = raw_func(store2, funcs2["calls_host"], "calls_host", 10**9)
    slow_plain = raw_func(store2, funcs2["plain"], "plain", 10**9)
    host_public = per_call_us(lambda: slow_host(7)) - per_call_us(lambda: slow_plain(7))

    rows = [
        ("Python → wasm call", call_fast, call_public),
        ("wasm → Python hostcall", host_fast, host_public),
    ]
    lines = [
        "| per call | edgegw fast path µs | wasmtime-py public API µs | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {f:.2f} | {p:.2f} | {p / f:.1f}x |" for n, f, p in rows),
        "",
        f"{N:,} calls each, one process; {time.ctime()}",
    ]
    text = "\n".join(lines)
    print(text)
    write_block("wasm-calls", text, "wasm call overheads (`bench/wasm_calls.py`)")


if __name__ == "__main__":
    main()
