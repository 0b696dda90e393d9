"""A request's filter chain in C (edgegw/wasm/_phase*.c), driven with Python callables
in place of guest hooks: where a phase goes on, where it stops and what it hands back;
how a Chain creates and ends its filters' streams."""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest

from edgegw.chain import Exchange, LocalReply
from edgegw.errors import WasmError, WasmTrap
from edgegw.types import Headers
from edgegw.wasm import _phase
from edgegw.wasm.state import StreamState
from edgegw.wasm.stream import Chain

REPLY = LocalReply(418)


class FakePlugin(_phase.Vm):
    def __init__(self, name: str = "f") -> None:
        self.name = name


def exchange(headers: Headers) -> Exchange:
    return Exchange(route=None, method="GET", path="/", scheme="http", authority="gw",  # type: ignore[arg-type]
                    request_headers=headers, client=("127.0.0.1", 1), server=("127.0.0.1", 2),
                    connection_id=1, start_ns=0)  # fmt: skip


Calls = list[tuple[int, int, int, bool]]


def hook(
    index: int, calls: Calls, plugin: FakePlugin, state: StreamState, headers: Headers,
    **then: object,
) -> Callable[[int, int, bool], int]:  # fmt: skip
    """A hook that records (filter, context, header count, end_of_stream), checks that it
    runs as ``plugin.current``, and then adds a header, replies, raises or pauses."""

    def call(context: int, count: int, eos: bool) -> int:
        assert plugin.current is state
        calls.append((index, context, count, eos))
        if then.get("add"):
            headers.append((b"x", b"y"))
        if then.get("reply"):
            state.local_reply = REPLY
        if "raise" in then:
            exc = then["raise"]
            assert isinstance(exc, Exception)
            raise exc
        action = then.get("action", 0)
        assert isinstance(action, int)
        return action

    return call


def chain(n: int, **per_index: dict[str, object]) -> tuple[
    tuple[FakePlugin, ...], tuple[Callable[[int, int, bool], int] | None, ...], StreamState,
    Calls, Headers,
]:  # fmt: skip
    plugins = tuple(FakePlugin() for _ in range(n))
    headers: Headers = [(b"host", b"gw")]
    state, calls = StreamState(exchange(headers)), []
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
    [({"action": 1}, 1), ({"reply": True}, 0), ({"reply": True, "action": 1}, 1)],
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
    with pytest.raises(TypeError):  # the state is a State: run reads its reply in C
        _phase.run(plugins, hooks, [1, 2], {}, object(), headers, 4, 0, 2, 1, True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # and each filter a Vm: run sets its stream in C
        _phase.run((object(),), hooks[:1], [1], {}, state, headers, 4, 0, 1, 1, True)  # type: ignore[arg-type]


# --- Chain: the contexts of one request --------------------------------------------


def plan(
    plugins: tuple[FakePlugin, ...], create: tuple[Callable[[int, int], int] | None, ...],
    ends: tuple[tuple[Callable[[int], int], ...], ...] | None = None,
) -> _phase.Plan:  # fmt: skip
    none = (None,) * len(plugins)
    ends = ((),) * len(plugins) if ends is None else ends
    return _phase.Plan(plugins, create, none, none, ends, False, lambda _plugin: None)


def test_a_chain_creates_a_context_in_every_filter() -> None:
    plugins = tuple(FakePlugin() for _ in range(3))
    seen: list[tuple[int, int, int]] = []
    trap = WasmTrap("f: unreachable")

    def create(index: int) -> Callable[[int, int], int]:
        def call(context: int, root: int) -> int:
            state = plugins[index].current
            assert isinstance(state, StreamState) and plugins[index].streams == {context: state}
            seen.append((index, context, root))
            if index == 1:
                raise trap
            return 0

        return call

    ex = exchange([])
    first = Chain(plan(plugins, (create(0), create(1), None)), ex)
    state = first.state
    assert type(state) is StreamState and state.ex is ex and state.local_reply is None
    context = seen[0][1]
    assert seen == [(0, context, _phase.ROOT_CONTEXT), (1, context, _phase.ROOT_CONTEXT)]
    # The filter whose creation failed has no context and no stream, and is off with its
    # error; the others share one context id.
    assert first.contexts == [context, 0, context] and first.off == {1: trap}
    assert [p.streams for p in plugins] == [{context: state}, {}, {context: state}]
    # The next request gets the next id, the same in every VM.
    second = Chain(plan(plugins, (None, None, None)), ex)
    assert second.contexts == [context + 1] * 3 and second.off == {}
    assert plugins[0].streams == {context: state, context + 1: second.state}


def test_done_ends_every_stream_and_releases_it(caplog: pytest.LogCaptureFixture) -> None:
    plugins = tuple(FakePlugin(f"f{i}") for i in range(4))
    seen: list[tuple[int, str, int]] = []
    trap = WasmTrap("f: unreachable")

    def end(index: int, name: str) -> Callable[[int], int]:
        def call(context: int) -> int:
            assert plugins[index].current is not None
            seen.append((index, name, context))
            if (index, name) == (0, "done"):
                raise trap
            return 0

        return call

    def create(index: int) -> Callable[[int, int], int] | None:
        def fail(_context: int, _root: int) -> int:
            raise trap

        return fail if index == 1 else None

    ends = tuple((end(i, "log"), end(i, "done"), end(i, "delete")) for i in range(4))
    ex = exchange([])
    one = Chain(plan(plugins, tuple(create(i) for i in range(4)), ends), ex)
    context = one.contexts[0]
    plugins[3].closed = True  # replaced by a fresh VM (on_error: reload) meanwhile
    one.done(ex)
    # Filter 0 is not called again after its failure; 1 had no context; 3 is closed.
    assert seen == [(0, "log", context), (0, "done", context), (2, "log", context),
                    (2, "done", context), (2, "delete", context)]  # fmt: skip
    assert [p.streams for p in plugins] == [{}, {}, {}, {context: one.state}]
    assert plugins[0].current is None and plugins[2].current is None
    assert "filter 'f0' failed at the end of a request" in caplog.text


def test_other_errors_raise_and_bad_plans_are_refused() -> None:
    plugins = (FakePlugin(),)

    def broken(*_args: int) -> int:
        raise KeyError("bug")

    ex = exchange([])
    with pytest.raises(KeyError):
        Chain(plan(plugins, (broken,)), ex)
    one = Chain(plan(plugins, (None,), ((broken,),)), ex)
    with pytest.raises(KeyError):
        one.done(ex)
    with pytest.raises(ValueError):  # one hook of each kind per filter
        plan(plugins, (None, None))
    with pytest.raises(TypeError):  # each filter's ends are a tuple
        plan(plugins, (None,), (broken,))  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # each filter is a Vm
        plan((object(),), (None,))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Chain(object(), ex)  # type: ignore[arg-type]


def test_a_chain_in_a_reference_cycle_is_collected() -> None:
    collected: list[bool] = []

    class Marker:
        def __del__(self) -> None:
            collected.append(True)

    one = Chain(plan((FakePlugin(),), (None,)), exchange([]))
    # A failure remembered on the state that refers back to the chain: a cycle through
    # the C fields, which only their traverse functions let the collector see.
    one.state.failure = (Marker(), WasmTrap(repr(one)))
    one.state.resume = one  # type: ignore[assignment]
    one.plugins[0].streams.clear()
    del one
    gc.collect()
    assert collected == [True]
