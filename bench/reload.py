"""Hot reload: time from writing a new .wasm to the first response of the new version,
and the start time of a filter VM whose compiled module is in the disk cache.

    .venv/bin/python bench/reload.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, build_wasm, edgegw_with, free_port, nginx_backend, write_block

from edgegw.chain import CallResponse
from edgegw.model import FilterSpec
from edgegw.wasm.plugin import Plugin, compile_filter

SWAPS = 20
STARTS = 200


async def _no_call(*_a: object) -> CallResponse:
    return CallResponse(0)


def vm_start_ms(wasm: Path) -> tuple[float, float]:
    """(median ms to compile-or-load + start a VM from the disk cache, median ms to start
    a VM from an already loaded module)."""
    spec = FilterSpec(name="trivial", wasm=wasm)
    compile_filter(spec)  # fills the disk cache
    cached, warm = [], []
    for _ in range(STARTS):
        t0 = time.perf_counter()
        module, digest = compile_filter(spec)  # deserialized from the cache
        t1 = time.perf_counter()
        Plugin(spec, module, digest, _no_call, frozenset()).close()
        t2 = time.perf_counter()
        cached.append((t2 - t0) * 1000)
        warm.append((t2 - t1) * 1000)
    return statistics.median(cached), statistics.median(warm)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wasm = Path(tmp) / "trivial.wasm"
        a = build_wasm(ROOT / "bench" / "filters" / "trivial.zig").read_bytes()
        wasm.write_bytes(a)
        b = a.replace(b"trivial-AAAA", b"trivial-BBBB")
        cached_ms, warm_ms = vm_start_ms(wasm)
        swaps: list[float] = []
        with nginx_backend() as backend_port:
            port = free_port()
            config = f"""version: 1
listen: 127.0.0.1:{port}
access_log: false
backends: {{nginx: "http://127.0.0.1:{backend_port}"}}
filters: {{trivial: {{wasm: {wasm}}}}}
routes: [{{match: {{prefix: /}}, filters: [trivial], backend: nginx}}]
"""
            with edgegw_with(config, port), httpx.Client(timeout=5) as client:
                url = f"http://127.0.0.1:{port}/"
                for i in range(SWAPS):
                    data, marker = (b, "trivial-BBBB") if i % 2 == 0 else (a, "trivial-AAAA")
                    tmp_file = wasm.with_suffix(".new")
                    tmp_file.write_bytes(data)
                    start = time.perf_counter()
                    tmp_file.replace(wasm)
                    while client.get(url).headers.get("x-trivial") != marker:
                        if time.perf_counter() - start > 10:
                            raise RuntimeError("the new version never served")
                    swaps.append((time.perf_counter() - start) * 1000)
    lines = [
        "| measure | median | p90 / max |",
        "|---|---:|---:|",
        f"| .wasm written → first response from the new version ({SWAPS} swaps) "
        f"| {statistics.median(swaps):.0f} ms "
        f"| {sorted(swaps)[int(SWAPS * 0.9) - 1]:.0f} / {max(swaps):.0f} ms |",
        f"| VM start, module from the disk cache (load + instantiate + configure) "
        f"| {cached_ms:.2f} ms | |",
        f"| VM start, module already loaded (instantiate + vm_start + configure) "
        f"| {warm_ms:.2f} ms | |",
        "",
        "Most of the swap time is the file watcher batching changes (50 ms steps, up to a"
        f" 150 ms debounce, so an editor's save burst is one reload). {STARTS} VM starts;"
        f" {time.ctime()}",
    ]
    text = "\n".join(lines)
    print(text)
    write_block("reload", text, "Hot reload (`bench/reload.py`)")


if __name__ == "__main__":
    main()
