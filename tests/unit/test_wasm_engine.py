"""Compiled modules are cached on disk by sha256 and wasmtime version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgegw.wasm import engine


def test_module_cache_roundtrip_and_corruption(
    test_wasm: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEGW_CACHE_DIR", str(tmp_path / "cache"))
    wasm = test_wasm("faulty")
    module, digest = engine.load_module(wasm)
    [cached] = (tmp_path / "cache").iterdir()
    assert cached.name == f"{digest}-wasmtime{engine.WASMTIME_VERSION}-fixedmem.cwasm"
    again, digest2 = engine.load_module(wasm)  # from the cache
    assert digest2 == digest
    assert {e.name for e in again.exports} == {e.name for e in module.exports}
    cached.write_bytes(b"garbage")  # a corrupt cache entry is recompiled, not fatal
    third, _ = engine.load_module(wasm)
    assert {e.name for e in third.exports} == {e.name for e in module.exports}
    assert cached.read_bytes() != b"garbage"


def test_cpu_ticks_round_to_the_tick_and_never_zero() -> None:
    assert engine.cpu_ticks(engine.TICK_SECONDS * 4) == 4
    assert engine.cpu_ticks(engine.TICK_SECONDS * 4.4) == 4
    assert engine.cpu_ticks(0.0000001) == 1  # a tiny limit still lets a callback start
