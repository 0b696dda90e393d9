"""One request's filter chain alone, in several checkouts of edgegw, alternated: thread CPU
µs per request (docs/benchmarks.md, "The filter path against 92766f7").

    .venv/bin/python bench/chain_trees.py --trees /tmp/base,. filters-1 ab_flags
    .venv/bin/python bench/chain_trees.py --cold --trees /tmp/base,. noop-1 geo

A chain is one of bench/chain.py's (noop-1, filters-1, filters-4: the bench filters) or a
bundled filter alone with bench/filters.py's config and request headers (jwt_auth,
rate_limit, ab_flags, geo; ``--wasm DIR`` loads their .wasm from DIR, by default this
tree's filters/dist). Each round runs a child process per chain and checkout (its cwd
and PYTHONPATH the checkout, so it imports that edgegw, with its own built _native);
each child times 3 batches of ``--requests`` requests after 1,000 of warm-up, and the
median of all batches is reported. ``--cold`` evicts the CPU caches before each request
(bench/chain.py's cold mode) and times each request alone. Thread CPU time, not wall
time: the machine is shared (a preempted child's wait is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
BUNDLED = ("jwt_auth", "rate_limit", "ab_flags", "geo")
EVICT = 1 << 20  # bytes copied before each cold request (bench/chain.py)


async def _runner(name: str, wasm_dir: Path) -> tuple[Any, Callable[[], None]]:
    """The runtime of chain ``name`` and a function running one request through it."""
    sys.path.insert(0, str(BENCH))
    from chain import HEADERS, chain_runner, exchange, request_runner
    from harness import Filter, Scenario, edgegw_config

    from edgegw.config import parse_config
    from filters import CONFIGS, TOKEN

    if name not in BUNDLED:
        runtime, run = await request_runner(name)
        route = runtime.config.routes[0]
        return runtime, lambda: run(exchange(route))
    spec = Filter(name, wasm_dir / f"{name}.wasm", json.dumps(CONFIGS[name]))
    config = parse_config(edgegw_config(Scenario(name, name, filters=(spec,)), 1, 2), env={})
    runtime, run = await chain_runner(config)
    route = runtime.config.routes[0]
    token = f"Bearer {TOKEN}".encode()
    headers = [*HEADERS, (b"authorization", token), (b"x-country-code", b"DE")]
    return runtime, lambda: run(exchange(route, headers))


def child(name: str, requests: int, cold: bool, wasm_dir: Path) -> None:
    """In a checkout: print the µs per request of 3 batches, one per line."""
    os.sched_setaffinity(0, {0})

    async def main() -> None:
        runtime, one = await _runner(name, wasm_dir)
        for _ in range(1000):
            one()
        source, target = bytearray(EVICT), bytearray(EVICT)
        for _ in range(3):
            total = 0
            if cold:
                for _ in range(requests):
                    target[:] = source
                    start = time.thread_time_ns()
                    one()
                    total += time.thread_time_ns() - start
            else:
                start = time.thread_time_ns()
                for _ in range(requests):
                    one()
                total = time.thread_time_ns() - start
            print(f"{total / requests / 1000:.3f}", flush=True)
        await runtime.aclose()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("chains", nargs="+")
    parser.add_argument("--trees", default=".", help="checkouts, comma-separated")
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=0, help="per batch")
    parser.add_argument("--wasm", default=str(BENCH.parent / "filters" / "dist"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    requests = args.requests or (2000 if args.cold else 10000)
    if args.child:
        child(args.chains[0], requests, args.cold, Path(args.wasm))
        return
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    results: dict[tuple[str, str], list[float]] = {}
    for number in range(1, args.rounds + 1):
        for name in args.chains:
            for tree in trees:
                cmd = [sys.executable, __file__, "--child", name, "--requests", str(requests),
                       "--wasm", args.wasm, *(["--cold"] if args.cold else [])]  # fmt: skip
                env = {**os.environ, "PYTHONPATH": tree}
                out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
                if out.returncode:  # a limits.cpu overrun under load: this round is lost
                    print(f"round {number} {name} {tree}: failed", out.stderr[-300:])
                    continue
                results.setdefault((name, tree), []).extend(map(float, out.stdout.split()))
    kind = "cold" if args.cold else "hot"
    for (name, tree), values in results.items():
        print(f"{name:10s} {kind} median {statistics.median(values):6.2f} µs  "
              f"min {min(values):6.2f}  ({len(values)} batches)  {tree}")  # fmt: skip


if __name__ == "__main__":
    main()
