"""edgegw vs Envoy, side by side, in one run.

Each scenario runs edgegw and Envoy in front of the same nginx backend, each server pinned to
core 0, loaded by wrk pinned to core 1 (nginx shares core 1 with wrk; it is never the
bottleneck at these rates). Prints req/s, p50, p99 and the edgegw/Envoy ratios, writes the
raw figures to bench/results/<stamp>.json and the table into docs/benchmarks.md.

    python bench/run.py                     # every scenario
    python bench/run.py plain filters-1     # some of them
    BENCH_DURATION=5 python bench/run.py    # shorter runs
    BENCH_ROUNDS=1 python bench/run.py      # one round instead of the median of three
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Result,
    Scenario,
    cpu_model,
    nginx_backend,
    run_edgegw,
    run_envoy,
    save_results,
    scenarios,
    write_block,
    wrk,
)

DURATION = float(os.environ.get("BENCH_DURATION", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def measure(scenario: Scenario, backend_port: int) -> dict[str, Result]:
    """Envoy and edgegw in alternation, ROUNDS times; each figure is the median of its
    rounds (one run on a shared 2-core machine varies by up to ±20%)."""
    rounds: dict[str, list[Result]] = {"envoy": [], "edgegw": []}
    for _ in range(ROUNDS):
        for name, runner in (("envoy", run_envoy), ("edgegw", run_edgegw)):
            with runner(scenario, backend_port) as port:
                url = f"http://127.0.0.1:{port}{scenario.path}"
                wrk(url, duration=2, connections=CONNECTIONS)  # warm-up: JIT, pools, caches
                rounds[name].append(wrk(url, duration=DURATION, connections=CONNECTIONS))
    return {name: _median(results) for name, results in rounds.items()}


def _median(results: list[Result]) -> Result:
    return Result(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
        rounds=[round(r.rps) for r in results],
    )


def table(rows: list[tuple[str, dict[str, Result]]]) -> str:
    out = [
        "| scenario | Envoy req/s | edgegw req/s | ratio | Envoy p50 / p99 ms "
        "| edgegw p50 / p99 ms | p99 ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        e, g = r["envoy"], r["edgegw"]
        out.append(
            f"| {name} | {e.rps:,.0f} | {g.rps:,.0f} | {g.rps / e.rps:.2f}x "
            f"| {e.p50_ms:.2f} / {e.p99_ms:.2f} | {g.p50_ms:.2f} / {g.p99_ms:.2f} "
            f"| {g.p99_ms / e.p99_ms:.2f}x |"
        )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    chosen = [s for s in scenarios() if not argv or s.name in argv]
    if not chosen:
        print(f"unknown scenario; choose from {[s.name for s in scenarios()]}")
        return 2
    rows: list[tuple[str, dict[str, Result]]] = []
    with nginx_backend() as backend_port:
        for scenario in chosen:
            print(f"== {scenario.name}: {scenario.description}", flush=True)
            r = measure(scenario, backend_port)
            for name, res in r.items():
                print(f"   {name:7s} {res}", flush=True)
            print(f"   ratio edgegw/Envoy req/s {r['edgegw'].rps / r['envoy'].rps:.2f}", flush=True)
            rows.append((scenario.name, r))
    text = table(rows)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    info = (
        f"median of {ROUNDS} alternating rounds of {DURATION:.0f} s, {CONNECTIONS} connections, "
        f"wrk -t1; {cpu_model()}; {time.ctime()}"
    )
    print("\n" + text + "\n\n" + info)
    save_results(
        "proxy",
        stamp,
        {
            "when": stamp,
            "duration_s": DURATION,
            "connections": CONNECTIONS,
            "rounds": ROUNDS,
            "cpu": cpu_model(),
            "scenarios": {n: {k: v.__dict__ for k, v in r.items()} for n, r in rows},
        },
    )
    write_block("proxy", f"{text}\n\n_{info}_", "Proxying and trivial wasm filters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
