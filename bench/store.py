"""Rate limiting through the store, and flag propagation across replicas, side by side
with the code before #22 (``--baseline``, default: main when #22 began) in one run.

    .venv/bin/python bench/store.py [--baseline REF] [--rounds N] [--duration S]

1. Per-request cost at 32 connections of rate_limit `mode: global` (Redis) batched (this
   tree), batched with ``store.lease`` (approximate: docs/store.md) and one EVALSHA per
   request (baseline), against `mode: local` and no limiter,
   on one edgegw each (all running, measured in alternating rounds, medians), with
   Redis' own CPU per request from INFO commandstats (EVALSHA/EVAL time / requests).
2. Exactness: three replicas of this tree, one Redis, M requests for a burst of N.
3. Flag propagation: three replicas per tree share one Redis; a flag is written through
   replica 1's admin API while replicas 2 and 3 are polled continuously (one process
   each, bench/flag_probe.py); the time from the PUT sent to the end of the first
   request that sees the flag. ``--flags-only`` runs this part alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis as redis_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flag_probe import Echo, Pollers, WokenThreads
from harness import ROOT, Result, free_port, nginx_backend, process, redis_server, write_block, wrk

CONNECTIONS = 32
RATE = str(ROOT / "filters/dist/rate_limit.wasm")
AB = str(ROOT / "filters/dist/ab_flags.wasm")
FLAG_TRIALS = int(os.environ.get("FLAG_TRIALS", "20"))
EXACT_N, EXACT_M = 300, 900
LEASED = "mode: global, batched, `store.lease` 10%, 200 ms (approximate)"
BEFORE = "42626d8"  # main before issue #22: redis-py, one EVALSHA per request


@contextlib.contextmanager
def source_tree(ref: str | None) -> Iterator[Path]:
    """This tree (None) or ``ref`` exported aside, with this tree's filters and built C
    extensions (built for ``ref`` when their sources differ)."""
    if ref is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        diff = ["git", "diff", "--stat", ref, "--", "edgegw/wasm/*.c", "edgegw/wasm/native"]
        changed = subprocess.run(diff, cwd=ROOT, capture_output=True, text=True).stdout
        if changed:  # the C extensions of ``ref`` are not this tree's: build its own
            # setup.py alone: the venv's setuptools may not read that pyproject.toml.
            (tree / "pyproject.toml").rename(tree / "pyproject.toml.aside")
            build = [sys.executable, "setup.py", "-q", "build_ext", "--inplace"]
            subprocess.run(build, cwd=tree, check=True, capture_output=True)
            (tree / "pyproject.toml.aside").rename(tree / "pyproject.toml")
        else:
            for built in (ROOT / "edgegw/wasm").glob("*.so"):
                shutil.copy(built, tree / "edgegw/wasm" / built.name)
        (tree / "filters/dist").symlink_to(ROOT / "filters/dist")
        yield tree


@contextlib.contextmanager
def gateway(tree: Path, config_text: str, port: int) -> Iterator[None]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(config_text)
        cmd = [sys.executable, "-m", "edgegw", "serve", "-c", str(cfg)]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        with process(cmd, port, "edgegw", cwd=str(tree), env=env):
            yield


def limiter_config(
    port: int, backend: int, mode: str | None, store: str, burst: int, lease: str = ""
) -> str:
    policy = {"name": "ip", "rate": 1 if burst < 1000 else burst, "period": "1h" if burst < 1000
              else "1s", "burst": burst, "key": ["route"]}  # fmt: skip
    filters, names = "", "[]"
    if mode:
        cfg = json.dumps({"mode": mode, "policies": [policy], "on_store_error": "fail_closed",
                          "timeout_ms": 2000})  # fmt: skip
        filters = f"filters:\n  limit: {{wasm: {RATE}, config: '{cfg}'}}\n"
        names = "[limit]"
    return f"""version: 1
listen: 127.0.0.1:{port}
access_log: false
store: {{url: "{store}", prefix: bench{time.time_ns()}, timeout: 2s{lease}}}
backends: {{nginx: "http://127.0.0.1:{backend}"}}
{filters}routes: [{{name: r, match: {{prefix: /}}, filters: {names}, backend: nginx}}]
"""


def throughput(args: argparse.Namespace, store: str, backend: int) -> list[str]:
    # The store API accepts rates up to 1,000,000 per period: never reached here.
    variants = [("no limiter", None, None, "memory://"), ("mode: local", None, "local", "memory://"),
                ("mode: global, one EVALSHA per request (before)", args.baseline, "global", store),
                ("mode: global, batched (now)", None, "global", store),
                (LEASED, None, "global", store)]  # fmt: skip
    client = redis_py.Redis.from_url(store)
    results: dict[str, list[Result]] = {name: [] for name, *_ in variants}
    redis_us: dict[str, list[float]] = {name: [] for name, *_ in variants}
    with contextlib.ExitStack() as stack:
        ports = {}
        for name, ref, mode, url in variants:
            tree = stack.enter_context(source_tree(ref))
            ports[name] = free_port()
            lease = ", lease: {share: 10%, ttl: 200ms}" if name == LEASED else ""
            config = limiter_config(ports[name], backend, mode, url, 1_000_000, lease)
            stack.enter_context(gateway(tree, config, ports[name]))
        for name in ports:
            wrk(f"http://127.0.0.1:{ports[name]}/", duration=1, connections=CONNECTIONS)
        for _ in range(args.rounds):
            for name in ports:
                client.config_resetstat()
                r = wrk(f"http://127.0.0.1:{ports[name]}/", args.duration, CONNECTIONS)
                if r.errors:
                    raise RuntimeError(f"{name}: {r.errors} errors")
                stats = client.info("commandstats")
                usec = sum(
                    stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in ("evalsha", "eval")
                )
                results[name].append(r)
                redis_us[name].append(usec / (r.rps * args.duration))
    client.close()
    base = statistics.median(r.rps for r in results["no limiter"])
    lines = ["| rate limiting | req/s | p50 ms | p99 ms | added µs/request | Redis µs/request |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        cpu = statistics.median(redis_us[name])
        added = (1 / rps - 1 / base) * 1e6
        cpu_text = f"{cpu:.1f}" if cpu else "-"
        lines.append(f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {added:.0f} | {cpu_text} |")
    spread = max((max(r.rps for r in v) - min(r.rps for r in v)) / statistics.median(
        r.rps for r in v) for v in results.values())  # fmt: skip
    lines += ["", f"{args.rounds} alternating rounds of {args.duration:.0f} s, {CONNECTIONS} "
              f"connections, medians; rounds of one row spread up to {spread:.0%}."]  # fmt: skip
    return lines


def exactness(store: str, backend: int) -> str:
    ports = [free_port() for _ in range(3)]
    prefix_config = limiter_config(0, backend, "global", store, EXACT_N)
    with contextlib.ExitStack() as stack:
        for port in ports:
            text = prefix_config.replace("listen: 127.0.0.1:0", f"listen: 127.0.0.1:{port}")
            stack.enter_context(gateway(ROOT, text, port))
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=20) for p in ports]
        with ThreadPoolExecutor(max_workers=48) as pool:
            statuses = list(pool.map(lambda i: clients[i % 3].get("/").status_code, range(EXACT_M)))
        for c in clients:
            c.close()
    allowed = statuses.count(200)
    verdict = (
        "exact" if allowed == EXACT_N and statuses.count(429) == EXACT_M - EXACT_N else "NOT exact"
    )
    return (
        f"Three replicas (batched), one Redis, {EXACT_M} requests from 48 threads for a "
        f"burst of {EXACT_N}: {allowed} allowed, {statuses.count(429)} denied ({verdict})."
    )


def flag_propagation(
    store: str, trees: dict[str, str | None], echo_port: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Three replicas per tree, all running; trials alternate between the trees. Returns
    ms edit -> first request seeing it (per replica) and ms edit -> PUT answered."""
    latencies: dict[str, list[float]] = {name: [] for name in trees}
    answered: dict[str, list[float]] = {name: [] for name in trees}
    sets: dict[str, tuple[httpx.Client, Pollers | WokenThreads]] = {}
    with contextlib.ExitStack() as stack:
        for name, ref in trees.items():
            tree = stack.enter_context(source_tree(ref))
            prefix = f"flags{time.time_ns()}"
            ports = [(free_port(), free_port()) for _ in range(3)]
            for port, admin in ports:
                stack.enter_context(gateway(tree, f"""version: 1
listen: 127.0.0.1:{port}
admin: {{listen: "127.0.0.1:{admin}"}}
access_log: false
store: {{url: "{store}", prefix: {prefix}}}
backends: {{echo: "http://127.0.0.1:{echo_port}"}}
filters: {{ab: {{wasm: {AB}, config: '{{}}'}}}}
routes: [{{match: {{prefix: /}}, filters: [ab], backend: echo}}]
""", port))  # fmt: skip
            admin_client = httpx.Client(base_url=f"http://127.0.0.1:{ports[0][1]}", timeout=5)
            stack.callback(admin_client.close)
            procs = Pollers([p for p, _ in ports[1:]])
            stack.callback(procs.close)
            sets[name] = (admin_client, procs)
            if ref is None:  # this tree also through the probe before, to compare probes
                woken = f"{name}, probed by threads woken with the edit (the probe before)"
                sets[woken] = (admin_client, WokenThreads([p for p, _ in ports[1:]]))
                latencies[woken], answered[woken] = [], []
        for i in range(FLAG_TRIALS):
            for name, (admin_client, pollers) in sets.items():

                def edit(
                    client: httpx.Client = admin_client,
                    flag: str = f"f{i}",
                    times: list[float] = answered[name],
                ) -> None:
                    t0 = time.monotonic_ns()
                    client.put(f"/admin/flags/{flag}", json=True).raise_for_status()
                    times.append((time.monotonic_ns() - t0) / 1e6)

                latencies[name] += pollers.trial(edit, f"f{i}")
    return latencies, answered


def flag_lines(args: argparse.Namespace, store: str) -> list[str]:
    echo = Echo(free_port())
    try:
        trees = {"before (every worker subscribes, re-reads the table)": args.baseline,
                 "now (one mirror per host, snapshot in the message)": None}  # fmt: skip
        flags, answered = flag_propagation(store, trees, echo.port)
    finally:
        echo.close()
    lines = ["| flag edit → first request that sees it on another replica | median ms | "
             "p90 ms | max ms | over 50 ms | PUT answered, median ms |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, values in flags.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        over = sum(v > 50 for v in values)
        lines.append(f"| {name} | {statistics.median(values):.1f} | {p90:.1f} | "
                     f"{max(values):.1f} | {over} of {len(values)} | "
                     f"{statistics.median(answered[name]):.1f} |")  # fmt: skip
    load = os.getloadavg()[0]
    lines += ["", f"{FLAG_TRIALS} edits per tree through replica 1's admin API, alternating "
              "between the trees (six replicas running), replicas 2 and 3 polled continuously "
              "by one process each (bench/flag_probe.py), timed from the PUT sent; baseline "
              f"{args.baseline[:10]}; load average {load:.1f}; {time.ctime()}"]  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=BEFORE, help="git ref of the 'before' code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--flags-only", action="store_true", help="only part 3")
    args = parser.parse_args()
    with redis_server(core="1") as store:
        if args.flags_only:
            text = "\n".join(flag_lines(args, store))
            print(text)
            write_block(
                "store-flags", text, "Store: flag propagation (`bench/store.py --flags-only`)"
            )
            return
        with nginx_backend() as backend:
            lines = throughput(args, store, backend)
            lines += ["", exactness(store, backend), ""]
        lines += flag_lines(args, store)
    text = "\n".join(lines)
    print(text)
    write_block(
        "store", text, "Store: global vs local rate limiting, flag propagation (`bench/store.py`)"
    )


if __name__ == "__main__":
    main()
