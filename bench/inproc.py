"""µs per request through the whole gateway app, in process: for finding where a request's
time goes, and for comparing two checkouts of edgegw side by side (docs/benchmarks.md).

The app of a ``bench/run.py`` scenario (its gateway.yaml, its filters) is called as an
ASGI server would call it, by 32 concurrent tasks on core 0 under uvloop, in front of the
nginx backend of bench/run.py on core 1. No server and no client socket: what is timed is
edgegw's own per-request work plus its upstream client. Each child process imports the
edgegw of the checkout given (its cwd); the parent starts nginx once and alternates the
checkouts round by round, reporting the median of each.

    .venv/bin/python bench/inproc.py plain noop-1                  # this checkout
    .venv/bin/python bench/inproc.py --trees /tmp/base,. plain     # two checkouts, alternated
    .venv/bin/python bench/inproc.py --profile plain               # cProfile, top functions
    .venv/bin/python bench/inproc.py --served --trees /tmp/base,. plain   # edgegw serve + wrk:
                                          # req/s and the server's CPU µs per request
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import SERVER_CORE, edgegw_config, free_port, nginx_backend, scenarios, wait_port, wrk

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
TASKS = 32
DURATION = float(os.environ.get("BENCH_DURATION", "5"))

Message = dict[str, Any]


def scope_for(path: str, port: int) -> Message:
    """What granian hands the app for ``GET path`` from wrk."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", port),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:%d" % port)],
    }


class Receiver:
    """A request's ``receive``: its body, then nothing until the client leaves (never)."""

    def __init__(self, body: Message) -> None:
        self.first: Message | None = body
        self.gone: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def receive(self) -> Message:
        first, self.first = self.first, None
        return first if first is not None else await self.gone


async def drive(app: Any, scope: Message, requests: int) -> float:
    """CPU µs per request with ``TASKS`` tasks calling ``app``; every answer must be a 200.
    CPU time, not wall time: the machine is shared, and time spent waiting for the core
    or for nginx is not edgegw's."""
    statuses: list[int] = []
    body = {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def task(n: int) -> None:
        for _ in range(n):
            await app(scope, Receiver(body).receive, send)

    share, rest = divmod(requests, TASKS)
    start = time.process_time()
    await asyncio.gather(*(task(share + (i < rest)) for i in range(TASKS)))
    elapsed = time.process_time() - start
    if statuses.count(200) != requests:
        raise RuntimeError(f"not all 200: {sorted(set(statuses))}")
    return elapsed / requests * 1e6


def child(name: str, backend_port: int, profile: bool) -> None:
    """Run in a checkout (cwd): print the µs per request of each round, one per line."""
    sys.path.insert(0, os.getcwd())
    import uvloop

    from edgegw.app import create_app
    from edgegw.config import load_config

    os.sched_setaffinity(0, {0})
    scenario = next(s for s in scenarios() if s.name == name)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(edgegw_config(scenario, 8080, backend_port))
        app = create_app(load_config(cfg))
        scope = scope_for(scenario.path, 8080)

        async def main() -> None:
            await app.startup()
            await drive(app, scope, REQUESTS // 4)  # warm-up: pools, caches
            if profile:
                prof = cProfile.Profile()
                prof.enable()
                print(f"{await drive(app, scope, REQUESTS):.2f}", flush=True)
                prof.disable()
                if os.environ.get("INPROC_PSTATS"):
                    prof.dump_stats(os.environ["INPROC_PSTATS"])
                pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(35)
            else:
                for _ in range(int(os.environ.get("INPROC_ROUNDS", "1"))):
                    print(f"{await drive(app, scope, REQUESTS):.2f}", flush=True)
            await app.aclose()

        uvloop.run(main())


def session_cpu(sid: int) -> float:
    """CPU seconds used so far by the processes of session ``sid`` (a server's workers)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[3]) == sid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def served(name: str, tree: str, backend_port: int) -> tuple[float, float]:
    """``edgegw serve`` of ``tree`` loaded by wrk: (req/s, server CPU µs per request)."""
    scenario = next(s for s in scenarios() if s.name == name)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as log:
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(edgegw_config(scenario, port, backend_port))
        cmd = [
            "taskset",
            "-c",
            SERVER_CORE,
            sys.executable,
            "-m",
            "edgegw",
            "serve",
            "-c",
            str(cfg),
        ]
        proc = subprocess.Popen(cmd, cwd=tree, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_port(port, proc, "edgegw")
            url = f"http://127.0.0.1:{port}{scenario.path}"
            wrk(url, duration=2, connections=32)
            before = session_cpu(proc.pid)
            result = wrk(url, duration=DURATION, connections=32)
            cpu = session_cpu(proc.pid) - before
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
    return result.rps, cpu / (result.rps * DURATION) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenarios", nargs="*", default=["plain", "noop-1"])
    parser.add_argument("--trees", default=".", help="checkouts, comma-separated")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--served", action="store_true", help="edgegw serve + wrk instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.port, args.profile)
        return
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    results: dict[tuple[str, str], list[float]] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    with nginx_backend() as port:
        for number in range(1, (1 if args.profile else ROUNDS) + 1):
            for name in args.scenarios:
                for tree in trees:
                    if args.served:
                        rps, us = served(name, tree, port)
                        results.setdefault((name, tree), []).append(us)
                        rates.setdefault((name, tree), []).append(rps)
                        print(f"round {number} {name:8s} {rps:7.0f} req/s {us:6.1f} CPU µs  {tree}")
                        continue
                    cmd = [sys.executable, __file__, "--child", name, "--port", str(port)]
                    if args.profile:
                        cmd.append("--profile")
                    out = subprocess.run(
                        cmd, cwd=tree, capture_output=not args.profile, text=True, check=True
                    )
                    if args.profile:
                        continue
                    us = float(out.stdout.split()[-1])
                    results.setdefault((name, tree), []).append(us)
                    print(f"round {number} {name:8s} {us:7.2f} µs  {tree}", flush=True)
    for (name, tree), values in results.items():
        rounds = " / ".join(f"{v:.1f}" for v in values)
        rate = f"{statistics.median(rates[name, tree]):7.0f} req/s " if args.served else ""
        print(f"{name:8s} median {rate}{statistics.median(values):7.2f} µs  ({rounds})  {tree}")


if __name__ == "__main__":
    main()
