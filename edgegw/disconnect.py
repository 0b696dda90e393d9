"""Noticing a client that leaves while its request waits on the backend or streams a
response, so that the backend exchange is aborted (docs/proxying.md, status 499).

The ASGI servers report a client leaving only through ``receive()``
(``http.disconnect``) and drop what is sent after it, so something must be reading while
a request waits on its backend or streams a response; otherwise a backend streams to
nobody, or a pool slot stays taken until the backend's timeout. Reading costs a task per
request, and most requests end within a millisecond: so only a request still running
after ``WATCH_AFTER`` seconds gets one. A request costs two dict operations; one timer
per pipeline (``Watcher._sweep``) finds the long ones.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from edgegw.types import Receive

# The status the access log and metrics give a request whose client left first (nginx's
# and Envoy's convention; no response reaches anyone).
CLIENT_GONE = 499
# A request still waiting on its backend, or still streaming a response, after this many
# seconds starts listening for its client leaving.
WATCH_AFTER = 0.1


class Watched(Protocol):
    """What the watcher reads and sets on a request (edgegw.pipeline's counters)."""

    reading: bool  # the pipeline is reading the request body: it sees a disconnect itself
    gone: bool  # set here: the client left before the response ended
    ended: bool  # the response's last bytes went to the server
    watcher: asyncio.Task[None] | None  # the task waiting for the client to leave


class Watcher:
    """The running requests of one pipeline, watched once they run long."""

    def __init__(self) -> None:
        # task -> (the sweep generation it started in, its receive, its counters)
        self._open: dict[asyncio.Task[None], tuple[int, Receive, Watched]] = {}
        self._generation = 0
        self._sweeper: asyncio.TimerHandle | None = None

    def add(self, task: asyncio.Task[None], receive: Receive, counters: Watched) -> None:
        """``task`` serves a request from now on."""
        self._open[task] = (self._generation, receive, counters)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(WATCH_AFTER, self._sweep)

    def remove(self, task: asyncio.Task[None], counters: Watched) -> None:
        """``task``'s request is over: stop watching its client."""
        del self._open[task]
        if counters.watcher is not None:
            counters.watcher.cancel()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        """Every ``WATCH_AFTER`` while requests run: a request already open at the previous
        sweep (so for at least that long) gets a task waiting for its client to leave.
        None is watched while the pipeline reads its body (two readers would steal each
        other's messages; the body reader sees the disconnect itself)."""
        self._generation += 1
        for task, (generation, receive, counters) in self._open.items():
            if generation < self._generation - 1 and counters.watcher is None:
                if not counters.reading:
                    counters.watcher = asyncio.ensure_future(_watch(receive, counters, task))
        self._sweeper = None
        if self._open:
            self._sweeper = asyncio.get_running_loop().call_later(WATCH_AFTER, self._sweep)


async def _watch(receive: Receive, counters: Watched, task: asyncio.Task[None]) -> None:
    """Wait for the client to leave, then cancel its request: the backend exchange is
    aborted on the way out."""
    # The first message may be the (empty) body nobody read: only a disconnect counts.
    while (await receive())["type"] != "http.disconnect":
        pass
    # A disconnect once the last bytes went out (the client closing right after a complete
    # response) leaves nothing to abort, and the response was delivered: not a 499.
    if not counters.ended:
        counters.gone = True
        task.cancel()
