"""Balancing cost: one backend URL vs endpoints through edgegw.balance, side by side in one
run (issue 17: at most 2 µs per request more; retries and health checks add nothing while
nothing fails).

The minimal in-process proxy of bench/clients.py forwards GET requests through
``HttpUpstream`` to a backend of each case in turn (CASES): one ``url``; the balancer over
that one endpoint (balancer code, one pool); three endpoints that are one nginx port
(three pools); three endpoints on three nginx processes, round_robin, then with ``retry``
+ ``health_check``, then least_request. The differences between neighbouring cases say
where a cost lies (docs/upstream.md).

Figures are the thread CPU time of the proxy per request (``time.thread_time``: time the
machine's other work takes from the core is not counted, nor nginx's), and wall time for
reference. Each round is a fresh child process per checkout that warms every case up,
then times each once (the order rotates per round); medians of the alternating rounds.

    .venv/bin/python bench/balance.py                          # this checkout, docs table
    .venv/bin/python bench/balance.py --trees /tmp/base,.      # two checkouts, alternated
    BENCH_REQUESTS=5000 BENCH_ROUNDS=3 .venv/bin/python bench/balance.py   # a quicker run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_model, nginx_backend, save_results, write_block

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
WARMUP = max(REQUESTS // 10, 2000)

CASES = {
    "url": "one `url`",
    "one": "the balancer over one endpoint (`limits: {}`)",
    "same3": "three `endpoints` on one nginx port, round_robin",
    "round_robin": "three `endpoints`, round_robin",
    "guarded": "three `endpoints`, round_robin, `retry` + `health_check`",
    "least_request": "three `endpoints`, least_request",
}


def backend(case: str, ports: list[int]) -> Any:
    from clients import POOL

    from edgegw.model import Backend, BackendLimits, Endpoint, HealthCheck, Retry

    urls = [f"http://127.0.0.1:{p}" for p in ports]
    if case == "url":
        return Backend("backend", urls[0], max_connections=POOL)
    if case == "one":  # any limits section makes a backend balanced (Backend.balanced)
        return Backend("backend", urls[0], max_connections=POOL, limits=BackendLimits())
    if case == "same3":  # not valid config (duplicate endpoints), fine for the balancer
        urls = [urls[0]] * 3
    extra: dict[str, object] = {}
    if case == "guarded":
        extra = {"retry": Retry(attempts=2), "health_check": HealthCheck(path="/", interval=1.0)}
    return Backend(
        "backend",
        urls[0],
        max_connections=POOL,
        endpoints=tuple(Endpoint(u) for u in urls),
        lb="least_request" if case == "least_request" else "round_robin",
        **extra,
    )


async def timed(app: Any, requests: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per request of ``clients.drive``."""
    from clients import drive

    cpu = time.thread_time()
    wall = await drive(app, requests)
    return (time.thread_time() - cpu) / requests * 1e6, wall


def child(ports: list[int], first: int) -> None:
    """In a checkout (cwd): warm every case up, time each once from case ``first`` on,
    print {case: [cpu, wall]} as JSON."""
    sys.path.insert(0, os.getcwd())
    import uvloop
    from clients import edgegw_proxy

    from edgegw.upstream import HttpUpstream

    os.sched_setaffinity(0, {0})
    names = list(CASES)
    order = names[first:] + names[:first]

    async def run() -> dict[str, tuple[float, float]]:
        upstreams = {c: HttpUpstream({"backend": backend(c, ports)}) for c in names}
        apps = {c: edgegw_proxy(up) for c, up in upstreams.items()}
        try:
            for case in order:
                await timed(apps[case], WARMUP)  # connections, caches
            return {case: await timed(apps[case], REQUESTS) for case in order}
        finally:
            for up in upstreams.values():
                await up.aclose()

    print(json.dumps(uvloop.run(run())))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trees", default=".", help="checkouts, comma-separated")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child([int(p) for p in args.ports.split(",")], args.child)
        return
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    loads = [os.getloadavg()[0]]
    with ExitStack() as stack:
        ports = [stack.enter_context(nginx_backend()) for _ in range(3)]
        for number in range(ROUNDS):
            for tree in trees:  # alternating, so a slower spell of the machine hits all
                cmd = [sys.executable, __file__, "--child", str(number % len(CASES))]
                cmd += ["--ports", ",".join(map(str, ports))]
                out = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=True)
                for case, (c, w) in json.loads(out.stdout.splitlines()[-1]).items():
                    cpu.setdefault((case, tree), []).append(c)
                    wall.setdefault((case, tree), []).append(w)
                print(f"round {number + 1} {tree}: " + " ".join(
                    f"{case} {cpu[case, tree][-1]:.1f}" for case in CASES), flush=True)  # fmt: skip
            loads.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in cpu.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    load = f"load average {min(loads):.1f}-{max(loads):.1f}"
    for tree in trees:
        print(f"\n{tree}")
        for case in CASES:
            us, delta = med[case, tree], med[case, tree] - med["url", tree]
            rounds = " / ".join(f"{v:.1f}" for v in cpu[case, tree])
            wall_us = med_wall[case, tree]
            print(f"{case:14s} CPU {us:6.2f} µs ({delta:+5.2f})  wall {wall_us:6.2f} µs  {rounds}")
    if len(trees) > 1:
        return  # a comparison of checkouts: printed only
    tree = trees[0]
    base = med["url", tree]
    rows = "".join(
        f"| {label} | {med[case, tree]:.2f} | {med[case, tree] - base:+.2f} |"
        f" {med_wall[case, tree]:.1f} | {' / '.join(f'{v:.1f}' for v in cpu[case, tree])} |\n"
        for case, label in CASES.items()
    )
    text = (
        "| backend | CPU µs per request | vs one url | wall µs | rounds (CPU µs) |\n"
        "|---|---:|---:|---:|---:|\n" + rows + f"\n_The in-process proxy of bench/clients.py "
        f"(32 concurrent tasks, core 0, uvloop) to nginx on core 1; thread CPU time of the "
        f"proxy per request, {REQUESTS:,} GET requests per case and round, median of "
        f"{ROUNDS} rounds (a fresh process each, cases in rotating order, after a warm-up); "
        f"{load}; {cpu_model()}; {time.ctime()}_"
    )
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    save_results(
        "balance",
        stamp,
        {
            "when": stamp,
            "requests": REQUESTS,
            "rounds": ROUNDS,
            "load": loads,
            "cpu": cpu_model(),
            "cpu_us_per_request": {c: [round(v, 2) for v in cpu[c, tree]] for c in CASES},
            "wall_us_per_request": {c: [round(v, 2) for v in wall[c, tree]] for c in CASES},
        },
    )
    write_block("balance", text, "Balancing over endpoints (`bench/balance.py`)")


if __name__ == "__main__":
    main()
