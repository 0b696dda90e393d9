"""proxy-wasm shared data and shared queues are host-wide: one table for every worker
process of a gateway (edgegw/wasm/native/shm.c), as Envoy shares them across worker threads.

Real gateways with `workers: 2` and `workers: 4` under granian and hypercorn, and real
processes racing on the table file directly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, GatewayProcess, LoopbackBackend

RunGateway = Callable[..., GatewayProcess]
RATE_WASM = str(REPO / "filters" / "dist" / "rate_limit.wasm")
WORKERS_AND_SERVERS = [
    (2, "granian"),
    (4, "granian"),
    (2, "hypercorn"),
    (4, "hypercorn"),
]


def _gateway(server: str, workers: int, backend: LoopbackBackend, probe: Path) -> dict[str, Any]:
    """Route `limited` (/): probe, then 7 requests an hour in all; `probe` (/probe): probe."""
    policy = {"name": "p", "rate": 7, "period": "1h", "key": ["route"]}
    return {
        "server": server,
        "workers": workers,
        "backends": {"api": backend.url},
        "filters": {
            "probe": {"wasm": str(probe)},
            "limit": {
                "wasm": RATE_WASM,
                "config": {"mode": "local", "headers": False, "policies": [policy]},
            },
        },
        "routes": [
            {
                "name": "probe",
                "match": {"prefix": "/probe"},
                "filters": ["probe"],
                "backend": "api",
            },
            {
                "name": "limited",
                "match": {"prefix": "/"},
                "filters": ["probe", "limit"],
                "backend": "api",
            },
        ],
        "access_log": False,
    }


def _get(
    gw: GatewayProcess, headers: dict[str, str] | None = None, path: str = "/probe"
) -> httpx.Response:
    # A new connection each time, so that requests spread over the workers.
    return httpx.get(gw.url + path, headers=headers, timeout=30)


def _wait_for_workers(gw: GatewayProcess, workers: int) -> None:
    """Until `workers` different VMs answered (each worker loaded its filters)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 90
    with ThreadPoolExecutor(max_workers=2 * workers) as pool:
        while len(seen) < workers and time.monotonic() < deadline:
            found = pool.map(lambda _: _get(gw, {"x-op": "none"}), range(4 * workers))
            seen.update(r.headers["x-vm"] for r in found)
    assert len(seen) == workers, seen


@pytest.mark.parametrize(("workers", "server"), WORKERS_AND_SERVERS)
def test_local_rate_limit_is_exact_over_all_workers(
    workers: int,
    server: str,
    run_gateway: RunGateway,
    backend_factory: Callable[..., LoopbackBackend],
    test_wasm: Callable[[str], Path],
) -> None:
    backend = backend_factory()
    gw = run_gateway(_gateway(server, workers, backend, test_wasm("queue")))
    _wait_for_workers(gw, workers)
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: _get(gw, path="/"), range(40)))
    statuses = [r.status_code for r in responses]
    # Before: each worker had its own 7 (`workers` x 7 allowed when spread).
    assert statuses.count(200) == 7, statuses
    assert statuses.count(429) == 33, statuses
    assert len({r.headers["x-vm"] for r in responses}) > 1  # spread over workers


@pytest.mark.parametrize(("workers", "server"), WORKERS_AND_SERVERS)
def test_a_queue_crosses_workers_to_the_registering_vm(
    workers: int,
    server: str,
    run_gateway: RunGateway,
    backend_factory: Callable[..., LoopbackBackend],
    test_wasm: Callable[[str], Path],
) -> None:
    backend = backend_factory()
    gw = run_gateway(_gateway(server, workers, backend, test_wasm("queue")))
    _wait_for_workers(gw, workers)
    with ThreadPoolExecutor(max_workers=8) as pool:
        enqueued = list(
            pool.map(lambda i: _get(gw, {"x-op": "enqueue", "x-item": str(i)}), range(24))
        )
    enqueuers = {str(i): r.headers["x-vm"] for i, r in enumerate(enqueued)}
    got: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while len(got) < len(enqueuers) and time.monotonic() < deadline:
        for item in enqueuers.keys() - got.keys():
            body = _get(gw, {"x-op": "got", "x-item": item}).text
            if body != "none":
                got[item] = body
    assert got.keys() == enqueuers.keys()  # every item reached an on_queue_ready
    (owner,) = set(got.values())  # ... of one VM: the one that registered the queue first
    assert any(vm != owner for vm in enqueuers.values())  # from other workers too


# --- the table file from several processes ---------------------------------------------

_INCREMENT = """
import sys
from edgegw.wasm._native import Table
t = Table(sys.argv[1], create=False)
done = 0
while done < int(sys.argv[2]):
    cur = t.get(b"n")
    value, cas = cur if cur else (b"0", 0)
    if t.set(b"n", b"%d" % (int(value) + 1), cas if cur else -1) == 0:
        done += 1
"""


def test_cas_races_from_four_processes_lose_no_update(tmp_path: Path) -> None:
    from edgegw.wasm._native import Table

    path = tmp_path / "shared_data"
    table = Table(str(path), 1 << 20, 1024, True)
    procs = [
        subprocess.Popen([sys.executable, "-c", _INCREMENT, str(path), "2500"], cwd=REPO)
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    assert table.get(b"n") is not None
    assert table.get(b"n")[0] == b"10000"  # type: ignore[index]


_HOLD_LOCK = """
import ctypes, mmap, os, sys, time
from edgegw.wasm._native import MUTEX_OFFSET
with open(sys.argv[1], "r+b") as f:
    mm = mmap.mmap(f.fileno(), 0)
mutex = ctypes.addressof(ctypes.c_char.from_buffer(mm, MUTEX_OFFSET))
assert ctypes.CDLL(None).pthread_mutex_lock(ctypes.c_void_p(mutex)) == 0
print("locked", flush=True)
time.sleep(120)
"""

_SET_AFTER = """
import sys
from edgegw.wasm._native import Table
t = Table(sys.argv[1], create=False)
assert t.set(b"k", b"after", 0) == 0
assert t.get(b"k")[0] == b"after"
print(t.stats()["recoveries"])
"""


def test_a_process_killed_holding_the_lock_does_not_wedge_the_others(tmp_path: Path) -> None:
    from edgegw.wasm._native import Table

    path = tmp_path / "shared_data"
    table = Table(str(path), 1 << 20, 1024, True)
    assert table.set(b"k", b"before", 0) == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)], cwd=REPO, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    # In another process, bounded: without a robust mutex this would wait forever.
    after = subprocess.run(
        [sys.executable, "-c", _SET_AFTER, str(path)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert after.returncode == 0, after.stderr
    assert after.stdout == b"1\n"  # the next locker recovered the table once
    assert table.get(b"k") is not None and table.get(b"k")[0] == b"after"  # type: ignore[index]
