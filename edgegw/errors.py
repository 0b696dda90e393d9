"""The one place edgegw's exceptions live.

Third-party exceptions (aiohttp, wasmtime, redis) are translated into these at the
module that calls the library, so nothing above that module needs to know them::

    EdgegwError
    ├── ConfigError            gateway.yaml is invalid; carries every problem found
    ├── FilterLoadError        a .wasm module cannot be compiled, linked or started
    ├── WasmError              a running VM failed
    │   ├── WasmTrap           the module trapped (unreachable, bad memory access, ...)
    │   ├── WasmDeadline       a callback ran past its CPU deadline (epoch interruption)
    │   └── WasmVmFailed       the VM failed earlier and stays failed (on_trap: fail)
    ├── UpstreamError          a backend could not answer
    │   ├── UpstreamConnectError   connection refused / reset / DNS      -> 502
    │   └── UpstreamTimeout        connect or response timeout           -> 504
    ├── StoreError             the store (memory:// or redis://) failed
    │   └── StoreUnavailable   the store cannot be reached right now
    └── ReloadError            a reload was rejected; the old runtime keeps serving

Control flow inside a request uses status values (Continue / Pause / LocalReply), not
exceptions: these are for failures only.
"""

from __future__ import annotations

from dataclasses import dataclass


class EdgegwError(Exception):
    """Base of every error edgegw raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in gateway.yaml: where it is and what is wrong."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        prefix = f"{self.path}: " if self.path else ""
        return f"{prefix}{self.message}{where}"


class ConfigError(EdgegwError):
    """gateway.yaml is invalid. ``problems`` holds all of them, not only the first."""

    def __init__(self, problems: list[ConfigProblem], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(str(p) for p in self.problems))


class FilterLoadError(EdgegwError):
    """A filter's module cannot be loaded (compile, link, start, configure)."""

    def __init__(self, filter_name: str, reason: str) -> None:
        self.filter_name = filter_name
        self.reason = reason
        super().__init__(f"filter '{filter_name}': {reason}")


class WasmError(EdgegwError):
    """A running VM failed; the filter's on_error policy decides what happens."""


class WasmTrap(WasmError):
    """The module trapped."""


class WasmDeadline(WasmError):
    """A callback exceeded its CPU deadline."""


class WasmVmFailed(WasmError):
    """The filter's VM failed in an earlier request and stays failed (``on_trap: fail``,
    as in Envoy): requests reaching the filter follow its ``on_error`` without a call."""


class UpstreamError(EdgegwError):
    """A backend could not answer."""

    status = 502

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(f"backend '{backend}': {detail}")


class UpstreamConnectError(UpstreamError):
    """The backend refused or dropped the connection."""

    status = 502


class UpstreamTimeout(UpstreamError):
    """The backend did not answer in time."""

    status = 504


class StoreError(EdgegwError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now."""


class ReloadError(EdgegwError):
    """A reload was rejected; the running configuration is unchanged."""


class FilterBuildError(EdgegwError):
    """A filter's Zig sources did not compile; ``output`` is the compiler's text."""

    def __init__(self, filter_name: str, output: str) -> None:
        self.filter_name = filter_name
        self.output = output
        super().__init__(f"filter '{filter_name}' failed to build:\n{output}")
