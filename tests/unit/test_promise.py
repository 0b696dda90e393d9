"""edgegw/promise.py: one subscriber, called within resolve when it came first, on the
next loop turn when the promise was already settled (a filter's hostcall that
subscribes must never be re-entered); awaitable; a subscriber's bug is reported, not
raised into the code that settled it."""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path
from typing import Any

import pytest

from edgegw.chain import CallResponse
from edgegw.errors import StoreUnavailable
from edgegw.promise import Promise, promise_of
from edgegw.wasm.plugin import Plugin
from tests.wat import load_plugin, proxy_wat, write_wasm


async def test_a_subscriber_first_is_called_within_resolve() -> None:
    seen: list[int] = []
    promise: Promise[int] = Promise()
    promise.then(lambda p: seen.append(p.result()))
    promise.resolve(1)
    assert seen == [1]
    promise.resolve(2)  # settled once
    assert promise.result() == 1 and seen == [1]


async def test_subscribing_to_a_settled_promise_answers_on_the_next_turn() -> None:
    seen: list[int] = []
    promise = Promise.resolved(7)
    promise.then(lambda p: seen.append(p.result()))
    assert seen == []  # not inside then(): the caller may be a hostcall
    with pytest.raises(RuntimeError):
        promise.then(lambda p: None)  # one subscriber
    await asyncio.sleep(0)
    assert seen == [7]


async def test_await_and_failures() -> None:
    promise: Promise[int] = Promise()
    asyncio.get_running_loop().call_soon(promise.fail, StoreUnavailable("down"))
    with pytest.raises(StoreUnavailable):
        await promise
    assert isinstance(promise.error, StoreUnavailable)

    async def later() -> int:
        await asyncio.sleep(0)
        return 3

    assert await promise_of(later()) == 3
    assert await Promise.resolved(4) == 4


async def test_a_subscribers_bug_reaches_the_loop_handler_not_the_settler() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        promise: Promise[int] = Promise()
        promise.then(lambda p: 1 / 0)  # type: ignore[func-returns-value]
        promise.resolve(1)  # does not raise
    finally:
        loop.set_exception_handler(None)
    assert isinstance(reported[0]["exception"], ZeroDivisionError)


async def test_a_store_answer_reaches_the_guest_in_the_calling_requests_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Redis reader settles the promise in its own context; the filter's
    on_http_call_response still runs in the request's (tracing's current span), as the
    task that used to deliver it did."""
    request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
    seen: list[str] = []
    monkeypatch.setattr(
        Plugin, "_delivered", lambda self, token, response: seen.append(request.get())
    )
    answer: Promise[CallResponse] = Promise()
    plugin = load_plugin(write_wasm(tmp_path, "calls", proxy_wat("", "")), "calls")
    plugin.http_call = lambda *args: answer
    try:

        def dispatch() -> None:
            request.set("request-1")
            plugin.dispatch_call("edgegw.store", "POST", "/v1/ratelimit", "", [], b"{}", 1.0)

        contextvars.copy_context().run(dispatch)
        # Settled from a callback of another context (a socket reader's).
        asyncio.get_running_loop().call_soon(
            answer.resolve, CallResponse(200), context=contextvars.Context()
        )
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        plugin.close()
    assert seen == ["request-1"]
