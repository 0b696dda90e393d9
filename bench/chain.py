"""The filter chain alone: one request's proxy-wasm work without a server or a backend.

    .venv/bin/python bench/chain.py

Runs the request-headers, response-headers and end-of-stream phases of 1 and of 4
trivial filters (bench/filters/trivial.zig) in one process, as the pipeline does, and
prints the time per request and per filter. It isolates the chain's own cost from the
served figures of bench/run.py; the table goes to docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import cpu_model, edgegw_config, scenarios, write_block

from edgegw.chain import CallResponse, Exchange
from edgegw.config import parse_config
from edgegw.wasm import WasmRuntime

N = 20_000
ROUNDS = 5


def _run(pending: Awaitable[object] | None) -> None:
    # The trivial filter never pauses: each header phase completes at once (None).
    if pending is not None:
        raise RuntimeError("a trivial filter paused")


async def request_runner(filters: int) -> tuple[WasmRuntime, Callable[[], None]]:
    scenario = {s.name: s for s in scenarios()}[f"filters-{filters}"]
    config = parse_config(edgegw_config(scenario, 1, 2), env={})

    async def no_calls(*_args: object) -> CallResponse:
        raise AssertionError("the trivial filter makes no http_call")

    runtime = await WasmRuntime.create(config, no_calls)
    route = config.routes[0]

    def one() -> None:
        ex = Exchange(route=route, method="GET", path="/", scheme="http", authority="gw",
                      request_headers=[(b"host", b"gw"), (b"user-agent", b"wrk")],
                      client=("127.0.0.1", 1), server=("127.0.0.1", 2), connection_id=1,
                      start_ns=0)  # fmt: skip
        chain = runtime.start(ex)
        assert chain is not None
        _run(chain.request_headers(ex, True))
        ex.status, ex.response_headers = 200, [(b"content-length", b"2")]
        _run(chain.response_headers(ex, False))
        chain.done(ex)
        assert (b"x-trivial", b"trivial-AAAA") in ex.response_headers

    return runtime, one


async def measure() -> dict[int, float]:
    """Best time per request of each chain, the chains alternating round by round."""
    runners = {n: await request_runner(n) for n in (1, 4)}
    best = {n: float("inf") for n in runners}
    for _ in range(ROUNDS):
        for n, (_runtime, one) in runners.items():
            for _ in range(1000):
                one()
            start = time.perf_counter()
            for _ in range(N):
                one()
            best[n] = min(best[n], (time.perf_counter() - start) / N * 1e6)
    for runtime, _one in runners.values():
        await runtime.aclose()
    return best


def main() -> None:
    best = asyncio.run(measure())
    one, four = best[1], best[4]
    text = "\n".join(
        [
            "| chain of trivial filters | µs per request | µs per filter |",
            "|---|---:|---:|",
            f"| 1 filter | {one:.1f} | {one:.1f} |",
            f"| 4 filters | {four:.1f} | {four / 4:.1f} |",
            f"| each filter after the first | | {(four - one) / 3:.1f} |",
            "",
            f"_best of {ROUNDS} alternating rounds of {N:,} requests, one process, "
            f"no server or backend; "
            f"{cpu_model()}; {time.ctime()}_",
        ]
    )
    print(text)
    write_block("chain", text, "The filter chain alone (`bench/chain.py`)")


if __name__ == "__main__":
    main()
