from collections.abc import Callable, Sequence
from typing import Any, NoReturn

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
        self, plugin: object, edit: str, alloc: Callable[[int], int] | None = None, /
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
