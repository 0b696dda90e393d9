"""What logging each request costs: edgegw's access log vs Envoy's JSON file access log.

Scenarios ``plain`` and ``plain-log`` of bench/harness.py (the same JSON fields in both
servers, written to a file), each server pinned to core 0 and loaded by wrk at 32
connections, rounds alternating. Besides req/s, each run reads the CPU time the server's
processes used (utime + stime of every process of its session, /proc/<pid>/stat) and
divides it by the requests served: CPU µs per request is far less sensitive than req/s to
other work on a shared machine, and the difference plain-log minus plain is what a log line
costs each server.

    python bench/access_log.py              # BENCH_ROUNDS (5) rounds of BENCH_DURATION (5) s
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Runner,
    Scenario,
    cpu_model,
    nginx_backend,
    run_edgegw,
    run_envoy,
    save_results,
    scenarios,
    wrk,
)

DURATION = float(os.environ.get("BENCH_DURATION", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # fields from 3 (state) on


def _server_session(port: int) -> int:
    """The session of the server listening on ``port`` (harness.process starts each in
    its own): found by the port in its command line or its gateway.yaml."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--base-id" in cmd and cmd[cmd.index(b"--base-id") + 1] == str(port).encode():
            return int(pid)
        if b"serve" in cmd and b"-c" in cmd:
            config = Path(cmd[cmd.index(b"-c") + 1].decode())
            try:
                if f"listen: 127.0.0.1:{port}\n" in config.read_text():
                    return int(pid)
            except OSError:
                continue
    raise RuntimeError(f"no server process for port {port}")


def cpu_seconds(session: int) -> float:
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(pid)
        if fields is not None and int(fields[3]) == session:  # field 6: session id
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / TICK


def measure(scenario: Scenario, runner: Runner, backend_port: int) -> tuple[float, float]:
    """(req/s, CPU µs per request) of one run."""
    with runner(scenario, backend_port) as port:
        url = f"http://127.0.0.1:{port}{scenario.path}"
        wrk(url, duration=2, connections=32)  # warm-up
        session = _server_session(port)
        before, started = cpu_seconds(session), time.monotonic()
        result = wrk(url, duration=DURATION, connections=32)
        used, elapsed = cpu_seconds(session) - before, time.monotonic() - started
    return result.rps, used / (result.rps * elapsed) * 1e6


def main() -> None:
    chosen = [s for s in scenarios() if s.name in ("plain", "plain-log")]
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {
        s.name: {"envoy": [], "edgegw": []} for s in chosen
    }
    with nginx_backend() as backend_port:
        for number in range(1, ROUNDS + 1):
            for scenario in chosen:
                for name, runner in (("envoy", run_envoy), ("edgegw", run_edgegw)):
                    rps, cpu = measure(scenario, runner, backend_port)
                    runs[scenario.name][name].append((rps, cpu))
                    print(f"round {number} {scenario.name:9s} {name:6s} {rps:8,.0f} req/s "
                          f"{cpu:6.1f} CPU µs/request", flush=True)  # fmt: skip
    med = {
        (s, n): (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
        for s, by in runs.items() for n, v in by.items()
    }  # fmt: skip
    print("\n| scenario | Envoy req/s | edgegw req/s | ratio | Envoy CPU µs/req | "
          "edgegw CPU µs/req |\n|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for s in runs:
        (er, ec), (gr, gc) = med[(s, "envoy")], med[(s, "edgegw")]
        print(f"| {s} | {er:,.0f} | {gr:,.0f} | {gr / er:.2f}x | {ec:.1f} | {gc:.1f} |")
    log_cost = {n: med[("plain-log", n)][1] - med[("plain", n)][1] for n in ("envoy", "edgegw")}
    print(f"\nlog line, CPU µs per request: Envoy {log_cost['envoy']:.1f}, "
          f"edgegw {log_cost['edgegw']:.1f}")  # fmt: skip
    print(f"_median of {ROUNDS} alternating rounds of {DURATION:g} s; {cpu_model()}_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    save_results("access-log", stamp, {"rounds": ROUNDS, "duration_s": DURATION, "runs": runs})


if __name__ == "__main__":
    main()
