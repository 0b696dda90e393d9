"""Every host function edgegw gives a filter, declared once (as proxy-wasm-cpp-host's
``exports.h`` does): the proxy-wasm ABI v0.2.1 ones (spec abi-versions/v0.2.1/README.md,
"Functions exposed by the host"), the v0.2.0 names SDKs still import, and the one
Emscripten import.

An entry gives the ABI's parameters in order, each with its kind, and how edgegw answers:
the ``Hostcalls`` method of the same name (``PYTHON``), ``OK`` without doing anything
(``NOOP``), or ``UNIMPLEMENTED``. Linking (``plugin.py``) reads nothing else: the wasm
signature a module must import, which (pointer, size) pairs ``_native`` reads from guest
memory into bytes before the method is called, which integers arrive signed, and which
calls ``_native`` answers itself in their common case. Adding a hostcall is one entry
here plus its method (docs/contributing.md); tests/unit/test_wasm_exports.py checks the
table against the ABI and every entry against its implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Answer(Enum):
    PYTHON = "python"  # the Hostcalls method named like the hostcall
    NOOP = "noop"  # OK, nothing done
    UNIMPLEMENTED = "unimplemented"  # the ABI's UNIMPLEMENTED status


# Parameter kinds. Each is one wasm value, except the strings: a (pointer, size) pair of
# i32 that _native reads from guest memory and hands the method as one bytes argument
# (out of bounds: INVALID_MEMORY_ACCESS without calling it). NAME is a header name,
# ASCII-lowercased as it is read (RFC 9110 §5.1: field names are case-insensitive).
U32 = "u32"  # an i32 the ABI declares unsigned: ids, enums, flags, pointers, sizes
I64 = "i64"  # an i64 the ABI declares signed (int64_t)
U64 = "u64"  # an i64 the ABI declares unsigned (uint64_t)
STR = "str"
NAME = "name"
_KINDS = (U32, I64, U64, STR, NAME)


@dataclass(frozen=True)
class Export:
    name: str
    params: tuple[str, ...]  # kinds, in the ABI's order
    answer: Answer = Answer.PYTHON
    # What _native answers itself in the common case (Host.set_fast_edit / set_clock):
    # "get" | "add" | "replace" | "remove" (an ordinary header of the stream's own
    # headers; get also an http_call answer's :status), "property" (native/property.c:
    # the few paths filters read per request), "call_body" (an http_call
    # answer's body), "effective" (an open stream), "continue" (a paused stream) or
    # "clock"; the method answers the rest.
    fast: str | None = None
    returns_status: bool = True  # every proxy_* returns an i32 proxy_status_t

    @property
    def wasm_results(self) -> tuple[str, ...]:
        return ("i32",) if self.returns_status else ()

    @property
    def wasm_params(self) -> tuple[str, ...]:
        """The wasm value types a module must import this function with."""
        out: list[str] = []
        for kind in self.params:
            out += ["i32", "i32"] if kind in (STR, NAME) else ["i64" if kind != U32 else "i32"]
        return tuple(out)

    @property
    def strings(self) -> tuple[int, ...]:
        """Wasm positions of the (pointer, size) pairs _native reads into bytes."""
        return tuple(i for i, kind in self._positions() if kind in (STR, NAME))

    @property
    def lower_first(self) -> bool:
        """The first string is a header name, lowercased as it is read."""
        kinds = [kind for kind in self.params if kind in (STR, NAME)]
        return bool(kinds) and kinds[0] == NAME

    @property
    def signed(self) -> tuple[int, ...]:
        """Wasm positions of the parameters that arrive as signed ints."""
        return tuple(i for i, kind in self._positions() if kind == I64)

    def _positions(self) -> list[tuple[int, str]]:
        out, at = [], 0
        for kind in self.params:
            out.append((at, kind))
            at += 2 if kind in (STR, NAME) else 1
        return out


def _e(
    name: str,
    *params: str,
    answer: Answer = Answer.PYTHON,
    fast: str | None = None,
    returns_status: bool = True,
) -> Export:
    assert all(kind in _KINDS for kind in params), name
    return Export(name, params, answer, fast, returns_status)


_P = U32  # a guest pointer or size: unsigned i32, read by the method itself
HOSTCALLS: dict[str, Export] = {
    e.name: e
    for e in (
        # Context lifecycle
        _e("proxy_done", answer=Answer.NOOP),
        _e("proxy_set_effective_context", U32, fast="effective"),
        # Logging, clocks, timers
        # The message is read by C: out of bounds it is INVALID_MEMORY_ACCESS whatever
        # the log level, as proxy-wasm-cpp-host checks memory before logging.
        _e("proxy_log", U32, STR),
        _e("proxy_get_log_level", _P),
        _e("proxy_get_current_time_nanoseconds", _P, fast="clock"),
        _e("proxy_set_tick_period_milliseconds", U32),
        # Buffers
        _e("proxy_set_buffer_bytes", U32, U32, U32, _P, _P),
        _e("proxy_get_buffer_bytes", U32, U32, U32, _P, _P, fast="call_body"),
        _e("proxy_get_buffer_status", U32, _P, _P),
        # HTTP fields
        _e("proxy_get_header_map_size", U32, _P),
        _e("proxy_get_header_map_pairs", U32, _P, _P),
        _e("proxy_set_header_map_pairs", U32, _P, _P),
        _e("proxy_get_header_map_value", U32, NAME, _P, _P, fast="get"),
        _e("proxy_add_header_map_value", U32, NAME, STR, fast="add"),
        _e("proxy_replace_header_map_value", U32, NAME, STR, fast="replace"),
        _e("proxy_remove_header_map_value", U32, NAME, fast="remove"),
        # Common stream operations
        _e("proxy_continue_stream", U32, fast="continue"),
        _e("proxy_close_stream", U32),
        # The status of an http_call or gRPC call: edgegw hands an http_call's status in
        # its :status header instead (docs/filters.md, "Known differences").
        _e("proxy_get_status", _P, _P, _P, answer=Answer.UNIMPLEMENTED),
        # HTTP
        _e("proxy_send_local_response", U32, _P, _P, _P, _P, _P, _P, U32),
        # HTTP calls
        # upstream, headers and body read by C (INVALID_MEMORY_ACCESS first, as
        # proxy-wasm-cpp-host checks memory first); the trailers are not read
        _e("proxy_http_call", STR, STR, STR, _P, _P, U32, _P),
        # gRPC calls: not offered (docs/filters.md)
        _e("proxy_grpc_call", *(_P,) * 10, U32, _P, answer=Answer.UNIMPLEMENTED),
        _e("proxy_grpc_stream", *(_P,) * 8, _P, answer=Answer.UNIMPLEMENTED),
        _e("proxy_grpc_send", U32, _P, _P, U32, answer=Answer.UNIMPLEMENTED),
        _e("proxy_grpc_cancel", U32, answer=Answer.UNIMPLEMENTED),
        _e("proxy_grpc_close", U32, answer=Answer.UNIMPLEMENTED),
        # Shared key-value store and queues
        _e("proxy_set_shared_data", STR, STR, U32),
        _e("proxy_get_shared_data", STR, _P, _P, _P),
        _e("proxy_register_shared_queue", _P, _P, _P),
        _e("proxy_resolve_shared_queue", _P, _P, _P, _P, _P),
        _e("proxy_enqueue_shared_queue", U32, _P, _P),
        _e("proxy_dequeue_shared_queue", U32, _P, _P),
        # Metrics
        _e("proxy_define_metric", U32, _P, _P, _P),
        _e("proxy_record_metric", U32, U64),
        _e("proxy_increment_metric", U32, I64),
        _e("proxy_get_metric", U32, _P),
        # Properties
        _e("proxy_get_property", STR, _P, _P, fast="property"),
        _e("proxy_set_property", _P, _P, _P, _P),
        # Foreign functions: none are registered, so every name that can be read is
        # NOT_FOUND (name and argument read by C: INVALID_MEMORY_ACCESS first)
        _e("proxy_call_foreign_function", STR, STR, _P, _P),
        # ABI v0.2.0 names, still imported by SDKs built for it
        _e("proxy_continue_request"),
        _e("proxy_continue_response"),
        _e("proxy_clear_route_cache"),
        # Emscripten-built modules import it to be told of memory growth
        _e("emscripten_notify_memory_growth", U32, answer=Answer.NOOP, returns_status=False),
    )
}
