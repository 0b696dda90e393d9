"""Balancing cost: one backend URL vs endpoints through edgegw.balance, side by side in one
run (issue 17: at most 2 µs per request more; retries and health checks add nothing while
nothing fails).

The minimal in-process proxy of bench/clients.py forwards GET requests through
``HttpUpstream`` to a backend of each case in turn (CASES): one ``url``; the balancer over
that one endpoint (balancer code, one pool); three endpoints that are one nginx port
(three pools); three single-``url`` backends on three nginx processes, the requests in
turn (that topology without the balancer: the reference for what follows); three
endpoints on those three nginx processes, round_robin, then with ``retry``,
with ``retry`` + ``health_check``, then least_request. The differences between
neighbouring cases say where a cost lies (docs/upstream.md).

Figures are the thread CPU time of the proxy per request (``time.thread_time``: time the
machine's other work takes from the core is not counted, nor nginx's), wall time for
reference, and with ``--callgrind`` user-space instructions per request (repeatable under
load). Each round is a fresh child process per checkout that warms every case up, then
times the cases interleaved in INNER turns (the order rotating); medians of the
alternating rounds, and of each round's difference to one ``url``.

    .venv/bin/python bench/balance.py                          # this checkout, docs table
    .venv/bin/python bench/balance.py --trees /tmp/base,.      # two checkouts, alternated
    BENCH_REQUESTS=5000 BENCH_ROUNDS=3 .venv/bin/python bench/balance.py   # a quicker run
    .venv/bin/python bench/balance.py --callgrind      # + instructions per request
    BENCH_CASES=one,round_robin BENCH_ROUNDS=1 ...    # some cases only (not for the docs)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_model, nginx_backend, save_results, write_block

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
WARMUP = max(REQUESTS // 10, 2000)
CG_REQUESTS = int(os.environ.get("BENCH_CG_REQUESTS", "3000"))  # under callgrind
INNER = 4  # each case is timed in this many turns per process, the cases interleaved

CASES = {
    "url": "one `url`",
    "url3": "one `url`, an nginx of three worker processes (reuseport)",
    "urls": "three backends of one `url` each (the three nginx), requests in turn",
    "one": "the balancer over one endpoint (`limits: {}`)",
    "same3": "three `endpoints` on one nginx port, round_robin",
    "round_robin": "three `endpoints`, round_robin",
    "retry": "three `endpoints`, round_robin, `retry`",
    "guarded": "three `endpoints`, round_robin, `retry` + `health_check`",
    "least_request": "three `endpoints`, least_request",
}
if os.environ.get("BENCH_CASES"):  # a subset, "url,one" (url is the reference)
    CASES = {c: CASES[c] for c in ["url", *os.environ["BENCH_CASES"].split(",")]}
# What each case is compared with: the same backend processes without the balancer. Three
# nginx processes cost more than one whatever sends to them (the kernel wakes each on
# loopback, in the sender's write: docs/upstream.md, cost), so the cases on them are
# compared with single-`url` backends on them, requests in turn (`urls`).
THREE = {"round_robin", "retry", "guarded", "least_request"}


def reference(case: str) -> str:
    return "urls" if case in THREE and "urls" in CASES else "url"


def backends(case: str, ports: list[int]) -> dict[str, Any]:
    """The case's backends by name: ``backend``, or for ``urls`` one per nginx process."""
    from clients import POOL

    from edgegw.model import Backend

    if case != "urls":
        return {"backend": backend(case, ports)}
    urls = {f"backend{i}": f"http://127.0.0.1:{ports[i]}" for i in range(3)}
    return {n: Backend(n, url, max_connections=POOL) for n, url in urls.items()}


def backend(case: str, ports: list[int]) -> Any:
    from clients import POOL

    from edgegw.model import Backend, BackendLimits, Endpoint, HealthCheck, Retry

    urls = [f"http://127.0.0.1:{p}" for p in ports]
    if case == "url":
        return Backend("backend", urls[0], max_connections=POOL)
    if case == "url3":  # three servers behind one address: round_robin's topology
        return Backend("backend", urls[3], max_connections=POOL)
    if case == "one":  # any limits section makes a backend balanced (Backend.balanced)
        return Backend("backend", urls[0], max_connections=POOL, limits=BackendLimits())
    urls = urls[:3]  # the three one-worker nginx
    if case == "same3":  # not valid config (duplicate endpoints), fine for the balancer
        urls = [urls[0]] * 3
    guarded = case == "guarded"
    return Backend(
        "backend",
        urls[0],
        max_connections=POOL,
        endpoints=tuple(Endpoint(u) for u in urls),
        lb="least_request" if case == "least_request" else "round_robin",
        retry=Retry(attempts=2) if guarded or case == "retry" else None,
        health_check=HealthCheck(path="/", interval=1.0) if guarded else None,
    )


async def timed(app: Any, requests: int) -> tuple[float, float]:
    """(CPU µs, wall µs) spent in ``requests`` requests of ``clients.drive``."""
    from clients import drive

    cpu = time.thread_time()
    wall = await drive(app, requests) * requests
    return (time.thread_time() - cpu) * 1e6, wall


def child(ports: list[int], first: int, callgrind: bool) -> None:
    """In a checkout (cwd): warm every case up, then INNER times each case in turn (the
    order rotated, starting at case ``first``), REQUESTS in all per case; print
    {case: [CPU µs, wall µs] per request} as JSON. Under callgrind, each case's timed
    requests are one dump (``--dump-before=getppid``: os.getppid marks the phases)."""
    sys.path.insert(0, os.getcwd())
    import uvloop
    from clients import edgegw_proxy

    from edgegw.upstream import HttpUpstream

    os.sched_setaffinity(0, {0})
    names = list(CASES)
    order = names[first:] + names[:first]
    inner = 1 if callgrind else INNER
    share = REQUESTS // inner

    async def run() -> dict[str, tuple[float, float]]:
        parts = {c: backends(c, ports) for c in names}
        upstreams = {c: HttpUpstream(parts[c]) for c in names}
        apps = {c: edgegw_proxy(upstreams[c], tuple(parts[c])) for c in names}
        totals = {case: [0.0, 0.0] for case in names}
        try:
            for case in order:
                await timed(apps[case], WARMUP)  # connections, caches
            for turn in range(inner):
                for case in order[turn % len(order) :] + order[: turn % len(order)]:
                    os.getppid()  # a callgrind dump: what came before
                    cpu, wall = await timed(apps[case], share)
                    os.getppid()  # a callgrind dump: this case
                    totals[case][0] += cpu
                    totals[case][1] += wall
        finally:
            for up in upstreams.values():
                await up.aclose()
        return {case: (cpu / REQUESTS, wall / REQUESTS) for case, (cpu, wall) in totals.items()}

    print(json.dumps({"order": order, "us": uvloop.run(run())}))


def instructions(tree: str, ports: list[int]) -> dict[str, float]:
    """Instructions per request of each case (user space, callgrind; repeatable under
    load, blind to time in the kernel)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", "--dump-before=getppid", "--dump-instr=no"]
        cmd += [f"--callgrind-out-file={out}", sys.executable, __file__, "--child", "0"]
        cmd += ["--ports", ",".join(map(str, ports)), "--callgrind"]
        env = dict(os.environ, BENCH_REQUESTS=str(CG_REQUESTS))
        done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=True, env=env)
        order = json.loads(done.stdout.splitlines()[-1])["order"]
        counts = []
        for dump in sorted(Path(tmp).glob("cg.out.*"), key=lambda f: int(f.name.split(".")[-1])):
            text = dump.read_text()
            counts.append(int(re.search(r"^summary: (\d+)", text, re.M).group(1)))  # type: ignore[union-attr]
        # Dumps: the start and warm-up, then per case: its requests, the gap to the next.
        return {case: counts[2 * i + 1] / CG_REQUESTS for i, case in enumerate(order)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trees", default=".", help="checkouts, comma-separated")
    parser.add_argument("--callgrind", action="store_true", help="instruction counts too")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child([int(p) for p in args.ports.split(",")], args.child, args.callgrind)
        return
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    delta: dict[tuple[str, str], list[float]] = {}  # case - its reference, in one process
    instr: dict[tuple[str, str], float] = {}
    loads = [os.getloadavg()[0]]
    with ExitStack() as stack:
        ports = [stack.enter_context(nginx_backend()) for _ in range(3)]
        ports.append(stack.enter_context(nginx_backend(workers=3)))  # url3
        for number in range(ROUNDS):
            for tree in trees:  # alternating, so a slower spell of the machine hits all
                cmd = [sys.executable, __file__, "--child", str(number % len(CASES))]
                cmd += ["--ports", ",".join(map(str, ports))]
                out = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=True)
                us = json.loads(out.stdout.splitlines()[-1])["us"]
                for case, (c, w) in us.items():
                    cpu.setdefault((case, tree), []).append(c)
                    wall.setdefault((case, tree), []).append(w)
                    delta.setdefault((case, tree), []).append(c - us[reference(case)][0])
                print(f"round {number + 1} {tree}: " + " ".join(
                    f"{case} {cpu[case, tree][-1]:.1f}" for case in CASES), flush=True)  # fmt: skip
            loads.append(os.getloadavg()[0])
        if args.callgrind:
            for tree in trees:
                for case, count in instructions(tree, ports).items():
                    instr[case, tree] = count
    med = {k: statistics.median(v) for k, v in cpu.items()}
    med_delta = {k: statistics.median(v) for k, v in delta.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    load = f"load average {min(loads):.1f}-{max(loads):.1f}"
    for tree in trees:
        print(f"\n{tree}")
        for case in CASES:
            deltas = " ".join(f"{v:+.1f}" for v in delta[case, tree])
            n = instr.get((case, tree))
            ref = reference(case)
            counted = f"  {n:,.0f} instr ({n - instr[ref, tree]:+,.0f})" if n else ""
            print(f"{case:14s} CPU {med[case, tree]:6.2f} µs ({med_delta[case, tree]:+5.2f} "
                  f"vs {ref}: {deltas})  wall {med_wall[case, tree]:6.2f} µs{counted}")  # fmt: skip
    if len(trees) > 1 or os.environ.get("BENCH_CASES"):
        return  # a comparison of checkouts, or some cases: printed only
    tree = trees[0]
    rows = []
    for case, label in CASES.items():
        ref = reference(case)
        row = f"| {label} | {med[case, tree]:.2f} | {ref} | {med_delta[case, tree]:+.2f} |"
        if instr:
            count, base = instr[case, tree], instr[ref, tree]
            row += f" {count / 1000:.1f}k | {(count - base) / 1000:+.1f}k |"
        rows.append(row + f" {med_wall[case, tree]:.1f} |\n")
    head = "| backend | CPU µs per request | reference | over it |"
    head += " instructions | over it |" if instr else ""
    head += " wall µs |\n|---|---:|---|---:|" + ("---:|---:|" if instr else "") + "---:|\n"
    counted = (
        f" Instructions: user space, counted by callgrind in one run of {CG_REQUESTS:,} "
        "requests per case (repeatable under load; time in the kernel is not in them)."
        if instr
        else ""
    )
    text = (
        head
        + "".join(rows)
        + "\n_The in-process proxy of bench/clients.py (32 concurrent tasks, core 0, uvloop) "
        "to nginx on core 1. CPU: the proxy thread's CPU time per request "
        f"(time.thread_time), {REQUESTS:,} GET requests per case in each of {ROUNDS} "
        f"rounds (a fresh process each, the cases interleaved in {INNER} turns, after a "
        'warm-up); the median of the rounds, and "over it" the median of each round\'s '
        "difference to the reference case (the same backend processes, no balancer)."
        f"{counted} {load}; {cpu_model()}; {time.ctime()}_"
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
            "cpu_us_over_url": {c: [round(v, 2) for v in delta[c, tree]] for c in CASES},
            "wall_us_per_request": {c: [round(v, 2) for v in wall[c, tree]] for c in CASES},
            "instructions_per_request": {c: round(instr[c, tree]) for c in CASES if instr},
        },
    )
    write_block("balance", text, "Balancing over endpoints (`bench/balance.py`)")


if __name__ == "__main__":
    main()
