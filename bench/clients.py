"""The upstream client, edgegw's vs aiohttp's, side by side in one run (docs/upstream.md).

Both are driven in process (no ASGI server) on core 0 under uvloop: 32 concurrent tasks
each sending GET requests to one nginx backend and reading the whole response. Prints µs
per request (best of 3 rounds) and writes the table into docs/benchmarks.md.

    .venv/bin/python bench/clients.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

from edgegw.model import Backend
from edgegw.upstream import HttpUpstream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_model, nginx_backend, write_block

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
TASKS = 32
HEADERS = [(b"user-agent", b"bench"), (b"accept", b"*/*")]
STR_HEADERS = [(k.decode(), v.decode()) for k, v in HEADERS]


async def per_request_us(one: Callable[[], Awaitable[None]]) -> float:
    async def task() -> None:
        for _ in range(REQUESTS // TASKS):
            await one()

    await asyncio.gather(*(task() for _ in range(TASKS)))  # warm-up: pools, caches
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(TASKS)))
        best = min(best, (time.perf_counter() - start) / REQUESTS * 1e6)
    return best


async def measure(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )
    upstream = HttpUpstream({"b": Backend(name="b", url=url)})

    async def with_aiohttp() -> None:
        async with session.get(
            url + "/", headers=[(k.decode(), v.decode()) for k, v in HEADERS]
        ) as r:
            await r.read()

    async def with_edgegw() -> None:
        resp = await upstream.request("b", "GET", "/", HEADERS, None)
        try:
            async for _chunk, _last in resp.chunks():
                pass
        finally:
            resp.release()

    try:
        return {
            "aiohttp": await per_request_us(with_aiohttp),
            "edgegw": await per_request_us(with_edgegw),
        }
    finally:
        await session.close()
        await upstream.aclose()


def main() -> None:
    os.sched_setaffinity(0, {0})
    with nginx_backend() as port:
        result = uvloop.run(measure(port))
    text = (
        "| client | µs per request | ratio |\n|---|---:|---:|\n"
        f"| aiohttp `ClientSession` | {result['aiohttp']:.1f} | 1.00x |\n"
        f"| edgegw `HttpUpstream` | {result['edgegw']:.1f} | "
        f"{result['aiohttp'] / result['edgegw']:.2f}x faster |\n\n"
        f"{REQUESTS:,} GET requests by {TASKS} tasks, best of 3 rounds, in process on one core; "
        f"{cpu_model()}; {time.ctime()}"
    )
    print(text)
    write_block("clients", text, "Upstream client (`bench/clients.py`)")


if __name__ == "__main__":
    main()
