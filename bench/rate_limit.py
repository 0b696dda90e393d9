"""The rate_limit filter alone, in process: CPU time per request, local and global mode.

    .venv/bin/python bench/rate_limit.py [--rounds N] [--baseline REF] [--profile MODE]

Runs what the pipeline runs of a route's filters for one request (start, request headers
and, when the filter paused on its store call, the wait; response headers; done) with no
server or backend, 32 requests at a time on one event loop (as 32 connections would
interleave), and times each batch in the thread's CPU time: the machine's cores are
shared, so wall-clock time mostly measures waiting. Modes:

- ``none``: the same route without filters (what the others are measured against);
- ``local``: ``mode: local`` (shared data, compare-and-swap);
- ``global-memory``: ``mode: global`` against a ``memory://`` store;
- ``global-redis``: ``mode: global`` against a private redis-server (its own CPU time per
  request, from INFO, is reported beside, as it runs in another process).

Every request is allowed (the burst is far above the load), so the filter runs its full
path and adds its RateLimit headers. ``--profile MODE`` prints a cProfile of that mode
instead (the Python side: hostcalls answered in Python, the store, the event loop).
Each round runs every mode in a fresh process; ``--baseline REF`` alternates those rounds
with git REF's tree (its edgegw and its rate_limit.wasm, this tree's C extensions) and
reports both side by side, as medians over rounds. Results are printed and written to
docs/benchmarks.md between its rate-limit markers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import redis as redis_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, cpu_model, redis_server, write_block

from edgegw.app import GC_THRESHOLD
from edgegw.chain import Exchange

try:
    from edgegw.chain import STORE_CLUSTER
except ImportError:  # a baseline tree from before it moved there
    from edgegw.app import STORE_CLUSTER  # type: ignore[attr-defined]
from edgegw.config import parse_config
from edgegw.store import open_store
from edgegw.store.api import StoreAPI
from edgegw.upstream import HttpUpstream
from edgegw.wasm import WasmRuntime

WASM_PATH = Path("filters/dist/rate_limit.wasm")
WASM = Path(os.environ.get("RATE_LIMIT_WASM", str(ROOT / WASM_PATH)))
CONCURRENCY = 32
BATCHES = 150  # batches of CONCURRENCY requests per round and mode
MODES = ("none", "local", "global-memory", "global-redis")


def config_text(mode: str, store_url: str) -> str:
    policy = {"name": "ip", "rate": 1_000_000, "period": "1s", "key": ["ip"]}
    filt = {"mode": mode, "policies": [policy], "on_store_error": "fail_closed"}
    if mode == "none":
        filters, names = "", "[]"
    else:
        # limits.cpu: a loaded machine may preempt a callback past the default 50 ms
        spec = f"{{wasm: {WASM}, config: '{json.dumps(filt)}', limits: {{cpu: 2s}}}}"
        filters = f"filters:\n  limit: {spec}\n"
        names = "[limit]"
    return f"""version: 1
listen: 127.0.0.1:1
access_log: false
store: {{url: "{store_url}", prefix: rlbench{time.time_ns()}, timeout: 2s}}
backends: {{b: "http://127.0.0.1:2"}}
{filters}routes: [{{name: r, match: {{prefix: /}}, filters: {names}, backend: b}}]
"""


def exchange(route: object, n: int) -> Exchange:
    return Exchange(route=route, method="GET", path="/bench", scheme="http", authority="gw",  # type: ignore[arg-type]
                    request_headers=[(b"host", b"gw"), (b"user-agent", b"wrk"),
                                     (b"accept", b"*/*")],
                    client=(f"10.0.{n >> 8 & 255}.{n & 255}", 40000), server=("127.0.0.1", 2),
                    connection_id=n, start_ns=0)  # fmt: skip


class Runner:
    """One mode's runtime and store; ``batch()`` runs CONCURRENCY requests."""

    def __init__(self, runtime: WasmRuntime, api: StoreAPI) -> None:
        self.runtime, self.api = runtime, api
        self.route = runtime.config.routes[0]
        self.n = 0

    @classmethod
    async def create(cls, mode: str, store_url: str) -> Runner:
        filter_mode = "global" if mode.startswith("global") else mode
        config = parse_config(config_text(filter_mode, store_url), env={})
        api = StoreAPI(open_store(config.store), config.store)
        # As the gateway calls it (edgegw/app.py): the store is an extra cluster.
        upstream = HttpUpstream(config.backends, {STORE_CLUSTER: api.call})
        return cls(await WasmRuntime.create(config, upstream.call), api)

    async def one(self) -> None:
        self.n += 1
        ex = exchange(self.route, self.n)
        chain = self.runtime.start(ex)
        if chain is None:
            return
        pending = chain.request_headers(ex, True)
        reply = await pending if pending is not None else None
        if reply is not None:
            raise RuntimeError(f"a request was refused: {reply.status} {reply.body!r}")
        ex.status, ex.response_headers = 200, [(b"content-length", b"2")]
        if chain.response_headers(ex, False) is not None:
            raise RuntimeError("a filter paused on response headers")
        if not any(k == b"ratelimit" for k, _ in ex.response_headers):
            raise RuntimeError("no RateLimit header")
        chain.done(ex)

    async def batch(self) -> None:
        await asyncio.gather(*(self.one() for _ in range(CONCURRENCY)))

    async def aclose(self) -> None:
        await self.runtime.aclose()
        await self.api.aclose()


def gateway_gc() -> None:
    """The collector as a gateway worker runs it (GatewayApp.startup): what is alive now
    frozen out of collections, a young generation of GC_THRESHOLD objects. Without it a
    collection every 700 allocations walks the VMs and modules, and which mode pays for
    it depends on where the count happens to cross."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def redis_cpu(url: str) -> float:
    info = redis_py.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def timed(run: Callable[[], Awaitable[None]], batches: int) -> float:
    """Thread CPU µs per request over ``batches`` batches."""
    start = time.thread_time()
    for _ in range(batches):
        await run()
    return (time.thread_time() - start) / (batches * CONCURRENCY) * 1e6


async def measure(redis_url: str, rounds: int) -> tuple[dict[str, float], float]:
    urls = {"global-redis": redis_url}
    runners = {m: await Runner.create(m, urls.get(m, "memory://")) for m in MODES}
    gateway_gc()
    best = dict.fromkeys(MODES, float("inf"))
    redis_us = float("inf")
    for _ in range(rounds):
        for mode, runner in runners.items():
            await timed(runner.batch, 20)  # warm-up
            before = redis_cpu(redis_url) if mode == "global-redis" else 0.0
            best[mode] = min(best[mode], await timed(runner.batch, BATCHES))
            if mode == "global-redis":
                used = redis_cpu(redis_url) - before
                redis_us = min(redis_us, used / (BATCHES * CONCURRENCY) * 1e6)
    for runner in runners.values():
        await runner.aclose()
    return best, redis_us


async def profile(mode: str, redis_url: str, sort: str) -> None:
    runner = await Runner.create(mode, redis_url if mode == "global-redis" else "memory://")
    await timed(runner.batch, 20)
    gateway_gc()
    prof = cProfile.Profile(time.thread_time_ns, 1e-9)  # CPU time, as the figures
    prof.enable()
    await timed(runner.batch, BATCHES)
    prof.disable()
    await runner.aclose()
    stats = pstats.Stats(prof)
    print(f"{BATCHES * CONCURRENCY} requests")
    stats.sort_stats(sort).print_stats(45)
    if os.environ.get("PROFILE_CALLERS"):
        stats.print_callers(os.environ["PROFILE_CALLERS"])


@contextlib.contextmanager
def baseline_tree(ref: str) -> Iterator[Path]:
    """``ref`` exported aside with its own rate_limit.wasm built there, and this tree's
    built C extension when its sources are the same (else ref's, built there)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        diff = ["git", "diff", "--stat", ref, "--", "edgegw/wasm/native"]
        if subprocess.run(diff, cwd=ROOT, capture_output=True, text=True).stdout:
            build_native(tree)
        else:
            for built in (ROOT / "edgegw/wasm").glob("*.so"):
                shutil.copy(built, tree / "edgegw/wasm" / built.name)
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, "-m", "edgegw", "filters", "build"], cwd=tree, env=env,
                       check=True, capture_output=True)  # fmt: skip
        yield tree


def build_native(tree: Path) -> None:
    """``tree``'s C extension, compiled as setup.py compiles it (its flags, one shared
    object from every file of edgegw/wasm/native)."""
    native = tree / "edgegw/wasm/native"
    out = tree / "edgegw/wasm" / f"_native{sysconfig.get_config_var('EXT_SUFFIX')}"
    cmd = [os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-pthread",
           "-Wno-deprecated-declarations", f"-I{sysconfig.get_paths()['include']}",
           *sorted(map(str, native.glob("*.c"))), "-o", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)


def one_round(tree: Path, redis_url: str) -> dict[str, float]:
    """One round of every mode in a fresh process running ``tree``'s edgegw and filter."""
    env = {**os.environ, "PYTHONPATH": str(tree), "RATE_LIMIT_WASM": str(tree / WASM_PATH)}
    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, "--rounds", "1", "--json", "--redis", redis_url]
    out = subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="REF", help="alternate with git REF's tree")
    parser.add_argument("--profile", choices=MODES)
    parser.add_argument("--sort", default="tottime", help="pstats order for --profile")
    parser.add_argument("--redis", help="use this redis-server (default: start one)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(redis_server())
        if args.profile:
            asyncio.run(profile(args.profile, url, args.sort))
            return
        if args.json:
            best, redis_us = asyncio.run(measure(url, args.rounds))
            print(json.dumps({**best, "redis": redis_us}))
            return
        trees = {"now": ROOT}
        if args.baseline:
            trees = {args.baseline: stack.enter_context(baseline_tree(args.baseline)), **trees}
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.rounds):  # alternating: each round runs every tree once
            for name, tree in trees.items():
                rounds[name].append(one_round(tree, url))
    print(report(rounds, args.rounds, args.no_write))


def report(rounds: dict[str, list[dict[str, float]]], count: int, no_write: bool) -> str:
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for name, rs in rounds.items()}  # fmt: skip
    names = list(med)
    label = {"none": "no filter", "local": "`mode: local`",
             "global-memory": "`mode: global`, memory:// store",
             "global-redis": "`mode: global`, redis-server"}  # fmt: skip
    head = " | ".join(f"{n}: CPU µs/request | {n}: over no filter" for n in names)
    lines = [f"| rate_limit | {head} |", "|---|" + "---:|---:|" * len(names)]
    for m in MODES:
        cells = " | ".join(f"{med[n][m]:.1f} | {med[n][m] - med[n]['none']:.1f}" for n in names)
        lines.append(f"| {label[m]} | {cells} |")
    redis_cells = " | ".join(f"{med[n]['redis']:.1f} | " for n in names)
    lines.append(f"| redis-server's own CPU µs/request (INFO cpu) | {redis_cells}|")
    text = "\n".join(
        [
            *lines,
            "",
            f"_medians of {count} alternating rounds (each a fresh process per tree, the best "
            f"of {BATCHES * CONCURRENCY:,} requests per mode), {CONCURRENCY} requests at a "
            f"time on one event loop, no server or backend; thread CPU time; "
            f"{cpu_model()}; {time.ctime()}_",
        ]
    )
    if not no_write:
        write_block("rate-limit", text, "The rate_limit filter alone (`bench/rate_limit.py`)")
    return text


if __name__ == "__main__":
    main()
