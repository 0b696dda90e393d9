"""The gateway as a real process: `python -m edgegw serve` on granian and on hypercorn."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess, LoopbackBackend, free_port

RunGateway = Callable[..., GatewayProcess]
MakeBackend = Callable[..., LoopbackBackend]


def gateway_config(backend: LoopbackBackend, **top: Any) -> dict[str, Any]:
    return {
        "version": 1,
        **top,
        "backends": {
            "api": {"url": backend.url, "timeout": "5s"},
            # Nothing listens there: connections are refused, so the gateway answers 502.
            "dead": {"url": f"http://127.0.0.1:{free_port()}", "connect_timeout": "1s"},
        },
        "routes": [
            {"name": "api", "match": {"prefix": "/api"}, "backend": "api"},
            {"name": "dead", "match": {"prefix": "/dead"}, "backend": "dead"},
        ],
    }


def requests_total(admin_url: str, at_least: int) -> float:
    """edgegw_requests_total summed over workers, once it reaches ``at_least`` or after 5 s
    (workers hand their samples over within metrics.FLUSH_SECONDS)."""
    deadline = time.monotonic() + 5
    while True:
        text = httpx.get(admin_url + "/metrics", timeout=10).text
        lines = [line for line in text.splitlines() if line.startswith("edgegw_requests_total")]
        total = sum(float(line.rsplit(" ", 1)[1]) for line in lines)
        if total >= at_least or time.monotonic() > deadline:
            return total
        time.sleep(0.1)


def worker_policies(supervisor: int) -> set[int]:
    """The CPU scheduling policies of every thread of the supervisor's descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    policies: set[int] = set()
    pending = list(children.get(supervisor, []))
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        for tid in os.listdir(f"/proc/{pid}/task"):
            policies.add(os.sched_getscheduler(int(tid)))
    return policies


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
def test_smoke(
    server: str, run_gateway: RunGateway, backend_factory: MakeBackend, tmp_path: Path
) -> None:
    backend = backend_factory(name="api")
    runtime = tmp_path / "runtime"
    gw = run_gateway(
        gateway_config(backend, server=server), env={"EDGEGW_RUNTIME_DIR": str(runtime)}
    )
    assert (runtime / "prometheus").is_dir()
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        r = client.get("/api/hello?x=1", headers={"x-test": "yes"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert (doc["method"], doc["path"], doc["query"]) == ("GET", "/api/hello", "x=1")
        assert ["x-test", "yes"] in doc["headers"]

        r = client.post("/api/items", content=b'{"name": "widget"}',
                        headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["method"] == "POST"
        assert r.json()["body"] == '{"name": "widget"}'

        r = client.get("/no/such/route")
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 404

        r = client.get("/dead/x")
        assert r.status_code == 502
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 502

    assert len(backend.requests) == 2
    with httpx.Client(base_url=gw.admin_url, timeout=10) as admin:
        assert admin.get("/healthz").json() == {"status": "ok"}
        assert admin.get("/readyz").status_code == 200
    assert requests_total(gw.admin_url, 2) >= 2
    # Linux: workers run under SCHED_BATCH by default (sched_batch, server._sched_batch).
    assert worker_policies(gw.proc.pid) == {os.SCHED_BATCH}

    assert gw.stop(signal.SIGTERM) == 0, gw.output()
    # The supervisor cleans the metrics files it exported; a non-owned runtime dir stays.
    assert not (runtime / "prometheus").exists()
    assert runtime.is_dir()


def test_granian_two_workers(run_gateway: RunGateway, backend_factory: MakeBackend) -> None:
    backend = backend_factory(name="api")
    gw = run_gateway(gateway_config(backend, sched_batch=False), "--workers", "2")
    n = 20
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for i in range(n):
            r = client.get(f"/api/n/{i}", headers={"connection": "close"})
            assert r.status_code == 200, r.text
            assert r.json()["path"] == f"/api/n/{i}"
    # /metrics on the supervisor sums every worker's counters.
    assert requests_total(gw.admin_url, n) == n
    assert "worker-2" in gw.output()
    assert worker_policies(gw.proc.pid) == {os.SCHED_OTHER}  # sched_batch: false
    assert gw.stop(signal.SIGINT) == 0, gw.output()


def test_sigterm_stops_gateway_without_admin(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    backend = backend_factory(name="api")
    config = gateway_config(backend, listen=f"127.0.0.1:{free_port()}")
    config["admin"] = None
    gw = run_gateway(config)
    assert gw.admin_port is None
    assert httpx.get(gw.url + "/api/ok", timeout=10).status_code == 200
    assert gw.stop(signal.SIGTERM) == 0, gw.output()
