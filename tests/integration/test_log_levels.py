"""Filter log levels of a real ``edgegw serve``: the command line's, a filter's
``log_level`` and the admin API's overrides (edgegw/observe/loglevels.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import GatewayProcess, LoopbackBackend
from tests.wat import proxy_wat, write_wasm

RunGateway = Callable[..., GatewayProcess]
MakeBackend = Callable[..., LoopbackBackend]
TIMEOUT = 10.0
TOKEN = "t0ken-for-levels"

# Logs "debug-line" at debug (1) and "info-line" at info (2) on each request's headers.
TALKER = proxy_wat(
    '(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))',
    """
  (data (i32.const 1024) "debug-line")
  (data (i32.const 1100) "info-line")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $log (i32.const 1) (i32.const 1024) (i32.const 10)))
    (drop (call $log (i32.const 2) (i32.const 1100) (i32.const 9)))
    i32.const 0)
""",
)


def config(backend: LoopbackBackend, wasm: Path, **spec: Any) -> dict[str, Any]:
    return {
        "sched_batch": False,
        "access_log": False,
        "admin": {"token": TOKEN},
        "backends": {"api": {"url": backend.url}},
        "filters": {"talk": {"wasm": str(wasm), **spec}},
        "routes": [{"name": "r", "match": {"prefix": "/"}, "filters": ["talk"], "backend": "api"}],
    }


def lines_of(gw: GatewayProcess, client: httpx.Client, rid: str) -> set[str]:
    """The talker's lines of one request (waits for the request's own log to settle)."""
    assert client.get("/", headers={"x-request-id": rid}).status_code == 200
    found: set[str] = set()
    deadline = time.monotonic() + 1.0  # logging is synchronous: lines are out by now
    while time.monotonic() < deadline:
        found = {
            word
            for line in gw.output().splitlines()
            if line.endswith(f"request_id={rid}")
            for word in ("debug-line", "info-line")
            if word in line
        }
        if len(found) == 2:
            break
        time.sleep(0.05)
    return found


def test_command_line_level_shows_debug_lines(
    run_gateway: RunGateway, backend_factory: MakeBackend, tmp_path: Path
) -> None:
    wasm = write_wasm(tmp_path, "talker", TALKER)
    gw = run_gateway(config(backend_factory(), wasm), "--log-level", "debug")
    with httpx.Client(base_url=gw.url, timeout=TIMEOUT) as client:
        assert lines_of(gw, client, "cli-1") == {"debug-line", "info-line"}, gw.output()


def test_default_info_then_filter_level_then_admin_override(
    run_gateway: RunGateway, backend_factory: MakeBackend, tmp_path: Path
) -> None:
    wasm = write_wasm(tmp_path, "talker", TALKER)
    gw = run_gateway(config(backend_factory(), wasm, log_level="error"))
    admin = httpx.Client(
        base_url=f"http://127.0.0.1:{gw.admin_port}",
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=40,
    )
    with httpx.Client(base_url=gw.url, timeout=TIMEOUT) as client, admin:
        assert lines_of(gw, client, "yaml-error") == set(), gw.output()
        # Raised by the admin API: the yaml's level is overridden in every worker.
        r = admin.put("/admin/log-levels", json={"edgegw.filter.talk": "debug"})
        assert r.status_code == 200, r.text
        assert r.json()["overrides"] == {"edgegw.filter.talk": "debug"}
        assert lines_of(gw, client, "admin-debug") == {"debug-line", "info-line"}
        assert admin.get("/admin/log-levels").json() == {
            "overrides": {"edgegw.filter.talk": "debug"},
            "filters": {"talk": "error"},
        }
        # Dropped: back to the yaml's level.
        assert admin.put("/admin/log-levels", json={"edgegw.filter.talk": None}).status_code == 200
        assert lines_of(gw, client, "back-to-error") == set()
        # Changed by a reload: log_level: info in gateway.yaml.
        gw.config_path.write_text(
            gw.config_path.read_text().replace("log_level: error", "log_level: info")
        )
        assert admin.post("/admin/reload").status_code == 200
        assert lines_of(gw, client, "reloaded-info") == {"info-line"}
        bad = admin.put("/admin/log-levels", json={"edgegw.filter.talk": "loud"})
        assert bad.status_code == 400 and "unknown level" in bad.text
        unauthorized = httpx.put(
            f"http://127.0.0.1:{gw.admin_port}/admin/log-levels", json={"edgegw": "debug"}
        )
        assert unauthorized.status_code == 401
