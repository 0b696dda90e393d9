"""The deadline of paused streams: one sweep timer for every pause of a loop instead of a
timer per pause. A filter that pauses per request (rate_limit's global mode: an
http_call to the store per request) would otherwise add a ``call_later`` and its
cancellation to each request, and a heap of cancelled 30 s timers to the loop
(docs/benchmarks.md, the rate_limit filter alone).

A pause that outlives its timeout fails within an eighth of it after (the sweep runs
every ``timeout / 8``): the timeout is a last resort for a filter that never resumes,
not a precise deadline.
"""

from __future__ import annotations

import asyncio

SWEEPS_PER_TIMEOUT = 8


class PauseWatch:
    """Fails each watched future with ``TimeoutError`` once its deadline passed."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: dict[asyncio.Future[None], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._period = 0.0

    def add(
        self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], timeout: float
    ) -> None:
        if loop is not self._loop:  # another loop (a test's, a new worker's): start over
            if self._timer is not None:
                self._timer.cancel()
            self._loop, self._deadlines, self._timer = loop, {}, None
        self._deadlines[fut] = loop.time() + timeout
        period = timeout / SWEEPS_PER_TIMEOUT
        if self._timer is None or period < self._period:
            if self._timer is not None:
                self._timer.cancel()
            self._period = period
            self._timer = loop.call_later(period, self._sweep)

    def discard(self, fut: asyncio.Future[None]) -> None:
        self._deadlines.pop(fut, None)

    def _sweep(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        expired = [fut for fut, deadline in self._deadlines.items() if deadline <= now]
        for fut in expired:
            del self._deadlines[fut]
            if not fut.done():
                fut.set_exception(TimeoutError())
        if self._deadlines:
            self._timer = loop.call_later(self._period, self._sweep)


WATCH = PauseWatch()
