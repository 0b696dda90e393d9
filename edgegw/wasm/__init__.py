"""The proxy-wasm v0.2.1 host: ``WasmRuntime`` (filters of a config) and ``check_filter``."""

from __future__ import annotations

from edgegw.wasm.plugin import check_filter
from edgegw.wasm.runtime import WasmRuntime

__all__ = ["WasmRuntime", "check_filter"]
