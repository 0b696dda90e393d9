"""The process-wide wasmtime Engine, its epoch ticker thread, and the compiled-module cache.

One Engine per worker process: epoch interruption counts per engine, and compiled code is
shared by every VM of the process. The ticker is a thread, not an asyncio task, because
the event loop is blocked while wasm runs (docs/design.md §1); and a native one (fastcall), not
a Python one, because guest calls hold the GIL.
"""

from __future__ import annotations

import hashlib
import os
import threading
from importlib.metadata import version
from pathlib import Path

import wasmtime

from edgegw.wasm import fastcall

TICK_SECONDS = 0.005  # one epoch per 5 ms: limits.cpu is counted in ticks
# The deadline of a VM's start (instantiate, _initialize/_start, the root context's
# create, vm_start and configure): once per load, not per request, and a filter may do
# its heavy set-up there (jwt_auth parses its keys), so limits.cpu does not apply.
START_SECONDS = 10.0

_lock = threading.Lock()
_engine: wasmtime.Engine | None = None
WASMTIME_VERSION = version("wasmtime")


def engine() -> wasmtime.Engine:
    """The shared Engine (epoch interruption on), starting the ticker on first use."""
    global _engine
    with _lock:
        if _engine is None:
            config = wasmtime.Config()
            config.epoch_interruption = True
            # Linear memories keep their base address (within the default 4 GiB
            # reservation they never need to move): fastcall.Memory caches it.
            config.memory_may_move = False
            _engine = wasmtime.Engine(config)
        fastcall.start_ticker(_engine, TICK_SECONDS)  # once per process
        return _engine


def cpu_ticks(seconds: float) -> int:
    return max(1, round(seconds / TICK_SECONDS))


def cache_dir() -> Path:
    """``EDGEGW_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgegw`` (``~/.cache/edgegw``)."""
    given = os.environ.get("EDGEGW_CACHE_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgegw"


def load_module(path: Path) -> tuple[wasmtime.Module, str]:
    """Compile ``path`` (or reuse its compiled form from the disk cache); returns the
    module and the sha256 of the .wasm. Blocking: call it in a thread on the serving path.

    The cache key is the module's sha256 and the wasmtime version, so a new build or a new
    wasmtime never reuses stale code. Raises OSError or wasmtime.WasmtimeError.
    """
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    eng = engine()
    cached = cache_dir() / f"{digest}-wasmtime{WASMTIME_VERSION}-fixedmem.cwasm"
    if cached.is_file():
        try:
            # From bytes, not deserialize_file: a mapped file truncated under us would
            # kill the process with SIGBUS.
            return wasmtime.Module.deserialize(eng, cached.read_bytes()), digest
        except wasmtime.WasmtimeError:
            cached.unlink(missing_ok=True)  # corrupt or foreign: compile again
    module = wasmtime.Module(eng, data)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(module.serialize())
        tmp.replace(cached)
    except OSError:
        pass  # a read-only cache only costs compile time
    return module, digest
