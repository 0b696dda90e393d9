"""The header-phase loop in C (edgegw/wasm/_phase.c), driven with Python callables in
place of guest hooks: where it goes on, where it stops and what it hands back."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edgegw.errors import WasmError, WasmTrap
from edgegw.types import Headers
from edgegw.wasm import _phase, stream  # noqa: F401  (stream sets the error type)


class FakePlugin:
    def __init__(self) -> None:
        self.current: object = None
        self.streams: dict[int, object] = {}
        self.closed = False


class FakeState:
    def __init__(self) -> None:
        self.local_reply: object = None


Calls = list[tuple[int, int, int, bool]]


def hook(
    index: int, calls: Calls, plugin: FakePlugin, state: FakeState, headers: Headers,
    **then: object,
) -> Callable[[int, int, bool], int]:  # fmt: skip
    """A hook that records (filter, context, header count, end_of_stream), checks that it
    runs as ``plugin.current``, and then adds a header, replies, raises or pauses."""

    def call(context: int, count: int, eos: bool) -> int:
        assert plugin.current is state
        calls.append((index, context, count, eos))
        if then.get("add"):
            headers.append((b"x", b"y"))
        if "reply" in then:
            state.local_reply = then["reply"]
        if "raise" in then:
            exc = then["raise"]
            assert isinstance(exc, Exception)
            raise exc
        action = then.get("action", 0)
        assert isinstance(action, int)
        return action

    return call


def chain(n: int, **per_index: dict[str, object]) -> tuple[
    tuple[FakePlugin, ...], tuple[Callable[[int, int, bool], int] | None, ...], FakeState,
    Calls, Headers,
]:  # fmt: skip
    plugins = tuple(FakePlugin() for _ in range(n))
    state, calls, headers = FakeState(), [], [(b"host", b"gw")]
    hooks = tuple(
        hook(i, calls, plugins[i], state, headers, **per_index.get(f"f{i}", {})) for i in range(n)
    )
    return plugins, hooks, state, calls, headers


def test_every_filter_continues_in_order_with_the_map_size() -> None:
    plugins, hooks, state, calls, headers = chain(3, f0={"add": True})
    out = _phase.run(plugins, hooks, [10, 11, 12], {}, state, headers, 4, 0, 3, 1, True)
    assert out == (-1, None)
    # The second filter sees the header the first one added (1 + 1 stored, 4 pseudo).
    assert calls == [(0, 10, 5, True), (1, 11, 6, True), (2, 12, 6, True)]
    assert all(p.current is state for p in plugins)


def test_reverse_order_and_a_missing_hook() -> None:
    plugins, hooks, state, calls, headers = chain(3)
    hooks = (hooks[0], None, hooks[2])
    out = _phase.run(plugins, hooks, [1, 2, 3], {}, state, headers, 1, 2, -1, -1, False)
    assert out == (-1, None)
    assert [c[0] for c in calls] == [2, 0]
    assert plugins[1].current is None  # a filter without the hook is not entered


@pytest.mark.parametrize(
    ("then", "expected"),
    [({"action": 1}, 1), ({"reply": "local"}, 0), ({"reply": "local", "action": 1}, 1)],
)
def test_a_pause_or_a_local_reply_stops_at_that_filter(
    then: dict[str, object], expected: int
) -> None:
    plugins, hooks, state, calls, headers = chain(3, f1=then)
    out = _phase.run(plugins, hooks, [1, 2, 3], {}, state, headers, 4, 0, 3, 1, True)
    assert out == (1, expected)
    assert [c[0] for c in calls] == [0, 1]


def test_a_wasm_error_is_returned_other_errors_raise() -> None:
    trap = WasmTrap("f: unreachable")
    plugins, hooks, state, calls, headers = chain(2, f0={"raise": trap})
    index, result = _phase.run(plugins, hooks, [1, 2], {}, state, headers, 4, 0, 2, 1, True)
    assert (index, result) == (0, trap)
    assert isinstance(result, WasmError)
    assert [c[0] for c in calls] == [0]  # the loop stopped at the failed filter
    plugins, hooks, state, _calls, headers = chain(2, f0={"raise": KeyError("bug")})
    with pytest.raises(KeyError):
        _phase.run(plugins, hooks, [1, 2], {}, state, headers, 4, 0, 2, 1, True)


def test_a_filter_that_is_off_stops_the_loop_uncalled() -> None:
    plugins, hooks, state, calls, headers = chain(3)
    off: dict[int, object] = {1: None}
    assert _phase.run(plugins, hooks, [1, 2, 3], off, state, headers, 4, 0, 3, 1, True) == (
        1,
        None,
    )
    assert [c[0] for c in calls] == [0]
    # Resumed after it, the loop goes on to the end.
    assert _phase.run(plugins, hooks, [1, 2, 3], off, state, headers, 4, 2, 3, 1, True) == (
        -1,
        None,
    )


def test_inconsistent_arguments_are_refused() -> None:
    plugins, hooks, state, _calls, headers = chain(2)
    with pytest.raises(ValueError):
        _phase.run(plugins, hooks, [1], {}, state, headers, 4, 0, 2, 1, True)
    with pytest.raises(IndexError):
        _phase.run(plugins, hooks, [1, 2], {}, state, headers, 4, 5, 2, 1, True)
    with pytest.raises(TypeError):
        _phase.run(plugins, hooks, (1, 2), {}, state, headers, 4, 0, 2, 1, True)  # type: ignore[arg-type]


def test_open_creates_a_context_in_every_filter() -> None:
    plugins = tuple(FakePlugin() for _ in range(3))
    state, seen, trap = FakeState(), [], WasmTrap("f: unreachable")

    def create(index: int) -> Callable[[int, int], int]:
        def call(context: int, root: int) -> int:
            assert plugins[index].current is state and plugins[index].streams == {7: state}
            seen.append((index, context, root))
            if index == 1:
                raise trap
            return 0

        return call

    contexts = [7, 7, 7]
    hooks = (create(0), create(1), None)
    assert _phase.open(plugins, hooks, state, contexts, 1) == {1: trap}
    assert seen == [(0, 7, 1), (1, 7, 1)]
    # The filter whose creation failed has no context and no stream; the others do.
    assert contexts == [7, 0, 7]
    assert [p.streams for p in plugins] == [{7: state}, {}, {7: state}]


def test_close_ends_every_stream_and_releases_it() -> None:
    plugins = tuple(FakePlugin() for _ in range(4))
    state, seen, trap = FakeState(), [], WasmTrap("f: unreachable")
    for plugin in plugins:
        plugin.streams[9] = state
    plugins[3].closed = True  # replaced by a fresh VM (on_error: reload) meanwhile

    def end(index: int, name: str) -> Callable[[int], int]:
        def call(context: int) -> int:
            assert plugins[index].current is state
            seen.append((index, name, context))
            if (index, name) == (0, "done"):
                raise trap
            return 0

        return call

    hooks = tuple((end(i, "log"), end(i, "done"), end(i, "delete")) for i in range(4))
    assert _phase.close(plugins, hooks, state, [9, 0, 9, 9]) == [(0, trap)]
    # Filter 0 is not called again after its failure; 1 had no context; 3 is closed.
    assert seen == [(0, "log", 9), (0, "done", 9), (2, "log", 9), (2, "done", 9),
                    (2, "delete", 9)]  # fmt: skip
    assert [p.streams for p in plugins] == [{}, {9: state}, {}, {9: state}]
    assert plugins[0].current is None and plugins[2].current is None


def test_open_and_close_raise_other_errors() -> None:
    plugins = (FakePlugin(),)

    def broken(*_args: int) -> int:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        _phase.open(plugins, (broken,), FakeState(), [5], 1)
    with pytest.raises(KeyError):
        _phase.close(plugins, ((broken,),), FakeState(), [5])
    with pytest.raises(TypeError):
        _phase.close(plugins, (broken,), FakeState(), [5])  # type: ignore[arg-type]
