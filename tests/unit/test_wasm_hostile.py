"""Every hostcall of the table (edgegw/wasm/exports.py), called by a real guest with
hostile arguments: pointers out of guest memory, spans running off its end, huge sizes,
negative and overflowing integers, unknown enum values, return pointers at address 0.

The host must answer each with the proxy-wasm status it owes (spec
abi-versions/v0.2.1/README.md; INVALID_MEMORY_ACCESS before anything else, as
proxy-wasm-cpp-host's exports.cc checks memory first) and neither trap nor leak. The
cases are keyed by hostcall: a hostcall added to the table without hostile cases here
fails ``test_every_hostcall_has_hostile_cases``. Each case runs twice, with the C fast
paths (native/headers.c, native/property.c, the clock) and with the Python methods alone:
both answer alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgegw.chain import CallResponse
from edgegw.errors import WasmTrap
from edgegw.wasm import exports
from edgegw.wasm.abi import BufferType, MapType, Status
from edgegw.wasm.exports import HOSTCALLS
from edgegw.wasm.plugin import Plugin
from edgegw.wasm.state import StreamState
from tests.wat import exchange, load_plugin, proxy_wat, write_wasm

OK, NOT_FOUND, BAD_ARGUMENT = Status.OK, Status.NOT_FOUND, Status.BAD_ARGUMENT
IMA, UNIMPLEMENTED = Status.INVALID_MEMORY_ACCESS, Status.UNIMPLEMENTED
CAS_MISMATCH = Status.CAS_MISMATCH

MEMORY = 2 * 65536  # the guest's memory (tests/wat.py: 2 pages), never grown here
OOB = 0xFFFFFFF0  # a pointer far outside guest memory (-16 as an i32)
HUGE = 0xFFFFFFFF  # a size no memory holds; -1 as an i32
END = MEMORY - 2  # a span from here runs off the end of memory
I64_MIN, I64_MAX, U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
UNKNOWN = 99  # no map, buffer, metric, stream type or log level has this value
REQ, RESP, CONFIG = int(MapType.REQUEST_HEADERS), int(MapType.RESPONSE_HEADERS), 7
BODY = int(BufferType.HTTP_REQUEST_BODY)
OUT, OUT_SIZE = 200, 204  # in-bounds return slots
CONTEXT = 2  # the stream context the cases run in

# Guest data: (address, bytes). Each case names these by address and size.
KEY, CRLF, BOGUS, NOPE, PATH, QUEUE, SKEY, VALUE, METRIC, STATUS, CTYPE = (
    1024, 1040, 1056, 1072, 1088, 1104, 1120, 1152, 1168, 1184, 1200
)  # fmt: skip
PEER, GEO, SOURCE = 1216, 1240, 1264  # the property paths native/property.c answers
_DATA = {
    KEY: b"x-a",
    CRLF: b"a\r\nb",
    BOGUS: b"\xff\xff\xff\x7f",  # a header map claiming 2**31 - 1 pairs
    NOPE: b"nope",
    PATH: b"request\0path",
    QUEUE: b"hostile",
    SKEY: b"edgegw-hostile-test",
    VALUE: b"v",
    METRIC: b"hostile_gauge",
    PEER: b"edgegw\0peer_trusted",
    GEO: b"edgegw\0geo\0country",
    SOURCE: b"source\0address",
    STATUS: b":status",
    CTYPE: b"content-type",
}

_TRAP = WasmTrap  # the filter traps (its on_error applies), by design
Case = tuple[tuple[int, ...], "int | type[Exception]"]

# hostcall -> [(arguments, expected status or exception)], in the stream context with
# request headers [x-a: 1], no response yet, and the plugin configuration b"cfg".
HOSTILE: dict[str, list[Case]] = {
    "proxy_done": [((), OK)],
    "proxy_set_effective_context": [((HUGE,), BAD_ARGUMENT), ((0,), BAD_ARGUMENT)],
    # The message is checked whatever the log level (trace: 0, below what is enabled).
    "proxy_log": [((0, OOB, 4), IMA), ((4, KEY, HUGE), IMA), ((UNKNOWN, END, 4), IMA)],
    "proxy_get_log_level": [((OOB,), IMA), ((END,), IMA), ((0,), OK)],
    "proxy_get_current_time_nanoseconds": [((OOB,), IMA), ((MEMORY - 4,), IMA), ((0,), OK)],
    "proxy_set_tick_period_milliseconds": [((HUGE,), OK), ((0,), OK)],
    "proxy_set_buffer_bytes": [
        ((UNKNOWN, 0, 0, VALUE, 1), NOT_FOUND),
        ((CONFIG, 0, 0, VALUE, 1), BAD_ARGUMENT),  # the configuration is read-only
        ((BODY, HUGE, HUGE, OOB, 4), IMA),
        ((BODY, 0, 0, VALUE, HUGE), IMA),
        ((BODY, HUGE, HUGE, VALUE, 1), OK),  # start past the end: appends
    ],
    "proxy_get_buffer_bytes": [
        ((UNKNOWN, 0, 1, OUT, OUT_SIZE), NOT_FOUND),
        ((CONFIG, HUGE, 1, OUT, OUT_SIZE), BAD_ARGUMENT),
        ((CONFIG, 0, HUGE, OOB, OUT_SIZE), IMA),
        ((CONFIG, 0, HUGE, OUT, END), IMA),
        ((CONFIG, 0, HUGE, 0, 0), OK),  # return slots at address 0 are guest memory
    ],
    "proxy_get_buffer_status": [
        ((UNKNOWN, OUT, OUT_SIZE), NOT_FOUND),
        ((CONFIG, OOB, OUT_SIZE), IMA),
        ((CONFIG, OUT, END), IMA),
        ((CONFIG, 0, 0), OK),
    ],
    "proxy_get_header_map_size": [((UNKNOWN, OUT), NOT_FOUND), ((REQ, OOB), IMA)],
    "proxy_get_header_map_pairs": [
        ((UNKNOWN, OUT, OUT_SIZE), NOT_FOUND),
        ((RESP, OUT, OUT_SIZE), NOT_FOUND),  # no response yet
        ((REQ, OOB, OUT_SIZE), IMA),
        ((REQ, OUT, END), IMA),
    ],
    "proxy_set_header_map_pairs": [
        ((REQ, OOB, 8), IMA),
        ((REQ, KEY, HUGE), IMA),
        ((REQ, BOGUS, 4), BAD_ARGUMENT),
        ((UNKNOWN, BOGUS, 4), NOT_FOUND),
    ],
    "proxy_get_header_map_value": [
        ((REQ, OOB, 3, OUT, OUT_SIZE), IMA),
        ((REQ, KEY, HUGE, OUT, OUT_SIZE), IMA),
        ((REQ, END, 3, OUT, OUT_SIZE), IMA),
        ((UNKNOWN, KEY, 3, OUT, OUT_SIZE), NOT_FOUND),
        ((RESP, KEY, 3, OUT, OUT_SIZE), NOT_FOUND),
        ((REQ, KEY, 3, OOB, OUT_SIZE), IMA),
        ((REQ, KEY, 3, OUT, END), IMA),
        ((REQ, KEY, 3, 0, 0), OK),
    ],
    "proxy_add_header_map_value": [
        ((REQ, OOB, 3, VALUE, 1), IMA),
        ((REQ, KEY, 3, VALUE, HUGE), IMA),
        ((UNKNOWN, KEY, 3, VALUE, 1), NOT_FOUND),
        ((RESP, KEY, 3, VALUE, 1), NOT_FOUND),
        ((REQ, KEY, 3, CRLF, 4), _TRAP),  # check_field: never into a header line
    ],
    "proxy_replace_header_map_value": [
        ((REQ, KEY, HUGE, VALUE, 1), IMA),
        ((REQ, KEY, 3, END, 4), IMA),
        ((UNKNOWN, KEY, 3, VALUE, 1), NOT_FOUND),
        ((REQ, KEY, 3, CRLF, 4), _TRAP),
    ],
    "proxy_remove_header_map_value": [
        ((REQ, OOB, 3), IMA),
        ((REQ, KEY, HUGE), IMA),
        ((UNKNOWN, KEY, 3), NOT_FOUND),
    ],
    # StreamType: REQUEST 0, RESPONSE 1, DOWNSTREAM 2, UPSTREAM 3.
    "proxy_continue_stream": [((UNKNOWN,), BAD_ARGUMENT), ((HUGE,), BAD_ARGUMENT)],
    "proxy_close_stream": [((UNKNOWN,), BAD_ARGUMENT), ((HUGE,), BAD_ARGUMENT)],
    "proxy_get_status": [((OOB, OOB, OOB), UNIMPLEMENTED)],
    "proxy_send_local_response": [
        ((403, 0, 0, OOB, 4, 0, 0, HUGE), IMA),
        ((403, 0, 0, 0, 0, KEY, HUGE, 0), IMA),
        ((HUGE, 0, 0, 0, 0, 0, 0, HUGE), BAD_ARGUMENT),  # no such HTTP status
        ((99, 0, 0, 0, 0, 0, 0, 0), BAD_ARGUMENT),
        ((600, 0, 0, 0, 0, 0, 0, 0), BAD_ARGUMENT),
    ],
    "proxy_http_call": [
        ((OOB, 4, 0, 0, 0, 0, 0, 0, 0, OUT), IMA),
        ((NOPE, 4, KEY, HUGE, 0, 0, 0, 0, 0, OUT), IMA),
        ((NOPE, 4, BOGUS, 4, 0, 0, 0, 0, HUGE, OUT), BAD_ARGUMENT),
        ((NOPE, 4, 0, 0, 0, 0, 0, 0, HUGE, OOB), BAD_ARGUMENT),  # no such cluster
    ],
    "proxy_grpc_call": [((OOB,) * 10 + (HUGE, OOB), UNIMPLEMENTED)],
    "proxy_grpc_stream": [((OOB,) * 9, UNIMPLEMENTED)],
    "proxy_grpc_send": [((HUGE, OOB, HUGE, HUGE), UNIMPLEMENTED)],
    "proxy_grpc_cancel": [((HUGE,), UNIMPLEMENTED)],
    "proxy_grpc_close": [((HUGE,), UNIMPLEMENTED)],
    "proxy_set_shared_data": [
        ((OOB, 4, VALUE, 1, 0), IMA),
        ((SKEY, 19, VALUE, HUGE, 0), IMA),
        ((SKEY, 19, VALUE, 1, HUGE), CAS_MISMATCH),  # a cas it never had: not written
    ],
    "proxy_get_shared_data": [
        ((OOB, 4, OUT, OUT_SIZE, OUT), IMA),
        ((SKEY, HUGE, OUT, OUT_SIZE, OUT), IMA),
        ((SKEY, 19, OOB, OOB, OOB), NOT_FOUND),
    ],
    "proxy_register_shared_queue": [((OOB, 7, OUT), IMA), ((QUEUE, HUGE, OUT), IMA)],
    "proxy_resolve_shared_queue": [
        ((OOB, 4, QUEUE, 7, OUT), IMA),
        ((NOPE, 4, QUEUE, HUGE, OUT), IMA),
        ((NOPE, 4, NOPE, 4, OOB), NOT_FOUND),
    ],
    "proxy_enqueue_shared_queue": [((HUGE, OOB, 4), IMA), ((HUGE, VALUE, 1), NOT_FOUND)],
    "proxy_dequeue_shared_queue": [((HUGE, OUT, OUT_SIZE), NOT_FOUND), ((0, OOB, OOB), NOT_FOUND)],
    "proxy_define_metric": [
        ((UNKNOWN, METRIC, 13, OUT), BAD_ARGUMENT),
        ((1, OOB, 13, OUT), IMA),
        ((1, METRIC, HUGE, OUT), IMA),
    ],
    "proxy_record_metric": [((HUGE, U64_MAX), NOT_FOUND), ((0, 0), NOT_FOUND)],
    "proxy_increment_metric": [((HUGE, I64_MIN), NOT_FOUND), ((0, I64_MAX), NOT_FOUND)],
    "proxy_get_metric": [((HUGE, OUT), NOT_FOUND), ((0, OOB), NOT_FOUND)],
    "proxy_get_property": [
        ((OOB, 12, OUT, OUT_SIZE), IMA),
        ((PATH, HUGE, OUT, OUT_SIZE), IMA),
        ((NOPE, 4, OUT, OUT_SIZE), NOT_FOUND),
        ((PATH, 12, OOB, OUT_SIZE), IMA),
        ((PATH, 12, 0, 0), OK),
        ((PEER, 19, OUT, OUT_SIZE), OK),
        ((PEER, 19, OOB, OUT_SIZE), IMA),
        ((PEER, HUGE, OUT, OUT_SIZE), IMA),
        ((GEO, 18, OOB, OOB), NOT_FOUND),
        ((SOURCE, 14, OUT, OOB), IMA),
        ((SOURCE, 13, OUT, OUT_SIZE), NOT_FOUND),  # b"source\0addres": another path
    ],
    "proxy_set_property": [((OOB, 12, VALUE, 1), IMA), ((PATH, 12, VALUE, HUGE), IMA)],
    # No foreign function is registered: NOT_FOUND, once its name could be read.
    "proxy_call_foreign_function": [
        ((OOB, 4, 0, 0, OUT, OUT_SIZE), IMA),
        ((NOPE, 4, KEY, HUGE, OUT, OUT_SIZE), IMA),
        ((NOPE, 4, 0, 0, OOB, OOB), NOT_FOUND),
    ],
    "proxy_continue_request": [((), OK)],
    "proxy_continue_response": [((), OK)],
    "proxy_clear_route_cache": [((), OK)],
    "emscripten_notify_memory_growth": [((HUGE,), 0)],  # no result: the wrapper's 0
}

# Integer cases on a defined metric: a gauge takes any i64, a counter no decrease.
METRIC_CASES: list[tuple[int, str, int, int]] = [
    (1, "proxy_increment_metric", I64_MIN, OK),
    (1, "proxy_increment_metric", I64_MAX, OK),
    (1, "proxy_record_metric", U64_MAX, OK),
    (0, "proxy_increment_metric", -1, BAD_ARGUMENT),
    (0, "proxy_increment_metric", I64_MIN, BAD_ARGUMENT),
    (2, "proxy_increment_metric", 1, BAD_ARGUMENT),  # a histogram only records
]


def _guest() -> str:
    """Imports every hostcall and exports call_<name>, forwarding its arguments."""
    imports, body = [], []
    for i, (name, export) in enumerate(sorted(HOSTCALLS.items())):
        params = " ".join(export.wasm_params)
        sig = (f"(param {params})" if params else "") + (" (result i32)" * export.returns_status)
        imports.append(f'(import "env" "{name}" (func $h{i} {sig}))')
        args = " ".join(f"local.get {n}" for n in range(len(export.wasm_params)))
        tail = "" if export.returns_status else " i32.const 0"
        decl = f"(param {params}) " if params else ""
        body.append(f'(func (export "call_{name}") {decl}(result i32) {args} call $h{i}{tail})')
    for at, data in _DATA.items():
        text = "".join(f"\\{b:02x}" for b in data)
        body.append(f'(data (i32.const {at}) "{text}")')
    return proxy_wat("\n".join(imports), "\n".join(body))


@pytest.fixture(params=[True, False], ids=["c-fast-paths", "python-only"])
def plugin(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Plugin]:
    if not request.param:  # the same table without what C answers itself
        for name, export in HOSTCALLS.items():
            monkeypatch.setitem(exports.HOSTCALLS, name, dataclasses.replace(export, fast=None))
    vm = load_plugin(write_wasm(tmp_path, "hostile", _guest()), "hostile", config=b"cfg")
    yield vm
    vm.close()


def _run(plugin: Plugin, name: str, args: tuple[int, ...]) -> int | type[Exception]:
    state = StreamState(exchange([(b"x-a", b"1")]))
    plugin.streams[CONTEXT] = state
    plugin.current = state
    try:
        return plugin.funcs[f"call_{name}"](*args)
    except WasmTrap:
        return WasmTrap
    finally:
        plugin.current = None
        plugin.streams.pop(CONTEXT, None)


def test_every_hostcall_has_hostile_cases() -> None:
    assert set(HOSTILE) == set(HOSTCALLS)
    for name, cases in HOSTILE.items():
        assert cases, name
        for args, _expected in cases:
            assert len(args) == len(HOSTCALLS[name].wasm_params), name


def test_hostile_arguments_get_a_status(plugin: Plugin) -> None:
    wrong = {
        (name, args): (got, expected)
        for name, cases in HOSTILE.items()
        for args, expected in cases
        if (got := _run(plugin, name, args)) != expected
    }
    assert wrong == {}
    # The VM still works: a plain read answers OK.
    assert _run(plugin, "proxy_get_header_map_value", (REQ, KEY, 3, OUT, OUT_SIZE)) == OK


def test_extreme_integers_on_a_defined_metric(plugin: Plugin) -> None:
    ids = {}
    for kind in (0, 1, 2):
        assert _run(plugin, "proxy_define_metric", (kind, METRIC, 13, OUT)) == OK
        ids[kind] = plugin.memory.read_u32(OUT)
    got = [_run(plugin, name, (ids[kind], value)) for kind, name, value, _ in METRIC_CASES]
    assert got == [expected for *_, expected in METRIC_CASES]


def test_hostile_calls_leak_nothing(plugin: Plugin) -> None:
    """Repeated, a hostile call leaves no memory behind: a reference the C layer forgot
    to drop (an argument's bytes, an answer, an exception) grows with every call."""
    leaks = {}
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(5):  # caches, free lists, first-call allocations, tracemalloc's own
            for name, cases in HOSTILE.items():
                for args, _expected in cases:
                    _run(plugin, name, args)
        for name, cases in HOSTILE.items():
            for args, _expected in cases:
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(100):
                    _run(plugin, name, args)
                grown = tracemalloc.get_traced_memory()[0] - before
                if grown > 1024:  # one small object leaked per call is >= 1600 bytes
                    leaks[(name, args)] = grown
    finally:
        tracemalloc.stop()
    assert leaks == {}


def test_an_http_call_answer_reads_alike_in_c_and_python(plugin: Plugin) -> None:
    """The hostcalls of proxy_on_http_call_response (native/callout.c in C): the
    answer's :status and body, the stream made effective and resumed."""
    call_headers, call_body = int(MapType.HTTP_CALL_RESPONSE_HEADERS), 4
    body = b'{"allowed": true}'

    def answer(name: str, *args: int) -> tuple[int | type[Exception], bytes | None]:
        status = _run(plugin, name, (*args, OUT, OUT_SIZE))
        if status != OK:
            return status, None
        at, size = plugin.memory.read_u32(OUT), plugin.memory.read_u32(OUT_SIZE)
        return status, plugin.memory.read(at, size) if size else b""

    plugin.call_response = CallResponse(200, [(b"content-type", b"application/json")], body)
    try:
        assert answer("proxy_get_header_map_value", call_headers, STATUS, 7) == (OK, b"200")
        assert answer("proxy_get_header_map_value", call_headers, CTYPE, 12) == (
            OK,
            b"application/json",
        )
        assert answer("proxy_get_header_map_value", call_headers, STATUS, 6) == (NOT_FOUND, None)
        assert answer("proxy_get_buffer_bytes", call_body, 0, HUGE) == (OK, body)
        assert answer("proxy_get_buffer_bytes", call_body, 2, 7) == (OK, body[2:9])
        assert answer("proxy_get_buffer_bytes", call_body, len(body), 5) == (OK, b"")
        assert answer("proxy_get_buffer_bytes", call_body, len(body) + 1, 5) == (BAD_ARGUMENT, None)
        assert _run(plugin, "proxy_get_buffer_bytes", (call_body, 0, 1, OOB, OUT_SIZE)) == IMA
    finally:
        plugin.call_response = None
    assert answer("proxy_get_header_map_value", call_headers, STATUS, 7) == (NOT_FOUND, None)
    assert answer("proxy_get_buffer_bytes", call_body, 0, 1) == (NOT_FOUND, None)

    loop = asyncio.new_event_loop()
    try:
        state = StreamState(exchange([]))
        state.resume = loop.create_future()
        plugin.streams[CONTEXT + 1] = state
        set_effective = plugin.funcs["call_proxy_set_effective_context"]
        assert set_effective(CONTEXT + 1) == OK and plugin.current is state
        assert plugin.funcs["call_proxy_continue_stream"](0) == OK and state.resume.done()
        assert plugin.funcs["call_proxy_continue_stream"](1) == OK  # already resumed
        assert plugin.funcs["call_proxy_continue_stream"](4) == BAD_ARGUMENT
        assert set_effective(1) == OK and plugin.current is None  # the root context
        assert plugin.funcs["call_proxy_continue_stream"](0) == NOT_FOUND
        assert set_effective(CONTEXT + 2) == BAD_ARGUMENT
    finally:
        plugin.streams.pop(CONTEXT + 1, None)
        loop.close()
