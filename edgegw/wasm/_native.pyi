"""edgegw.wasm._native: the one C extension (edgegw/wasm/native/, native.h lists its
files): guest calls and hostcalls (call.c, host.c, headers.c), a request's filter chain
(phase*.c) and the shared data table (shm.c)."""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from edgegw.chain import Exchange, LocalReply
from edgegw.errors import WasmError
from edgegw.types import Headers

# guest calls and hostcalls (call.c, host.c, headers.c)

class Func:
    ticks: int
    @property
    def name(self) -> str: ...
    def __init__(
        self,
        ctx: int,
        func_ptr: int,
        owner: object,
        nparams: int,
        nresults: int,
        ticks: int,
        name: str,
        on_error: Callable[[str, bool, int, int], NoReturn],
    ) -> None: ...
    def __call__(self, *args: int) -> int: ...

class Answer:
    def __init__(
        self, ctx: int, memory_ptr: int, owner: object, alloc: Callable[[int], int]
    ) -> None: ...
    def __call__(self, data: bytes, ptr_ptr: int, size_ptr: int, /) -> int: ...

class Host:
    @property
    def address(self) -> int: ...
    def __init__(
        self,
        impl: Callable[..., int],
        name: str,
        is64: Sequence[bool],
        has_result: bool,
        strings: Sequence[int] = (),
        lower_first: bool = False,
        signed: Sequence[int] = (),
    ) -> None: ...
    def set_memory(self, ctx: int, memory_ptr: int, owner: object) -> None: ...
    def set_clock(self) -> None: ...
    def set_fast_edit(
        self, plugin: Vm, edit: str, alloc: Callable[[int], int] | None = None, /
    ) -> None: ...

def init(
    call_unchecked: int,
    set_epoch_deadline: int,
    trap_new: int,
    increment_epoch: int,
    memory_data: int,
    memory_data_size: int,
    trap_code: int,
    interrupt_code: int,
) -> int: ...
def set_deadline(ctx: int, ticks: int) -> None: ...
def start_ticker(engine_ptr: int, engine: Any, interval_ns: int) -> None: ...
def counts() -> tuple[int, int]: ...
def decode_pairs(data: bytes, /) -> list[tuple[bytes, bytes]] | None: ...

# an Exchange's fields by slot offset (exchange.c)

def set_exchange(cls: type[Exchange], /) -> None: ...

# a request's filter chain (phase.c, phase_types.c, phase_chain.c)

ROOT_CONTEXT: int
REQUEST_PSEUDO: int
RESPONSE_PSEUDO: int

class Vm:
    current: State | None
    @property
    def streams(self) -> dict[int, Any]: ...
    closed: bool
    # The `geoip:` lookup (Plugin.geo): C answers edgegw.geo.country NOT_FOUND without it.
    geo: Callable[[str], str | None] | None
    call_response: Any  # the http_call answer being delivered (CallResponse), or None
    def take_calls(self) -> tuple[int, float, tuple[int, ...]]: ...
    def observe_call(self, seconds: float, /) -> None: ...

class State:
    def __new__(cls, ex: Exchange) -> State: ...
    @property
    def ex(self) -> Exchange: ...
    local_reply: LocalReply | None
    resume: asyncio.Future[None] | None
    failure: tuple[object, WasmError] | None
    request_body: bytearray | None
    response_body: bytearray | None
    request_trailers: Headers | None
    response_trailers: Headers | None
    encoding_local: bool

class Plan:
    def __init__(
        self,
        plugins: tuple[Vm, ...],
        context_create: tuple[Callable[[int, int], int] | None, ...],
        request_headers: tuple[Callable[[int, int, bool], int] | None, ...],
        response_headers: tuple[Callable[[int, int, bool], int] | None, ...],
        ends: tuple[tuple[Callable[[int], int], ...], ...],
        wants_response_body: bool,
        reload: Callable[[Any], None],
    ) -> None: ...
    @property
    def plugins(self) -> tuple[Vm, ...]: ...
    @property
    def context_create(self) -> tuple[Callable[[int, int], int] | None, ...]: ...
    @property
    def request_headers(self) -> tuple[Callable[[int, int, bool], int] | None, ...]: ...
    @property
    def response_headers(self) -> tuple[Callable[[int, int, bool], int] | None, ...]: ...
    @property
    def ends(self) -> tuple[tuple[Callable[[int], int], ...], ...]: ...
    @property
    def wants_response_body(self) -> bool: ...
    @property
    def reload(self) -> Callable[[Any], None]: ...

class Chain:
    def __new__(cls, plan: Plan, ex: Exchange) -> Chain: ...
    @property
    def plan(self) -> Plan: ...
    @property
    def state(self) -> State: ...
    @property
    def plugins(self) -> tuple[Vm, ...]: ...
    @property
    def context(self) -> int: ...
    @property
    def contexts(self) -> list[int]: ...
    @property
    def off(self) -> dict[int, WasmError | None]: ...
    _body_at: list[int | None] | None
    @property
    def wants_response_body(self) -> bool: ...
    def request_headers(
        self, ex: Exchange, end_of_stream: bool, /
    ) -> Awaitable[LocalReply | None] | None: ...
    def response_headers(
        self, ex: Exchange, end_of_stream: bool, /
    ) -> Awaitable[LocalReply | None] | None: ...
    def done(self, ex: Exchange, /) -> None: ...
    def _run(
        self,
        hooks: tuple[Callable[[int, int, bool], int] | None, ...],
        headers: Headers,
        pseudo: int,
        index: int,
        stop: int,
        step: int,
        end_of_stream: bool,
        /,
    ) -> tuple[int, object]: ...

class Starter:
    def __init__(
        self,
        plans: dict[str, Any],
        make_plan: Callable[[Any], Plan],
        chain_class: type[Chain],
    ) -> None: ...
    def __call__(self, ex: Exchange, /) -> Any: ...

def set_types(error: type[Exception], state: type[State], closed: type[Exception], /) -> None: ...

# the shared data table (shm.c)

MUTEX_OFFSET: int
MAX_KEY: int

class Table:
    def __init__(
        self,
        path: str | None = None,
        max_bytes: int = ...,
        max_keys: int = ...,
        create: bool = True,
    ) -> None: ...
    def get(self, key: bytes, /) -> tuple[bytes, int] | None: ...
    def set(self, key: bytes, value: bytes, cas: int, /) -> int: ...
    def nsget(self, ns: int, key: bytes, /) -> tuple[bytes, int] | None: ...
    def nsset(self, ns: int, key: bytes, value: bytes, cas: int, /) -> int: ...
    def stats(self) -> dict[str, int]: ...
