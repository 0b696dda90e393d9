"""Shared fixtures for the whole suite.

Sections (add yours as a new section; do not rewrite others'):
  1. ports            free_port()
  2. loopback backends  backend_factory: aiohttp echo servers in a thread (slow / failing)
  3. redis            redis_server (session): a real redis-server on a free port
  4. gateway process  run_gateway: `python -m edgegw serve` as a real subprocess
  5. test filters     test_wasm: tests/wasm/*.zig built with the pinned Zig
  6. never-accepting  full_listener: a port whose connections hang (connect timeouts)
  7. backend processes  procs(n): tests/lb_backend.py on loopback ports (kill, restart)
  8. in process       asgi_client(app): an httpx client calling a GatewayApp via ASGI
  9. OTLP receiver    otlp_receiver: decodes OTLP/HTTP trace exports (tests/otlp.py)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# Each folder of tests/ is a kind of test and a marker of the same name (pyproject.toml):
# `pytest -m unit` is the quick loop (`make test-fast`), the rest start real processes.
SUITES = ("unit", "integration", "conformance", "adversarial", "filters", "ui")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(REPO / "tests").parts
        if len(parts) > 1 and parts[0] in SUITES:
            item.add_marker(parts[0])


# ---------------------------------------------------------------------------------------
# 1. ports
# ---------------------------------------------------------------------------------------


# free_port() hands out ports below Linux's ephemeral range (net.ipv4.ip_local_port_range,
# 32768-60999 by default), where the kernel never puts a client socket or a port-0
# listener, in a slice of its own for each pytest-xdist worker. A port picked by binding
# port 0 could be taken, before the server bound it, by another worker's connection
# (thousands in tests/adversarial/test_exhaustion.py) or free_port(): "address already
# in use" under `make test`'s parallel workers.
_PORT_BASE, _PORT_SPAN = 20000, 12000
_port_cursor = [random.randrange(1 << 16)]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bound, then closed), from this worker's slice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    index = int(worker) if worker.isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    size = _PORT_SPAN // max(count, index + 1)
    for _ in range(size):
        port = _PORT_BASE + index * size + _port_cursor[0] % size
        _port_cursor[0] += 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # the slice is all taken
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something truthy (bounded); returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def wait_port(host: str, port: int, deadline: float) -> bool:
    """Poll until ``host:port`` accepts a connection or ``deadline`` (monotonic) passes."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------
# 2. loopback backends
# ---------------------------------------------------------------------------------------


class LoopThread:
    """An asyncio loop in a daemon thread, so servers keep answering while a test blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class LoopbackBackend:
    """An aiohttp.web echo server on 127.0.0.1 (port 0).

    Answers ``{"method", "path", "raw_path", "query", "headers": [[name, value], ...],
    "body"}`` as JSON with ``status``, after ``delay`` seconds. Tweak the attributes
    between requests to make it slow or failing; ``fail_connection=True`` drops
    connections without answering.
    ``requests`` records what arrived (same JSON shape).
    """

    name: str = "backend"
    status: int = 200
    delay: float = 0.0
    fail_connection: bool = False
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        doc = {
            "backend": self.name,
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,  # path and query exactly as received
            "query": request.query_string,
            "headers": [[k.lower(), v] for k, v in request.headers.items()],
            "body": body.decode("utf-8", "replace"),
        }
        self.requests.append(doc)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_connection and request.transport is not None:
            request.transport.abort()
            return web.Response(status=500)
        resp = web.json_response(doc, status=self.status)
        for k, v in self.extra_headers:
            resp.headers.add(k, v)
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
def backend_factory() -> Iterator[Callable[..., LoopbackBackend]]:
    """``backend_factory(name="users", status=200, delay=0.0)`` -> a started LoopbackBackend."""
    lt = LoopThread()
    started: list[LoopbackBackend] = []

    def make(**kwargs: Any) -> LoopbackBackend:
        backend = LoopbackBackend(**kwargs)
        lt.run(backend.start())
        started.append(backend)
        return backend

    yield make
    for backend in started:
        lt.run(backend.stop())
    lt.close()


# ---------------------------------------------------------------------------------------
# 3. redis
# ---------------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    # In CI a missing dependency is a failure, never a silent skip.
    if os.environ.get("CI"):
        pytest.fail(f"redis-server required in CI: {reason}")
    pytest.skip(reason)


def start_redis(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:``port`` keeping nothing on disk; waits until it
    accepts connections (bounded). Fails (CI) or skips (elsewhere) if it cannot start."""
    exe = shutil.which("redis-server")
    if exe is None:
        _unavailable("redis-server not found on PATH (apt-get install redis-server)")
        raise AssertionError("unreachable")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"redis-{port}.log"
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(workdir)]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    if not wait_port("127.0.0.1", port, time.monotonic() + 15) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        _unavailable(f"redis-server did not start on port {port}:\n{log.read_text()}")
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (redis://127.0.0.1:PORT/0) of a private redis-server for this test session.
    Tests share it: give each its own key prefix."""
    port = free_port()
    proc = start_redis(tmp_path_factory.mktemp("redis"), port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


# ---------------------------------------------------------------------------------------
# 4. gateway process
# ---------------------------------------------------------------------------------------


@dataclass
class GatewayProcess:
    """A running ``python -m edgegw serve`` subprocess."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    host: str
    port: int
    admin_port: int | None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        assert self.admin_port is not None, "this gateway has no admin listener"
        return f"http://{self.host}:{self.admin_port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the supervisor and wait; returns its exit code (kills after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def _split_addr(text: str) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    return host.strip("[]"), int(port)


# Set by a supervisor for its workers; a test's gateway must not inherit the test runner's.
_PRIVATE_ENV = ("EDGEGW_RUNTIME_DIR", "EDGEGW_CONFIG", "PROMETHEUS_MULTIPROC_DIR")


@pytest.fixture
def run_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """``run_gateway(config, *args, env=None, wait=90)`` -> a serving GatewayProcess.

    ``config`` is a dict (``listen`` and ``admin.listen`` get free ports when absent;
    ``admin: None`` leaves the admin listener out) or
    YAML text with literal addresses. Extra ``args`` go to ``edgegw serve``. Waits (bounded)
    until the data and admin ports accept connections; fails with the process output if not.
    Every gateway is stopped with SIGTERM after the test.
    """
    running: list[GatewayProcess] = []

    def start(
        config: dict[str, Any] | str, *args: str, env: dict[str, str] | None = None,
        wait: float = 90,
    ) -> GatewayProcess:  # fmt: skip
        if isinstance(config, str):
            text, doc = config, yaml.safe_load(config)
        else:
            doc = json.loads(json.dumps(config))  # deep copy, plain types only
            doc.setdefault("version", 1)
            doc.setdefault("listen", f"127.0.0.1:{free_port()}")
            if "admin" in doc and doc["admin"] is None:
                del doc["admin"]  # admin=None: no admin listener at all
            else:
                doc.setdefault("admin", {}).setdefault("listen", f"127.0.0.1:{free_port()}")
            text = yaml.safe_dump(doc, sort_keys=False)
        n = len(running)
        config_path = tmp_path / f"gateway{n}.yaml"
        config_path.write_text(text)
        log_path = tmp_path / f"gateway{n}.log"
        host, port = _split_addr(doc["listen"])
        admin_listen = (doc.get("admin") or {}).get("listen")
        admin_port = _split_addr(admin_listen)[1] if admin_listen else None
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_ENV)}
        full_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgegw", "serve", "-c", str(config_path), *args],
                cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        gw = GatewayProcess(proc, config_path, log_path, host, port, admin_port)
        running.append(gw)
        deadline = time.monotonic() + wait
        for p in (port, admin_port):
            if p is None:
                continue
            while not wait_port(host, p, min(deadline, time.monotonic() + 1)):
                if proc.poll() is not None or time.monotonic() >= deadline:
                    gw.stop()
                    pytest.fail(
                        f"gateway did not open {host}:{p} (exit={proc.returncode})\n"
                        f"--- config ---\n{text}\n--- output ---\n{gw.output()}"
                    )
        return gw

    yield start
    for gw in running:
        gw.stop()


# ---------------------------------------------------------------------------------------
# 5. test filters (tests/wasm/*.zig, raw proxy-wasm ABI) and in-process gateways
# ---------------------------------------------------------------------------------------

TEST_WASM = REPO / "tests" / "wasm"


@pytest.fixture(scope="session")
def test_wasm(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``test_wasm("faulty")`` -> tests/wasm/faulty.zig (or bench/filters/NAME.zig)
    compiled with the pinned Zig."""
    out = tmp_path_factory.mktemp("wasm")
    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            target = out / f"{name}.wasm"
            source = TEST_WASM / f"{name}.zig"
            if not source.exists():
                source = REPO / "bench" / "filters" / f"{name}.zig"
            cmd = [sys.executable, "-m", "ziglang", "build-exe", str(source)]
            cmd += ["-target", "wasm32-freestanding", "-fno-entry", "-rdynamic"]
            cmd += ["-O", "ReleaseSmall", f"-femit-bin={target}", "--cache-dir", str(out / "zc")]
            subprocess.run(cmd, check=True, capture_output=True)
            built[name] = target
        return built[name]

    return build


# ---------------------------------------------------------------------------------------
# 6. a listener that never accepts (connect timeouts)
# ---------------------------------------------------------------------------------------


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A 127.0.0.1 port whose accept queue is full: a new connection hangs in SYN, so a
    client sees a connect timeout (not a refusal)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers = []
    for _ in range(3):  # the kernel accepts backlog+1 handshakes; the rest wait
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    yield port
    for c in fillers:
        c.close()
    server.close()


# ---------------------------------------------------------------------------------------
# 7. backend processes for load balancing (tests/lb_backend.py)
# ---------------------------------------------------------------------------------------


@dataclass
class Proc:
    """One backend process; ``kill`` is SIGKILL (a crash), ``start`` brings it back."""

    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, str(REPO / "tests" / "lb_backend.py"), str(self.port), self.name]
        self.proc = subprocess.Popen(cmd, cwd=REPO)
        if not wait_port("127.0.0.1", self.port, time.monotonic() + 30):
            self.kill()
            pytest.fail(f"backend {self.name} did not start on {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def control(self, **values: Any) -> None:
        data = json.dumps(values).encode()
        urllib.request.urlopen(f"{self.url}/_control", data, timeout=5).read()

    def count(self) -> int:
        with urllib.request.urlopen(f"{self.url}/_count", timeout=5) as resp:
            return int(json.loads(resp.read())["count"])


@pytest.fixture
def procs() -> Iterator[Callable[[int], list[Proc]]]:
    started: list[Proc] = []

    def make(count: int) -> list[Proc]:
        new = [Proc(f"e{len(started) + i}", free_port()) for i in range(count)]
        for proc in new:
            proc.start()
            started.append(proc)
        return new

    yield make
    for proc in started:
        proc.kill()


# ---------------------------------------------------------------------------------------
# 8. in-process gateways: an httpx client calling a GatewayApp through ASGI
# ---------------------------------------------------------------------------------------


@pytest.fixture
async def asgi_client() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """``asgi_client(app, peer=("203.0.113.7", 5555), base_url="http://gw")`` -> an httpx
    client that calls ``app`` (a GatewayApp) in process, as a client at ``peer``. Run
    ``await app.startup()`` first when the test needs it (filters, store). Every client
    and app is closed after the test."""
    made: list[tuple[Any, httpx.AsyncClient]] = []

    def make(
        app: Any, peer: tuple[str, int] = ("203.0.113.7", 5555), base_url: str = "http://gw.test"
    ) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=peer)
        client = httpx.AsyncClient(transport=transport, base_url=base_url)
        made.append((app, client))
        return client

    yield make
    for app, client in made:
        await client.aclose()
        await app.aclose()


# ---------------------------------------------------------------------------------------
# 9. OTLP receiver
# ---------------------------------------------------------------------------------------


@pytest.fixture
def otlp_receiver() -> Iterator[Any]:
    """A real OTLP/HTTP trace receiver on loopback (tests/otlp.py): ``.url`` for
    ``tracing.otlp_endpoint``, ``.spans`` decoded, ``.wait(predicate)``."""
    from tests.otlp import Receiver

    receiver = Receiver()
    yield receiver
    receiver.close()
