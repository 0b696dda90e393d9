"""The deadline of paused streams (edgegw/wasm/pause.py): one sweep for all of them."""

from __future__ import annotations

import asyncio

from edgegw.wasm.pause import PauseWatch


async def test_a_pause_past_its_deadline_fails_and_a_discarded_one_is_left_alone() -> None:
    watch = PauseWatch()
    loop = asyncio.get_running_loop()
    stalled, resumed, later = loop.create_future(), loop.create_future(), loop.create_future()
    for fut in (stalled, resumed):
        watch.add(loop, fut, 0.02)
    watch.add(loop, later, 60.0)  # a longer timeout keeps the shorter sweep period
    watch.discard(resumed)
    await asyncio.wait_for(asyncio.wait([stalled]), 5)
    assert isinstance(stalled.exception(), TimeoutError)
    assert not resumed.done() and not later.done()
    watch.discard(later)


def test_another_loop_starts_over() -> None:
    watch = PauseWatch()

    async def stall() -> BaseException | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        watch.add(loop, fut, 0.02)
        await asyncio.wait([fut], timeout=5)
        return fut.exception()

    # The first loop ends with its sweep timer pending; the second still gets its own.
    first = asyncio.new_event_loop()
    fut = first.create_future()
    first.run_until_complete(asyncio.sleep(0))
    watch.add(first, fut, 30.0)
    first.close()
    assert isinstance(asyncio.run(stall()), TimeoutError)
