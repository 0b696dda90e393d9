from collections.abc import Callable, Mapping
from typing import Any

def run(
    plugins: tuple[object, ...],
    hooks: tuple[Callable[[int, int, bool], int] | None, ...],
    contexts: list[int],
    off: Mapping[int, object],
    state: object,
    headers: list[tuple[bytes, bytes]],
    pseudo: int,
    index: int,
    stop: int,
    step: int,
    end_of_stream: bool,
) -> tuple[int, object]: ...
def set_error_type(cls: type[Exception], /) -> None: ...
def open(
    plugins: tuple[object, ...],
    hooks: tuple[Callable[[int, int], int] | None, ...],
    state: object,
    contexts: list[int],
    root: int,
    /,
) -> dict[int, Any]: ...
def close(
    plugins: tuple[object, ...],
    hooks: tuple[tuple[Callable[[int], int], ...], ...],
    state: object,
    contexts: list[int],
    /,
) -> list[tuple[int, Exception]]: ...
