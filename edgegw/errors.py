"""The one place edgegw's exceptions live.

Third-party exceptions (aiohttp, wasmtime, redis) are translated into these at the
module that calls the library, so nothing above that module needs to know them::

    EdgegwError
    ├── ConfigError            gateway.yaml is invalid; carries every problem found
    ├── FilterLoadError        a .wasm module cannot be compiled, linked or started
    ├── WasmError              a running VM failed
    │   ├── WasmTrap           the module trapped (unreachable, bad memory access, ...)
    │   ├── WasmDeadline       a callback ran past its CPU deadline (epoch interruption)
    │   ├── InvalidHeader      a filter set a header name or value HTTP forbids
    │   ├── WasmClosed         the VM was closed (replaced, or its runtime shut down)
    │   └── WasmVmFailed       the VM failed earlier and stays failed (on_trap: fail)
    ├── UpstreamError          a backend could not answer
    │   ├── UpstreamConnectError   connection refused / reset / DNS      -> 502
    │   │   ├── UpstreamUnreachable    no connection made (refused, DNS)   -> 502
    │   │   ├── UpstreamReset          closed or reset before the response head
    │   │   ├── UpstreamProtocolError  the response is not HTTP/1.1
    │   │   └── UpstreamInvalidRequest a header would break the request's framing
    │   ├── UpstreamTimeout        connect or response timeout           -> 504
    │   │   └── UpstreamConnectTimeout no connection within connect_timeout -> 504
    │   └── UpstreamOverloaded     a circuit breaker (limits) is open    -> 503
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
    """One problem in gateway.yaml: where it is and what is wrong. A YAML syntax error
    also has the (1-based) column, the text of its line and a hint."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None
    excerpt: str = ""
    hint: str = ""

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        if self.line is not None and self.column is not None:
            where = f" (line {self.line}, column {self.column})"
        prefix = f"{self.path}: " if self.path else ""
        hint = f": {self.hint}" if self.hint else ""
        return f"{prefix}{self.message}{where}{hint}"

    def render(self, source: str) -> str:
        """For a terminal: ``FILE:LINE:COLUMN: message``, the line with a caret under the
        column, and the hint, when the column is known; else ``FILE: problem``."""
        if self.line is None or self.column is None:
            return f"{source}: {self}"
        out = [f"{source}:{self.line}:{self.column}: {self.message}"]
        if self.excerpt:
            # Keep the line's tabs under the caret so it lines up wherever tabs stop.
            pad = "".join(c if c == "\t" else " " for c in self.excerpt[: self.column - 1])
            out += [f"    {self.excerpt}", f"    {pad}^"]
        if self.hint:
            out.append(f"    hint: {self.hint}")
        return "\n".join(out)


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


class InvalidHeader(WasmError):
    """A filter set a header whose name is not a token or whose value holds NUL, CR or
    LF (RFC 9110 §5.1, §5.5): raised in the hostcall, it traps the filter, whose on_error
    policy then applies."""


class WasmClosed(WasmError):
    """A request still in flight reached a VM that was closed meanwhile (replaced after a
    failure, or its runtime shut down after the drain timeout): its Store is gone, so the
    filter fails for that request instead of being called."""


class WasmVmFailed(WasmError):
    """The filter's VM failed in an earlier request and stays failed (``on_trap: fail``,
    as in Envoy): requests reaching the filter follow its ``on_error`` without a call."""


class UpstreamError(EdgegwError):
    """A backend could not answer."""

    status = 502
    #: The ``outcome`` label of ``edgegw_upstream_duration_seconds`` (docs/operations.md).
    outcome = "error"

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(f"backend '{backend}': {detail}")


class UpstreamConnectError(UpstreamError):
    """The backend refused or dropped the connection."""

    status = 502
    outcome = "connect_error"


class UpstreamReset(UpstreamConnectError):
    """The connection was closed or reset before the response head arrived."""

    outcome = "reset"


class UpstreamProtocolError(UpstreamConnectError):
    """The backend's answer is not a valid HTTP/1.1 response (or switched protocols)."""

    outcome = "protocol_error"


class UpstreamInvalidRequest(UpstreamConnectError):
    """The request cannot be sent as given (a header with CR or LF, set by a filter): no
    endpoint is at fault and no retry can help."""

    outcome = "invalid_request"


class UpstreamTimeout(UpstreamError):
    """The backend did not answer in time."""

    status = 504
    outcome = "timeout"


class UpstreamUnreachable(UpstreamConnectError):
    """No connection could be made: nothing of the request was sent."""


class UpstreamConnectTimeout(UpstreamTimeout):
    """No connection within ``connect_timeout``: nothing of the request was sent."""


class UpstreamOverloaded(UpstreamError):
    """A backend's circuit breaker (``limits``, or the retry budget) is open: answered at
    once instead of queueing. ``limit`` names it."""

    status = 503
    outcome = "overloaded"

    def __init__(self, backend: str, limit: str, value: int) -> None:
        self.limit = limit
        super().__init__(backend, f"{limit} ({value}) reached")


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
