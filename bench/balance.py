"""Balancing cost: one backend URL vs three endpoints, side by side in one run (issue 17:
at most 2 µs per request more; retries and health checks add nothing while nothing fails).

The minimal in-process proxy of bench/clients.py forwards GET requests through
``HttpUpstream`` to (a) a backend with one ``url``, (b) three ``endpoints`` (round_robin),
(c) the same three with ``retry`` and ``health_check`` configured, (d) three with
``lb: least_request``. Three nginx processes are the endpoints (the single URL uses the
first). Alternating rounds, best of each; the table goes into docs/benchmarks.md.

    .venv/bin/python bench/balance.py
    BENCH_REQUESTS=5000 .venv/bin/python bench/balance.py    # a quicker run
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import uvloop

from edgegw.model import Backend, Endpoint, HealthCheck, Retry
from edgegw.upstream import HttpUpstream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import POOL, REQUESTS, ROUNDS, TASKS, WARMUP, App, drive, edgegw_proxy
from harness import cpu_model, nginx_backend, save_results, write_block

CASES = {
    "url": "one `url`",
    "round_robin": "three `endpoints`, round_robin",
    "guarded": "three `endpoints`, round_robin, `retry` + `health_check`",
    "least_request": "three `endpoints`, least_request",
}


def backend(case: str, ports: list[int]) -> Backend:
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    if case == "url":
        return Backend("backend", urls[0], max_connections=POOL)
    extra: dict[str, object] = {}
    if case == "guarded":
        extra = {"retry": Retry(attempts=2), "health_check": HealthCheck(path="/", interval=1.0)}
    return Backend(
        "backend",
        urls[0],
        max_connections=POOL,
        endpoints=tuple(Endpoint(u) for u in urls),
        lb="least_request" if case == "least_request" else "round_robin",
        **extra,  # type: ignore[arg-type]
    )


async def measure(ports: list[int]) -> dict[str, list[float]]:
    upstreams = {case: HttpUpstream({"backend": backend(case, ports)}) for case in CASES}
    apps: dict[str, App] = {case: edgegw_proxy(up) for case, up in upstreams.items()}
    rounds: dict[str, list[float]] = {case: [] for case in CASES}
    try:
        for app in apps.values():
            await drive(app, WARMUP)
        for _ in range(ROUNDS):  # alternating, so a slower spell of the machine hits all
            for case, app in apps.items():
                rounds[case].append(await drive(app, REQUESTS))
    finally:
        for up in upstreams.values():
            await up.aclose()
    return rounds


def main() -> None:
    os.sched_setaffinity(0, {0})
    with ExitStack() as stack:
        ports = [stack.enter_context(nginx_backend()) for _ in range(3)]
        rounds = uvloop.run(measure(ports))
    best = {case: min(values) for case, values in rounds.items()}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = "".join(
        f"| {label} | {best[case]:.1f} | {best[case] - best['url']:+.1f} |"
        f" {' / '.join(f'{v:.1f}' for v in rounds[case])} |\n"
        for case, label in CASES.items()
    )
    text = (
        "| backend | µs per request | vs one url | rounds (µs) |\n|---|---:|---:|---:|\n"
        + rows
        + f"\n_The in-process proxy of bench/clients.py, {TASKS} concurrent tasks, "
        f"{REQUESTS:,} GET requests per round, best of {ROUNDS} alternating rounds after a "
        f"warm-up; three nginx endpoints; {cpu_model()}; {time.ctime()}_"
    )
    print(text)
    save_results(
        "balance",
        stamp,
        {
            "when": stamp,
            "requests": REQUESTS,
            "tasks": TASKS,
            "rounds": ROUNDS,
            "cpu": cpu_model(),
            "us_per_request": {
                c: {"best": round(best[c], 2), "rounds": [round(v, 2) for v in rounds[c]]}
                for c in rounds
            },
        },
    )
    write_block("balance", text, "Balancing over endpoints (`bench/balance.py`)")


if __name__ == "__main__":
    main()
