import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from edgegw.chain import Exchange, LocalReply
from edgegw.errors import WasmError
from edgegw.types import Headers

ROOT_CONTEXT: int
REQUEST_PSEUDO: int
RESPONSE_PSEUDO: int

class Vm:
    current: State | None
    @property
    def streams(self) -> dict[int, Any]: ...
    closed: bool
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
