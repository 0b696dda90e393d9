"""The filter chain alone: one request's proxy-wasm work without a server or a backend.

    .venv/bin/python bench/chain.py

Runs what the pipeline runs of a route's filters for one request (start, request
headers, response headers, done) in one process, for a filter without stream callbacks
(bench/filters/noop.zig) and for 1 and 4 trivial filters (bench/filters/trivial.zig), and
prints the time per request twice:

- hot: request after request, as a loop in one process runs them;
- cold: with the CPU caches evicted before each request (a 1 MiB copy reads and writes
  2 MiB, this machine's L2 per core). Served, a worker runs tens of microseconds of other
  code (the server, asyncio, the upstream client) between two requests' filter work, so
  a request's filters cost there about what they cost cold: mostly the fetching of every
  piece of code they run, the C functions of CPython and wasmtime they call included.

Both isolate the chain's own cost from the served figures of bench/run.py; the table goes
to docs/benchmarks.md.

    .venv/bin/python bench/chain.py --cpu-time

times each request in the thread's CPU time instead of wall-clock time: on a machine whose
cores are shared (its load well above its core count), wall-clock figures mostly measure
how long the process waited preempted; CPU time does not count that wait.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import cpu_model, edgegw_config, scenarios, write_block

from edgegw.chain import CallResponse, Exchange
from edgegw.config import parse_config
from edgegw.model import GatewayConfig
from edgegw.wasm import WasmRuntime

HOT, COLD = 20_000, 2_000  # requests per round
ROUNDS = 5
EVICT = 1 << 20  # bytes copied before each cold request
CPU_TIME = "--cpu-time" in sys.argv[1:]
CLOCK = time.thread_time if CPU_TIME else time.perf_counter
CHAINS = {"noop-1": "1 filter without stream callbacks", "filters-1": "1 trivial filter",
          "filters-4": "4 trivial filters"}  # fmt: skip


async def request_runner(name: str) -> tuple[WasmRuntime, Callable[[Exchange], None]]:
    scenario = {s.name: s for s in scenarios()}[name]
    return await chain_runner(parse_config(edgegw_config(scenario, 1, 2), env={}))


async def chain_runner(config: GatewayConfig) -> tuple[WasmRuntime, Callable[[Exchange], None]]:
    """The runtime of ``config`` and a function running one request through its first
    route's filters (bench/chain_trees.py runs the bundled filters through it too)."""

    async def no_calls(*_args: object) -> CallResponse:
        raise AssertionError("these filters make no http_call")

    runtime = await WasmRuntime.create(config, no_calls)

    def one(ex: Exchange) -> None:
        chain = runtime.start(ex)
        assert chain is not None
        # These filters never pause: each header phase completes at once (None), unless
        # a filter stopped the request (a reply, e.g. limits.cpu overrun).
        if chain.request_headers(ex, True) is not None:
            raise RuntimeError("a filter paused or stopped the request")
        ex.status, ex.response_headers = 200, [(b"content-length", b"2")]
        if chain.response_headers(ex, False) is not None:
            raise RuntimeError("a filter paused or stopped the response")
        chain.done(ex)

    return runtime, one


HEADERS = ((b"host", b"gw"), (b"user-agent", b"wrk"))


def exchange(route: object, headers: Sequence[tuple[bytes, bytes]] = HEADERS) -> Exchange:
    return Exchange(route=route, method="GET", path="/", scheme="http", authority="gw",  # type: ignore[arg-type]
                    request_headers=list(headers), client=("127.0.0.1", 1),
                    server=("127.0.0.1", 2), connection_id=1, start_ns=0)  # fmt: skip


def timed(one: Callable[[Exchange], None], route: object, count: int, cold: bool) -> float:
    """Mean µs of ``one`` over ``count`` requests, each timed alone."""
    source, target = bytearray(EVICT), bytearray(EVICT)
    total = 0.0
    for _ in range(count):
        ex = exchange(route)
        if cold:
            target[:] = source
        start = CLOCK()
        one(ex)
        total += CLOCK() - start
    return total / count * 1e6


async def measure() -> dict[str, tuple[float, float]]:
    """Per chain, the best (hot, cold) µs per request over rounds in which the chains
    alternate, less the cost of timing an empty request the same way."""
    runners = {name: await request_runner(name) for name in CHAINS}
    routes = {name: runtime.config.routes[0] for name, (runtime, _one) in runners.items()}
    runners_and_empty = {**{n: r[1] for n, r in runners.items()}, "": lambda _ex: None}
    best = {name: [float("inf"), float("inf")] for name in runners_and_empty}
    for _ in range(ROUNDS):
        for name, one in runners_and_empty.items():
            route = routes.get(name, routes["noop-1"])
            timed(one, route, 1000, False)  # warm-up
            best[name][0] = min(best[name][0], timed(one, route, HOT, False))
            best[name][1] = min(best[name][1], timed(one, route, COLD, True))
    for runtime, _one in runners.values():
        await runtime.aclose()
    empty = best.pop("")
    return {name: (hot - empty[0], cold - empty[1]) for name, (hot, cold) in best.items()}


def main() -> None:
    best = asyncio.run(measure())
    rows = [f"| {CHAINS[name]} | {hot:.2f} | {cold:.2f} |" for name, (hot, cold) in best.items()]
    hot4, cold4 = best["filters-4"]
    hot1, cold1 = best["filters-1"]
    text = "\n".join(
        [
            "| chain | hot µs per request | cold µs per request |",
            "|---|---:|---:|",
            *rows,
            f"| each trivial filter after the first | {(hot4 - hot1) / 3:.2f} | "
            f"{(cold4 - cold1) / 3:.2f} |",
            "",
            f"_best of {ROUNDS} alternating rounds of {HOT:,} hot and {COLD:,} cold requests "
            f"(caches evicted by a {EVICT >> 20} MiB copy before each), one process, no "
            f"server or backend, less the cost of timing an empty request"
            f"{'; thread CPU time' if CPU_TIME else ''}; "
            f"{cpu_model()}; {time.ctime()}_",
        ]
    )
    print(text)
    write_block("chain", text, "The filter chain alone (`bench/chain.py`)")


if __name__ == "__main__":
    main()
