"""Fan-out aggregation: three backends answering in 50 ms each, under a steady load.

    .venv/bin/python bench/aggregate.py

Calls run concurrently, so an aggregated request should take ~50 ms, not 150 ms. The
gateway's own overhead is measured with the same three backends answering at once.
Backends are aiohttp servers on the load core; edgegw is pinned to the server core.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import edgegw_with, free_port, write_block, wrk

CONNECTIONS = 8  # steady, bounded: well under the backends' capacity
DURATION = 10.0


@contextmanager
def backends(delay: float) -> Iterator[list[int]]:
    """Three JSON backends in one thread's event loop, each sleeping ``delay``."""
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []
    ports = [free_port() for _ in range(3)]

    async def start() -> None:
        for i, port in enumerate(ports):

            async def answer(_r: web.Request, i: int = i) -> web.Response:
                await asyncio.sleep(delay)
                return web.json_response({f"part{i}": {"id": i, "items": list(range(5))}})

            app = web.Application()
            app.router.add_get("/{tail:.*}", answer)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield ports
    finally:
        for runner in runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def config(port: int, ports: list[int]) -> str:
    names = [f"b{i}" for i in range(3)]
    pairs = zip(names, ports, strict=True)
    backends_yaml = "".join(f"\n  {n}: {{url: 'http://127.0.0.1:{p}'}}" for n, p in pairs)
    targets = "".join(f"\n        - {{backend: {n}, path: '/x/{{id}}'}}" for n in names)
    return f"""version: 1
listen: 127.0.0.1:{port}
access_log: false
backends:{backends_yaml}
routes:
  - name: agg
    match: {{path: "/agg/{{id}}"}}
    aggregate:
      timeout: 1s
      backends:{targets}
"""


def main() -> None:
    rows = []
    for delay in (0.05, 0.0):
        with backends(delay) as ports:
            port = free_port()
            with edgegw_with(config(port, ports), port):
                url = f"http://127.0.0.1:{port}/agg/42"
                wrk(url, duration=2, connections=CONNECTIONS)
                rows.append((delay, wrk(url, duration=DURATION, connections=CONNECTIONS)))
    slow, fast = rows[0][1], rows[1][1]
    lines = [
        "| backends answer in | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {d * 1000:.0f} ms (x3) | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |"
            for d, r in rows
        ),
        "",
        f"Three 50 ms backends: p50 {slow.p50_ms:.1f} ms (sequential calls would take"
        f" 150 ms; target under 55 ms). Gateway overhead per aggregated request (instant"
        f" backends, {CONNECTIONS} connections): {1000 / fast.rps * CONNECTIONS:.2f} ms of"
        f" latency at {fast.rps:,.0f} req/s, p50 {fast.p50_ms:.2f} ms.",
        "",
        f"{DURATION:.0f} s per run, wrk -t1 -c{CONNECTIONS}; {time.ctime()}",
    ]
    text = "\n".join(lines)
    print(text)
    write_block("aggregate", text, "Fan-out aggregation (`bench/aggregate.py`)")


if __name__ == "__main__":
    main()
