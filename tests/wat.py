"""Small proxy-wasm guests written in WAT (compiled by wasmtime) and loaded as real
``Plugin``s: a test states the exact guest behaviour it needs (a loop on one hostcall,
a negative i64 argument, a trap in a function with a telling name) in a few lines."""

from __future__ import annotations

from pathlib import Path

import wasmtime

from edgegw.chain import CallResponse, Exchange
from edgegw.model import FilterSpec, Limits
from edgegw.types import Headers
from edgegw.wasm.engine import engine
from edgegw.wasm.plugin import Plugin

#: What ``Plugin`` needs of any filter: the ABI marker, memory, an allocator (always the
#: same 4 KiB at 4096: the tests' answers are small) and a root context that starts; a
#: test giving its own ``proxy_on_configure`` takes ``BASE_WITHOUT_CONFIGURE``.
BASE_WITHOUT_CONFIGURE = """
  (memory (export "memory") 2)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 4096)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
"""
_BASE = (
    BASE_WITHOUT_CONFIGURE
    + """  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
"""
)


def proxy_wat(imports: str, body: str, base: str = _BASE) -> str:
    """A proxy-wasm module: ``imports`` (``(import "env" ...)`` lines), the common
    exports (``base``) and ``body``."""
    return f"(module\n{imports}\n{base}\n{body}\n)"


def write_wasm(directory: Path, name: str, wat: str) -> Path:
    path = directory / f"{name}.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm(wat)))
    return path


async def _no_calls(*_args: object) -> CallResponse:
    raise AssertionError("this guest makes no http calls")


def load_plugin(wasm: Path, name: str, cpu: float = 0.05, config: bytes = b"") -> Plugin:
    """``wasm`` as a started filter VM named ``name`` with ``limits.cpu`` = ``cpu``."""
    spec = FilterSpec(name=name, wasm=wasm, config=config, limits=Limits(cpu=cpu))
    module = wasmtime.Module(engine(), wasm.read_bytes())
    return Plugin(spec, module, "sha", _no_calls, frozenset())


def exchange(headers: Headers) -> Exchange:
    return Exchange(route=None, method="GET", path="/", scheme="http", authority="gw",  # type: ignore[arg-type]
                    request_headers=headers, client=("127.0.0.1", 1), server=("127.0.0.1", 2),
                    connection_id=1, start_ns=0)  # fmt: skip
