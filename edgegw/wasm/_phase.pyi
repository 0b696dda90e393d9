from collections.abc import Callable, Mapping

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
