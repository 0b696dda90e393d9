"""The ``env.proxy_*`` functions a filter imports (proxy-wasm ABI v0.2.1), as a mixin of
``Plugin``. Each takes the raw i32/i64 arguments and returns a ``Status``; bad guest
pointers give INVALID_MEMORY_ACCESS, never an exception into the worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edgegw.chain import CallResponse, LocalReply
from edgegw.headers import check_field, request_id
from edgegw.model import FilterSpec
from edgegw.types import Headers
from edgegw.wasm import _native
from edgegw.wasm.abi import BufferType, LogLevel, MapType, Status, decode_pairs, encode_pairs
from edgegw.wasm.fastcall import Memory
from edgegw.wasm.geoip import CountryLookup
from edgegw.wasm.properties import get_property
from edgegw.wasm.state import (
    CallMap,
    HeaderMap,
    ListMap,
    RequestMap,
    ResponseMap,
    StreamState,
)

OK, NOT_FOUND, BAD_ARGUMENT = Status.OK, Status.NOT_FOUND, Status.BAD_ARGUMENT
_LEVELS = {0: 5, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR, 5: 50}
GEO_PATH = b"edgegw\0geo\0country"
# Member lookups of an IntEnum are slow on Python 3.11 (enum members are
# descriptors there); the header and buffer hostcalls compare against plain ints.
_REQUEST_HEADERS = int(MapType.REQUEST_HEADERS)
_REQUEST_TRAILERS = int(MapType.REQUEST_TRAILERS)
_RESPONSE_HEADERS = int(MapType.RESPONSE_HEADERS)
_RESPONSE_TRAILERS = int(MapType.RESPONSE_TRAILERS)
_CALL_HEADERS = int(MapType.HTTP_CALL_RESPONSE_HEADERS)
_CALL_TRAILERS = int(MapType.HTTP_CALL_RESPONSE_TRAILERS)
_UPSTREAM = 3  # the last StreamType: REQUEST 0, RESPONSE 1, DOWNSTREAM 2, UPSTREAM 3
_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te"})


def guarded(fn: Callable[..., int]) -> Callable[..., int]:
    """Out-of-bounds guest pointers become INVALID_MEMORY_ACCESS."""

    def wrapper(*args: Any) -> int:
        try:
            return fn(*args)
        except IndexError:
            return Status.INVALID_MEMORY_ACCESS

    wrapper.__name__ = fn.__name__
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]  # inspect.signature follows it
    return wrapper


class Hostcalls(_native.Vm):
    """What the hostcalls need from the VM that mixes them in (``Plugin``). ``current``
    (the stream whose callback runs), ``streams`` (by context id) and ``closed`` are
    fields of ``_native.Vm``: the chain's C loops set them on every call."""

    name: str
    spec: FilterSpec
    vm_id: bytes
    root_context: int
    plugin_properties: dict[str, bytes]
    log: logging.Logger
    memory: Memory
    clusters: frozenset[str]
    current: StreamState | None
    streams: dict[int, StreamState]
    call_response: CallResponse | None
    geo: CountryLookup | None  # `geoip:` configured: the client's country
    # A hostcall's bytes answer, written to the guest's (ptr_ptr, size_ptr) through its
    # allocator: Memory.answerer, in C.
    _return_bytes: Callable[[bytes, int, int], int]

    def set_tick_period(self, period_ms: int) -> None:
        raise NotImplementedError

    def queue_ready(self, queue_id: int) -> None:
        raise NotImplementedError

    def dispatch_call(
        self,
        cluster: str,
        method: str,
        path: str,
        authority: str,
        headers: Headers,
        body: bytes,
        timeout: float,
    ) -> int:
        raise NotImplementedError

    # --- helpers -----------------------------------------------------------------------

    def _map(self, map_type: int) -> HeaderMap | None:
        state = self.current
        # The stream's own maps first: nearly every header hostcall is about them.
        if state is not None:
            if map_type == _REQUEST_HEADERS:
                return RequestMap(state.ex)
            if map_type == _RESPONSE_HEADERS:
                return ResponseMap(state.ex) if state.ex.status else None
            if map_type == _REQUEST_TRAILERS:
                return ListMap(state.trailers(True))
            if map_type == _RESPONSE_TRAILERS:
                return ListMap(state.trailers(False))
        response = self.call_response
        if response is None:
            return None
        if map_type == _CALL_HEADERS:
            return CallMap(response.headers, response.status)
        if map_type == _CALL_TRAILERS:
            return ListMap([])
        return None

    def _buffer(self, buffer_type: int) -> bytearray | bytes | None:
        if buffer_type == BufferType.PLUGIN_CONFIGURATION:
            return self.spec.config
        if buffer_type == BufferType.VM_CONFIGURATION:
            return self.spec.vm_config
        if buffer_type == BufferType.HTTP_CALL_RESPONSE_BODY:
            return self.call_response.body if self.call_response is not None else None
        state = self.current
        if state is None:
            return None
        if buffer_type == BufferType.HTTP_REQUEST_BODY:
            return state.body(True)
        if buffer_type == BufferType.HTTP_RESPONSE_BODY:
            return state.body(False)
        return None

    # --- logging, time, lifecycle ------------------------------------------------------

    def proxy_log(self, level: int, message: bytes) -> int:
        severity = _LEVELS.get(level, logging.INFO)
        if not self.log.isEnabledFor(severity):
            return OK
        text = message.decode(errors="replace")
        state = self.current
        if state is None:  # the root context: no request
            self.log.log(severity, "%s", text)
        else:
            rid = request_id(state.ex.request_headers)
            self.log.log(severity, "%s request_id=%s", text, rid)
        return OK

    @guarded
    def proxy_get_log_level(self, ptr: int) -> int:
        effective = self.log.getEffectiveLevel()
        level = next((k for k, v in sorted(_LEVELS.items()) if v >= effective), LogLevel.CRITICAL)
        self.memory.write_u32(ptr, level)
        return OK

    @guarded
    def proxy_get_current_time_nanoseconds(self, ptr: int) -> int:
        self.memory.write_u64(ptr, time.time_ns())
        return OK

    def proxy_set_tick_period_milliseconds(self, period: int) -> int:
        self.set_tick_period(period)
        return OK

    def proxy_done(self) -> int:
        return OK

    def proxy_set_effective_context(self, context_id: int) -> int:
        if context_id == self.root_context:
            self.current = None
            return OK
        state = self.streams.get(context_id)
        if state is None:
            return BAD_ARGUMENT
        self.current = state
        return OK

    # --- buffers -----------------------------------------------------------------------

    @guarded
    def proxy_get_buffer_bytes(
        self, buffer_type: int, start: int, max_size: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        buffer = self._buffer(buffer_type)
        if buffer is None:
            return NOT_FOUND
        if start > len(buffer):
            return BAD_ARGUMENT
        return self._return_bytes(bytes(buffer[start : start + max_size]), ptr_ptr, size_ptr)

    @guarded
    def proxy_get_buffer_status(self, buffer_type: int, len_ptr: int, flags_ptr: int) -> int:
        buffer = self._buffer(buffer_type)
        if buffer is None:
            return NOT_FOUND
        self.memory.write_u32(len_ptr, len(buffer))
        self.memory.write_u32(flags_ptr, 0)
        return OK

    @guarded
    def proxy_set_buffer_bytes(
        self, buffer_type: int, start: int, size: int, ptr: int, data_size: int
    ) -> int:
        buffer = self._buffer(buffer_type)
        if not isinstance(buffer, bytearray):
            return NOT_FOUND if buffer is None else BAD_ARGUMENT
        data = self.memory.read(ptr, data_size)
        # Envoy: start=0,size=0 prepends; start>=len appends; else replaces [start, start+size).
        if start > len(buffer):
            start = len(buffer)
        buffer[start : start + size] = data
        return OK

    # --- header maps -------------------------------------------------------------------

    @guarded
    def proxy_get_header_map_pairs(self, map_type: int, ptr_ptr: int, size_ptr: int) -> int:
        found = self._map(map_type)
        if found is None:
            return NOT_FOUND
        return self._return_bytes(encode_pairs(found.pairs()), ptr_ptr, size_ptr)

    @guarded
    def proxy_set_header_map_pairs(self, map_type: int, ptr: int, size: int) -> int:
        found = self._map(map_type)
        new = decode_pairs(self.memory.read(ptr, size))
        if found is None or new is None:
            return NOT_FOUND if found is None else BAD_ARGUMENT
        found.set_pairs([(k.lower(), v) for k, v in new])
        return OK

    @guarded
    def proxy_get_header_map_size(self, map_type: int, size_ptr: int) -> int:
        found = self._map(map_type)
        if found is None:
            return NOT_FOUND
        self.memory.write_u32(size_ptr, found.size())
        return OK

    # The header-map hostcalls get their key (lowercased) and value as bytes: _native
    # reads them from guest memory, answering INVALID_MEMORY_ACCESS itself (exports.py).

    @guarded  # the answer is still written to guest pointers
    def proxy_get_header_map_value(
        self, map_type: int, key: bytes, ptr_ptr: int, size_ptr: int
    ) -> int:
        found = self._map(map_type)
        value = None if found is None else found.get(key)
        if value is None:
            return NOT_FOUND
        return self._return_bytes(value, ptr_ptr, size_ptr)

    def proxy_add_header_map_value(self, map_type: int, key: bytes, value: bytes) -> int:
        # Like replace and remove: an ordinary header of the stream's own request or
        # response headers is edited in C before this is called (exports.py: fast).
        found = self._map(map_type)
        if found is None:
            return NOT_FOUND
        found.add(key, value)
        return OK

    def proxy_replace_header_map_value(self, map_type: int, key: bytes, value: bytes) -> int:
        found = self._map(map_type)
        if found is None:
            return NOT_FOUND
        found.replace(key, value)
        return OK

    def proxy_remove_header_map_value(self, map_type: int, key: bytes) -> int:
        found = self._map(map_type)
        if found is None:
            return NOT_FOUND
        found.remove(key)
        return OK

    # --- properties --------------------------------------------------------------------

    @guarded  # the answer is written to guest pointers; the path is read by C (exports.py)
    def proxy_get_property(self, path: bytes, ptr_ptr: int, size_ptr: int) -> int:
        ex = self.current.ex if self.current is not None else None
        value = get_property(path, ex, self.plugin_properties)
        if (
            value is None
            and ex is not None
            and self.geo is not None
            and path.rstrip(b"\0") == GEO_PATH
        ):
            country = self.geo(ex.client[0])
            value = country.encode() if country else None
        if value is None:
            return NOT_FOUND
        return self._return_bytes(value, ptr_ptr, size_ptr)

    @guarded
    def proxy_set_property(self, path_ptr: int, path_size: int, val_ptr: int, val_size: int) -> int:
        if self.current is None:
            return NOT_FOUND
        path = self.memory.read(path_ptr, path_size).rstrip(b"\0").replace(b"\0", b".")
        self.current.ex.properties[path.decode("latin-1")] = self.memory.read(val_ptr, val_size)
        return OK

    # --- local responses and stream control --------------------------------------------

    @guarded
    def proxy_send_local_response(
        self,
        status: int,
        _details_ptr: int,
        _details_size: int,
        body_ptr: int,
        body_size: int,
        headers_ptr: int,
        headers_size: int,
        _grpc_status: int,
    ) -> int:
        state = self.current
        if state is None:
            return NOT_FOUND
        headers = decode_pairs(self.memory.read(headers_ptr, headers_size)) or []
        body = self.memory.read(body_ptr, body_size)
        if not 200 <= status <= 599:  # RFC 9110 §15: a final response's status
            return BAD_ARGUMENT
        clean = [(k.lower(), v) for k, v in headers if k[:1] != b":" and k.lower() not in _HOP]
        for name, value in clean:
            check_field(name, value)
        if body and not any(k == b"content-type" for k, _v in clean):
            clean.append((b"content-type", b"text/plain"))
        state.local_reply = LocalReply(status, clean, body)
        state.wake()
        return OK

    def proxy_continue_stream(self, stream_type: int = 0) -> int:
        if stream_type > _UPSTREAM:  # not a StreamType (spec: BAD_ARGUMENT)
            return BAD_ARGUMENT
        if self.current is None:
            return NOT_FOUND
        self.current.wake()
        return OK

    def proxy_continue_request(self) -> int:
        return self.proxy_continue_stream(0)

    def proxy_continue_response(self) -> int:
        return self.proxy_continue_stream(1)

    def proxy_close_stream(self, stream_type: int = 0) -> int:
        if stream_type > _UPSTREAM:
            return BAD_ARGUMENT
        if self.current is None:
            return NOT_FOUND
        if self.current.local_reply is None:
            self.current.local_reply = LocalReply(
                502, [(b"content-type", b"text/plain")], b"closed by filter"
            )
        self.current.wake()
        return OK

    def proxy_clear_route_cache(self) -> int:
        return OK
