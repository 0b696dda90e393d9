"""edgegw vs Envoy, side by side, in one run.

Each scenario runs edgegw and Envoy in front of the same nginx backend, each server pinned to
core 0, loaded by wrk pinned to core 1 (nginx shares core 1 with wrk; it is never the
bottleneck at these rates). Prints req/s, p50, p99 and the edgegw/Envoy ratios, writes the
raw figures to bench/results/<stamp>.json and the table into docs/benchmarks.md.

    python bench/run.py                     # every scenario
    python bench/run.py plain filters-1     # some of them
    BENCH_DURATION=10 python bench/run.py   # longer runs (default 5 s)
    BENCH_ROUNDS=1 python bench/run.py      # one round instead of the median of nine
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import otlp_sink
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
)
from listener import load

DURATION = float(os.environ.get("BENCH_DURATION", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))


def measure(chosen: list[Scenario], backend_port: int) -> dict[str, dict[str, Result]]:
    """Every scenario on Envoy and on edgegw in alternation, ROUNDS times, the scenarios
    interleaved within each round so that a drift of the machine's speed (one run on a
    shared 2-core machine varies by up to ±20%) spreads over all of them; each figure is
    the median of its rounds."""
    rounds: dict[str, dict[str, list[Result]]] = {
        s.name: {"envoy": [], "edgegw": []} for s in chosen
    }
    for number in range(1, ROUNDS + 1):
        for scenario in chosen:
            print(f"== round {number}/{ROUNDS}, {scenario.name}: {scenario.description}")
            for name, runner in (("envoy", run_envoy), ("edgegw", run_edgegw)):
                with runner(scenario, backend_port) as port:
                    # wrk, or h2load for HTTP/2 (bench/listener.py); first a warm-up (JIT,
                    # pools, caches).
                    load(scenario, port, scenario.path, 2, CONNECTIONS, scenario.headers)
                    result = load(
                        scenario, port, scenario.path, DURATION, CONNECTIONS, scenario.headers
                    )
                    print(f"   {name:7s} {result}", flush=True)
                    rounds[scenario.name][name].append(result)
    return {
        scenario: {name: _median(results) for name, results in by_server.items()}
        for scenario, by_server in rounds.items()
    }


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


def per_filter(rows: list[tuple[str, dict[str, Result]]]) -> str:
    """Added cost per trivial filter, from the medians: ``(1/rps_n - 1/rps_plain) / n``,
    the cost of each filter after the first, ``(1/rps_4 - 1/rps_1) / 3``, and that of a
    filter with no stream callbacks (``noop-1``) when it ran."""
    by_name = dict(rows)
    if not {"plain", "filters-1", "filters-4"} <= by_name.keys():
        return ""

    def us(name: str, server: str) -> float:
        return 1e6 / by_name[name][server].rps

    def row(label: str, more: str, less: str, n: int) -> str:
        envoy, edgegw = ((us(more, s) - us(less, s)) / n for s in ("envoy", "edgegw"))
        return f"| {label} | {envoy:.1f} | {edgegw:.1f} |"

    lines = [
        "| added cost per trivial filter | Envoy µs | edgegw µs |",
        "|---|---:|---:|",
        row("1 filter", "filters-1", "plain", 1),
        row("4 filters, per filter", "filters-4", "plain", 4),
        row("filters 2 to 4, each", "filters-4", "filters-1", 3),
    ]
    if "noop-1" in by_name:  # what a filtered request costs before any callback runs
        lines.append(row("1 filter without stream callbacks (noop-1)", "noop-1", "plain", 1))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    chosen = [s for s in scenarios() if not argv or s.name in argv]
    if not chosen:
        print(f"unknown scenario; choose from {[s.name for s in scenarios()]}")
        return 2
    with nginx_backend() as backend_port:
        measured = measure(chosen, backend_port)
    rows = [(s.name, measured[s.name]) for s in chosen]
    for name, r in rows:
        print(f"{name}: edgegw/Envoy req/s {r['edgegw'].rps / r['envoy'].rps:.2f}")
    text = table(rows)
    costs = per_filter(rows)
    if costs:
        text += "\n\n" + costs
    stamp = time.strftime("%Y%m%d-%H%M%S")
    info = (
        f"median of {ROUNDS} alternating rounds of {DURATION:.0f} s, {CONNECTIONS} connections, "
        f"wrk -t1; {cpu_model()}; {time.ctime()}"
    )
    if otlp_sink.spans:  # the tracing scenarios: what reached the collector (warm-ups too)
        info += "; spans received: " + ", ".join(f"{k} {v:,}" for k, v in otlp_sink.spans.items())
        info += f" ({otlp_sink.errors[0]} exports broken off)"
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
