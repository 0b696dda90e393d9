"""A one-shot answer handed to its one subscriber by a plain call: no task, no future's
``call_soon`` per step. The rate-limit hot path is a chain of them (the Redis batch's
reply → each request's decision → the store API's answer → the filter's
``on_http_call_response``), so a batch's replies reach every paused filter within the
callback that read them (docs/store.md, "One call per request, no hop per step").

Still awaitable, for callers that await an ``HttpCall`` or a ``Store`` method.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_PENDING: Any = object()
_TASKS: set[asyncio.Future[Any]] = set()  # asyncio keeps only weak references to tasks


class Promise(Generic[T]):
    """Settled once (``resolve`` / ``fail``; later calls are ignored); ``then`` gives it
    its one subscriber."""

    __slots__ = ("_error", "_then", "_value")

    def __init__(self) -> None:
        self._value: T = _PENDING
        self._error: BaseException | None = None
        self._then: Callable[[Promise[T]], None] | None = None

    @classmethod
    def resolved(cls, value: T) -> Promise[T]:
        promise: Promise[T] = cls()
        promise._value = value
        return promise

    @property
    def done(self) -> bool:
        return self._value is not _PENDING or self._error is not None

    @property
    def error(self) -> BaseException | None:
        return self._error

    def result(self) -> T:
        """The value (raises the error; RuntimeError while pending)."""
        if self._error is not None:
            raise self._error
        if self._value is _PENDING:
            raise RuntimeError("promise not settled")
        return self._value

    def resolve(self, value: T) -> None:
        if not self.done:
            self._value = value
            self._fire()

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self._error = exc
            self._fire()

    def then(self, callback: Callable[[Promise[T]], None]) -> None:
        """``callback(self)`` once settled: within ``resolve``/``fail`` when subscribed
        before, on the next loop turn when already settled (never inside the caller,
        which may be a filter's hostcall that must not be re-entered)."""
        if self._then is not None:
            raise RuntimeError("a promise has one subscriber")
        self._then = callback
        if self.done:
            asyncio.get_running_loop().call_soon(self._fire)

    def _fire(self) -> None:
        callback, self._then = self._then, None
        if callback is None:
            return
        try:
            callback(self)
        except Exception as exc:  # a subscriber's bug must not break the settling caller
            asyncio.get_running_loop().call_exception_handler(
                {"message": "promise subscriber failed", "exception": exc}
            )

    def __await__(self) -> Generator[Any, None, T]:
        if not self.done:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.then(lambda _p: _wake(fut, None))
            yield from fut
        return self.result()


def _wake(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():  # not cancelled meanwhile
        fut.set_result(value)


def promise_of(awaitable: Awaitable[T]) -> Promise[T]:
    """``awaitable`` as a ``Promise``: itself if it is one, else run as a task (a
    coroutine: a store or cluster without the callback path)."""
    if isinstance(awaitable, Promise):
        return awaitable
    promise: Promise[T] = Promise()
    task = asyncio.ensure_future(awaitable)
    _TASKS.add(task)

    def settled(done: asyncio.Future[T]) -> None:
        _TASKS.discard(done)
        if done.cancelled():
            promise.fail(asyncio.CancelledError())
        elif (exc := done.exception()) is not None:
            promise.fail(exc)
        else:
            promise.resolve(done.result())

    task.add_done_callback(settled)
    return promise
