"""The upstream client, edgegw's vs aiohttp's, side by side in one run (docs/upstream.md).

A minimal reverse proxy (an ASGI app, called in process: no server, no client socket)
forwards GET requests to one nginx backend through each client in turn: aiohttp's
``ClientSession`` (reading the whole body) and edgegw's ``HttpUpstream`` (streaming the
body chunk by chunk, then releasing the connection). The proxy runs on core 0 under
uvloop, 32 concurrent tasks; nginx runs on core 1. After a warm-up, the two clients
alternate over 3 rounds of BENCH_REQUESTS requests each; each figure is the best round.
Prints µs per request and the ratio, writes the table into docs/benchmarks.md and the raw
figures to bench/results/clients-<stamp>.json.

    .venv/bin/python bench/clients.py
    BENCH_REQUESTS=5000 .venv/bin/python bench/clients.py    # a quicker run
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from yarl import URL

from edgegw.model import Backend
from edgegw.upstream import HttpUpstream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_model, nginx_backend, save_results, write_block

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
WARMUP = max(REQUESTS // 10, 1000)
TASKS = 32
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
POOL = 64  # connections allowed to the backend, in both clients
BODY = b'{"ok":true}'  # what harness.nginx_backend answers

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Message, Receive, Send], Awaitable[None]]

# What a server would hand the proxy for `GET /bench` from a client like wrk.
SCOPE: Message = {
    "type": "http",
    "http_version": "1.1",
    "method": "GET",
    "path": "/bench",
    "raw_path": b"/bench",
    "query_string": b"",
    "headers": [(b"host", b"gateway.test"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
}
REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


def aiohttp_proxy(session: aiohttp.ClientSession, origin: str) -> App:
    """The proxy as edgegw had it before: headers as str, the URL already encoded, no
    headers of aiohttp's own, redirects passed on."""

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        headers = [
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"] if n != b"host"
        ]
        url = URL(origin + scope["raw_path"].decode("latin-1"), encoded=True)
        async with session.request(
            scope["method"], url, headers=headers, allow_redirects=False
        ) as resp:
            body = await resp.read()
            await send(
                {"type": "http.response.start", "status": resp.status, "headers": resp.raw_headers}
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


def edgegw_proxy(upstream: HttpUpstream, backends: tuple[str, ...] = ("backend",)) -> App:
    """The same proxy on edgegw's client: the body is streamed as it comes. With several
    ``backends`` the requests go to each in turn (as routes to several services would)."""
    turn = itertools.cycle(backends)

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        headers = [(n, v) for n, v in scope["headers"] if n != b"host"]
        resp = await upstream.request(next(turn), scope["method"], scope["path"], headers, None)
        try:
            await send(
                {"type": "http.response.start", "status": resp.status, "headers": resp.headers}
            )
            last = False
            async for chunk, last in resp.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if not last:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            resp.release()

    return app


async def drive(app: App, requests: int) -> float:
    """µs per request with ``TASKS`` tasks calling ``app``; checks every response."""
    statuses: list[int] = []
    received = 0

    async def receive() -> Message:
        return REQUEST

    async def send(message: Message) -> None:
        nonlocal received
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        else:
            received += len(message["body"])

    async def task(n: int) -> None:
        for _ in range(n):
            await app(SCOPE, receive, send)

    share, rest = divmod(requests, TASKS)
    start = time.perf_counter()
    await asyncio.gather(*(task(share + (i < rest)) for i in range(TASKS)))
    elapsed = time.perf_counter() - start
    if statuses.count(200) != requests or received != requests * len(BODY):
        raise RuntimeError(f"bad responses: {len(statuses)} heads, {received} body bytes")
    return elapsed / requests * 1e6


async def measure(port: int) -> dict[str, list[float]]:
    origin = f"http://127.0.0.1:{port}"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POOL),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
    )
    upstream = HttpUpstream({"backend": Backend("backend", origin, max_connections=POOL)})
    apps = {"aiohttp": aiohttp_proxy(session, origin), "edgegw": edgegw_proxy(upstream)}
    rounds: dict[str, list[float]] = {name: [] for name in apps}
    try:
        for app in apps.values():
            await drive(app, WARMUP)  # connections, caches
        for _ in range(ROUNDS):  # alternating, so a slower spell of the machine hits both
            for name, app in apps.items():
                rounds[name].append(await drive(app, REQUESTS))
    finally:
        await session.close()
        await upstream.aclose()
    return rounds


def main() -> None:
    os.sched_setaffinity(0, {0})
    with nginx_backend() as port:
        rounds = uvloop.run(measure(port))
    best = {name: min(values) for name, values in rounds.items()}
    ratio = best["aiohttp"] / best["edgegw"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = (
        "| upstream client in a minimal proxy | µs per request | rounds (µs) |\n"
        "|---|---:|---:|\n"
        + "".join(
            f"| {label} | {best[name]:.1f} | {' / '.join(f'{v:.1f}' for v in rounds[name])} |\n"
            for name, label in (
                ("aiohttp", f"aiohttp {version('aiohttp')} `ClientSession`"),
                ("edgegw", "edgegw `HttpUpstream` (edgegw/http1.py)"),
            )
        )
        + f"\nedgegw's client: **{ratio:.2f}x** less time per request than aiohttp's.\n\n"
        f"_A minimal ASGI proxy called in process (no server), {TASKS} concurrent tasks, "
        f"{REQUESTS:,} GET requests per round, best of {ROUNDS} alternating rounds after a "
        f"warm-up; proxy on core 0 under uvloop, nginx on core 1; {cpu_model()}; "
        f"{time.ctime()}_"
    )
    print(text)
    save_results(
        "clients",
        stamp,
        {
            "when": stamp,
            "requests": REQUESTS,
            "warmup": WARMUP,
            "tasks": TASKS,
            "rounds": ROUNDS,
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "versions": {p: version(p) for p in ("aiohttp", "httptools", "uvloop")},
            "us_per_request": {
                n: {"best": round(best[n], 2), "rounds": [round(v, 2) for v in rounds[n]]}
                for n in rounds
            },
            "ratio_aiohttp_over_edgegw": round(ratio, 2),
        },
    )
    write_block("clients", text, "Upstream client (`bench/clients.py`)")


if __name__ == "__main__":
    main()
