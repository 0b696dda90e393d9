"""Rate limiting through the store, and flag propagation across replicas.

    .venv/bin/python bench/store.py

1. Per-request cost of rate_limit `mode: global` (Redis, exact across replicas) vs
   `mode: local` (shared data) vs no limiter, on one edgegw with an nginx backend.
2. Flag propagation: three edgegw replicas share one redis-server; a flag is written
   through replica 1's admin API and the time until replicas 2 and 3 apply it is measured
   (target: under 100 ms).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, edgegw_with, free_port, nginx_backend, process, write_block, wrk

DURATION = 8.0
CONNECTIONS = 32
RATE = str(ROOT / "filters/dist/rate_limit.wasm")
AB = str(ROOT / "filters/dist/ab_flags.wasm")
FLAG_TRIALS = 20


@contextlib.contextmanager
def redis() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [shutil.which("redis-server") or "redis-server", "--port", str(port),
               "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp]  # fmt: skip
        with process(cmd, port, "redis-server", core="1"):
            yield f"redis://127.0.0.1:{port}/0"


def limiter_config(port: int, backend: int, mode: str | None, store: str) -> str:
    # The store API accepts rates up to 1,000,000 per period: never reached here.
    policy = {"name": "ip", "rate": 1_000_000, "period": "1s", "key": ["ip"]}
    filters = ""
    names = "[]"
    if mode:
        cfg = json.dumps({"mode": mode, "policies": [policy], "on_store_error": "fail_closed"})
        filters = f"filters:\n  limit: {{wasm: {RATE}, config: '{cfg}'}}\n"
        names = "[limit]"
    return f"""version: 1
listen: 127.0.0.1:{port}
access_log: false
store: {{url: "{store}", prefix: bench{time.time_ns()}}}
backends: {{nginx: "http://127.0.0.1:{backend}"}}
{filters}routes: [{{match: {{prefix: /}}, filters: {names}, backend: nginx}}]
"""


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        body = (self.headers.get("x-edgegw-flags") or "").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


def flag_propagation(store: str) -> list[float]:
    echo = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    echo.daemon_threads = True
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    prefix = f"flags{time.time_ns()}"
    ports = [(free_port(), free_port()) for _ in range(3)]
    configs = [f"""version: 1
listen: 127.0.0.1:{p}
admin: {{listen: "127.0.0.1:{a}"}}
access_log: false
store: {{url: "{store}", prefix: {prefix}}}
backends: {{echo: "http://127.0.0.1:{echo.server_address[1]}"}}
filters: {{ab: {{wasm: {AB}, config: '{{}}'}}}}
routes: [{{match: {{prefix: /}}, filters: [ab], backend: echo}}]
""" for p, a in ports]  # fmt: skip
    latencies: list[float] = []
    with contextlib.ExitStack() as stack:
        for (port, _admin), cfg in zip(ports, configs, strict=True):
            stack.enter_context(edgegw_with(cfg, port))
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=5) for p, _ in ports]
        admin = httpx.Client(base_url=f"http://127.0.0.1:{ports[0][1]}/admin/flags", timeout=5)
        for i in range(FLAG_TRIALS):
            start = time.perf_counter()
            admin.put(f"/f{i}", json=True).raise_for_status()
            for client in clients[1:]:
                while f"f{i}=on" not in client.get("/").text:
                    if time.perf_counter() - start > 5:
                        raise RuntimeError("a flag never reached a replica")
            latencies.append((time.perf_counter() - start) * 1000)
        for client in [*clients, admin]:
            client.close()
    echo.shutdown()
    return latencies


def main() -> None:
    results = {}
    with redis() as store, nginx_backend() as backend:
        for label, mode, url in (("no limiter", None, "memory://"), ("mode: local", "local", "memory://"),
                                 ("mode: global (Redis)", "global", store)):  # fmt: skip
            port = free_port()
            with edgegw_with(limiter_config(port, backend, mode, url), port):
                target = f"http://127.0.0.1:{port}/"
                wrk(target, duration=2, connections=CONNECTIONS)
                results[label] = wrk(target, duration=DURATION, connections=CONNECTIONS)
                if results[label].errors:
                    raise RuntimeError(f"{label}: {results[label].errors} errors")
        flags = flag_propagation(store)
    base = results["no limiter"].rps
    lines = [
        "| rate limiting | req/s | p50 ms | p99 ms | added µs/request |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {k} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {(1 / r.rps - 1 / base) * 1e6:.0f} |"
            for k, r in results.items()
        ),
        "",
        f"Flag propagation to two other replicas through Redis pub/sub ({FLAG_TRIALS} edits):"
        f" median {statistics.median(flags):.1f} ms, max {max(flags):.1f} ms (target < 100 ms;"
        " includes the admin write and the polling requests).",
        "",
        f"{DURATION:.0f} s per run, {CONNECTIONS} connections; {time.ctime()}",
    ]
    text = "\n".join(lines)
    print(text)
    write_block(
        "store", text, "Store: global vs local rate limiting, flag propagation (`bench/store.py`)"
    )


if __name__ == "__main__":
    main()
