"""The access log of a real ``edgegw serve``: nothing lost on SIGTERM, reopened on SIGUSR1."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess, LoopbackBackend, wait_for

RunGateway = Callable[..., GatewayProcess]
MakeBackend = Callable[..., LoopbackBackend]
TIMEOUT = 10.0


def config(backend: LoopbackBackend, log: Path, **top: Any) -> dict[str, Any]:
    return {
        "sched_batch": False,
        "access_log": {"path": str(log)},
        **top,
        "backends": {"api": {"url": backend.url}},
        "routes": [{"name": "api", "match": {"prefix": "/"}, "backend": "api"}],
    }


def ids_in(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [json.loads(line)["request_id"] for line in log.read_text().splitlines()]


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
def test_sigterm_writes_every_pending_line(
    server: str, run_gateway: RunGateway, backend_factory: MakeBackend, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gw = run_gateway(config(backend_factory(), log, server=server, admin=None))
    sent = [f"term-{i}" for i in range(40)]
    with httpx.Client(base_url=gw.url, timeout=TIMEOUT) as client:
        for rid in sent:
            assert client.get("/x", headers={"x-request-id": rid}).status_code == 200
    # At once: the lines are still in the worker's buffer (flushed every 0.2 s).
    assert gw.stop(signal.SIGTERM) == 0, gw.output()
    assert ids_in(log) == sent, gw.output()


def test_sigusr1_reopens_the_file_after_rotation(
    run_gateway: RunGateway, backend_factory: MakeBackend, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    runtime = tmp_path / "runtime"
    env = {"EDGEGW_RUNTIME_DIR": str(runtime)}
    gw = run_gateway(config(backend_factory(), log, admin=None, workers=2), env=env)
    with httpx.Client(base_url=gw.url, timeout=TIMEOUT) as client:
        assert client.get("/", headers={"x-request-id": "before"}).status_code == 200
        assert wait_for(lambda: ids_in(log) == ["before"], 20), gw.output()
        log.rename(rotated)  # logrotate's rename, then its postrotate: kill -USR1
        gw.proc.send_signal(signal.SIGUSR1)
        assert wait_for((runtime / "reopen-logs").exists, 20), gw.output()  # the handler ran
        after = [f"after-{i}" for i in range(6)]  # over both workers
        for rid in after:
            assert client.get("/", headers={"x-request-id": rid}).status_code == 200
    assert wait_for(lambda: sorted(ids_in(log)) == after, 20), (ids_in(log), gw.output())
    assert ids_in(rotated) == ["before"]
    assert gw.proc.poll() is None  # SIGUSR1 killed nothing
