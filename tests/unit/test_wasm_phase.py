"""A request's filter chain in C (edgegw/wasm/native/phase*.c), driven with Python callables
in place of guest hooks: where a phase goes on, where it stops and what it hands back;
how a Chain creates and ends its filters' streams."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edgegw.chain import Exchange, LocalReply
from edgegw.errors import WasmError, WasmTrap
from edgegw.types import Headers
from edgegw.wasm import _native
from edgegw.wasm.state import StreamState
from edgegw.wasm.stream import Chain

REPLY = LocalReply(418)


class FakePlugin(_native.Vm):
    def __init__(self, name: str = "f") -> None:
        self.name = name


def exchange(headers: Headers) -> Exchange:
    return Exchange(route=None, method="GET", path="/", scheme="http", authority="gw",  # type: ignore[arg-type]
                    request_headers=headers, client=("127.0.0.1", 1), server=("127.0.0.1", 2),
                    connection_id=1, start_ns=0)  # fmt: skip


Calls = list[tuple[int, int, int, bool]]


def hook(
    index: int, calls: Calls, plugin: FakePlugin, headers: Headers, **then: object
) -> Callable[[int, int, bool], int]:
    """A hook that records (filter, context, header count, end_of_stream), checks that it
    runs as ``plugin.current``, and then adds a header, replies, raises or pauses."""

    def call(context: int, count: int, eos: bool) -> int:
        state = plugin.current
        assert isinstance(state, StreamState) and state.ex.request_headers is headers
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


class Run:
    """A chain of ``n`` fake filters whose request hooks are ``hooks``."""

    def __init__(self, n: int, **per_index: dict[str, object]) -> None:
        self.plugins = tuple(FakePlugin(f"f{i}") for i in range(n))
        self.headers: Headers = [(b"host", b"gw")]
        self.calls: Calls = []
        self.hooks = tuple(
            hook(i, self.calls, self.plugins[i], self.headers, **per_index.get(f"f{i}", {}))
            for i in range(n)
        )
        self.ex = exchange(self.headers)
        none = (None,) * n
        plan = _native.Plan(
            self.plugins, none, self.hooks, none, ((),) * n, False, lambda _plugin: None
        )
        self.chain = Chain(plan, self.ex)
        self.context = self.chain.context

    def run(
        self, index: int, stop: int, step: int = 1, hooks: tuple[object, ...] | None = None
    ) -> tuple[int, object]:
        pseudo = 4 if step == 1 else 1
        chosen = self.hooks if hooks is None else hooks
        return self.chain._run(chosen, self.headers, pseudo, index, stop, step, step == 1)  # type: ignore[arg-type]


def test_every_filter_continues_in_order_with_the_map_size() -> None:
    run = Run(3, f0={"add": True})
    assert run.run(0, 3) == (-1, None)
    # The second filter sees the header the first one added (1 + 1 stored, 4 pseudo).
    c = run.context
    assert run.calls == [(0, c, 5, True), (1, c, 6, True), (2, c, 6, True)]
    assert all(p.current is run.chain.state for p in run.plugins)


def test_reverse_order_and_a_missing_hook() -> None:
    run = Run(3)
    run.plugins[1].current = None
    assert run.run(2, -1, -1, (run.hooks[0], None, run.hooks[2])) == (-1, None)
    assert [c[0] for c in run.calls] == [2, 0]
    assert run.plugins[1].current is None  # a filter without the hook is not entered


@pytest.mark.parametrize(
    ("then", "expected"),
    [({"action": 1}, 1), ({"reply": True}, 0), ({"reply": True, "action": 1}, 1)],
)
def test_a_pause_or_a_local_reply_stops_at_that_filter(
    then: dict[str, object], expected: int
) -> None:
    run = Run(3, f1=then)
    assert run.run(0, 3) == (1, expected)
    assert [c[0] for c in run.calls] == [0, 1]


def test_a_wasm_error_is_returned_other_errors_raise() -> None:
    trap = WasmTrap("f: unreachable")
    run = Run(2, f0={"raise": trap})
    index, result = run.run(0, 2)
    assert (index, result) == (0, trap)
    assert isinstance(result, WasmError)
    assert [c[0] for c in run.calls] == [0]  # the loop stopped at the failed filter
    with pytest.raises(KeyError):
        Run(2, f0={"raise": KeyError("bug")}).run(0, 2)


def test_a_filter_that_is_off_stops_the_loop_uncalled() -> None:
    run = Run(3)
    run.chain.off[1] = None
    assert run.run(0, 3) == (1, None)
    assert [c[0] for c in run.calls] == [0]
    # Resumed after it, the loop goes on to the end.
    assert run.run(2, 3) == (-1, None)


def test_inconsistent_arguments_are_refused() -> None:
    run = Run(2)
    with pytest.raises(ValueError):
        run.run(0, 3)
    with pytest.raises(IndexError):
        run.run(5, 2)
    with pytest.raises(TypeError):  # one hook per filter
        run.run(0, 2, 1, run.hooks[:1])
    with pytest.raises(TypeError):
        run.chain._run(run.hooks, (), 4, 0, 2, 1, True)  # type: ignore[arg-type]


def test_the_header_phases_hand_a_stop_to_python() -> None:
    # Every filter goes on: no awaitable at all.
    assert Run(2).chain.request_headers(exchange([]), True) is None
    # Filter 1 of 3 replies: the later filter never sees the request, and the reply goes
    # through the response phase (stream.Chain._after_stop, _encode_local).
    run = Run(3, f1={"reply": True})
    pending = run.chain.request_headers(run.ex, True)
    assert pending is not None
    reply = asyncio.run(pending)  # type: ignore[arg-type]
    assert reply == LocalReply(418, [], b"") and run.ex.status == 418
    assert [c[0] for c in run.calls] == [0, 1] and run.chain.off == {2: None}


# --- Chain: the contexts of one request --------------------------------------------


def plan(
    plugins: tuple[FakePlugin, ...], create: tuple[Callable[[int, int], int] | None, ...],
    ends: tuple[tuple[Callable[[int], int], ...], ...] | None = None,
) -> _native.Plan:  # fmt: skip
    none = (None,) * len(plugins)
    ends = ((),) * len(plugins) if ends is None else ends
    return _native.Plan(plugins, create, none, none, ends, False, lambda _plugin: None)


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
    assert seen == [(0, context, _native.ROOT_CONTEXT), (1, context, _native.ROOT_CONTEXT)]
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
    made = plan(plugins, (None,))
    with pytest.raises(TypeError):  # chains rely on a plan's tuples: made once
        made.__init__(plugins, (None,), (None,), (None,), ((),), False, None)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Chain(object(), ex)  # type: ignore[arg-type]


def test_a_chain_that_cannot_be_made_leaves_no_stream_behind() -> None:
    # Filter 2's creation fails with an error that is no filter failure: the Chain is
    # never made, so nothing would ever end the streams filters 0 to 2 had registered.
    plugins = tuple(FakePlugin(f"f{i}") for i in range(4))
    other = StreamState(exchange([]))
    plugins[0].streams[99] = other  # another request's stream stays
    trap = WasmTrap("f1: unreachable")

    def create(index: int) -> Callable[[int, int], int]:
        def call(_context: int, _root: int) -> int:
            if index == 1:
                raise trap  # a filter failure: that filter is off, its stream removed
            if index == 2:
                raise KeyError("bug")
            return 0

        return call

    with pytest.raises(KeyError, match="bug"):
        Chain(plan(plugins, tuple(create(i) for i in range(4))), exchange([]))
    assert [p.streams for p in plugins] == [{99: other}, {}, {}, {}]
    assert [p.current for p in plugins] == [None] * 4


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


def test_the_starter_makes_each_route_plan_once() -> None:
    @dataclass(frozen=True)
    class Route:
        name: str

    plugins = (FakePlugin(),)
    made: list[str] = []

    def make_plan(route: Route) -> _native.Plan:
        made.append(route.name)
        if route.name == "filtered":
            return plan(plugins, (None,))
        return plan((), ())

    plans: dict[str, _native.Plan] = {}
    start = _native.Starter(plans, make_plan, Chain)
    ex = exchange([])
    for name in ("filtered", "plain", "filtered", "plain"):
        ex.route = Route(name)  # type: ignore[assignment]
        chain = start(ex)
        assert (chain is not None) == (name == "filtered")
        if chain is not None:
            assert type(chain) is Chain and chain.state.ex is ex and chain.plugins == plugins
    assert made == ["filtered", "plain"] and set(plans) == {"filtered", "plain"}
    plans.clear()  # WasmRuntime.reload_plugin: plans are made again
    ex.route = Route("filtered")  # type: ignore[assignment]
    start(ex)
    assert made == ["filtered", "plain", "filtered"]
    with pytest.raises(TypeError):  # make_plan gave something else than a Plan
        _native.Starter({}, lambda _route: object(), Chain)(ex)
    with pytest.raises(TypeError):  # something else than a Plan where plans are kept
        _native.Starter({"filtered": object()}, make_plan, Chain)(ex)
    with pytest.raises(TypeError):
        _native.Starter({}, make_plan, object)  # type: ignore[arg-type]
