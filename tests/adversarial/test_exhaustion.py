"""Clients that take resources and leave, or never use them (issue #15, items 2 and 3).

A client that leaves must not leave work behind: its backend exchange is aborted, the
upstream connection closed and its pool slot freed, and the access log says 499. Idle
and silent connections must not lock other clients out.
"""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.adversarial.conftest import RawBackend, raw_exchange, status_of
from tests.conftest import GatewayProcess


@dataclass
class EndlessBackend:
    """A backend on 127.0.0.1 answering every request with a chunked body that never
    ends (bounded: it gives up after ``limit`` seconds); ``closed`` is set when the
    gateway closes a connection it was streaming to."""

    limit: float = 60.0
    port: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    streaming: threading.Event = field(default_factory=threading.Event)
    _server: socket.socket | None = None
    _stop: bool = False

    def start(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop:
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._stream, args=(conn,), daemon=True).start()

    def _stream(self, conn: socket.socket) -> None:
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        deadline = time.monotonic() + self.limit
        with conn:
            conn.settimeout(5)
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
                conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                self.streaming.set()
                while not self._stop and time.monotonic() < deadline:
                    conn.sendall(chunk)
            except OSError:  # reset or closed by the gateway
                self.closed.set()

    def close(self) -> None:
        self._stop = True
        if self._server is not None:
            self._server.close()


@pytest.fixture
def endless_backend() -> Iterator[EndlessBackend]:
    backend = EndlessBackend()
    backend.start()
    yield backend
    backend.close()


def _access_statuses(gw: GatewayProcess) -> list[int]:
    statuses = []
    for line in gw.output().splitlines():
        if line.startswith("{") and '"status"' in line:
            statuses.append(int(json.loads(line)["status"]))
    return statuses


def _wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_client_leaving_a_streamed_response_closes_the_backend_connection(
    run_gateway: Callable[..., GatewayProcess], endless_backend: EndlessBackend, server_kind: str
) -> None:
    gw = run_gateway(
        {
            "server": server_kind,
            "workers": 1,
            "backends": {"endless": f"http://127.0.0.1:{endless_backend.port}"},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "endless"}],
        }
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        got = 0
        while got < 1024 * 1024:
            data = s.recv(65536)
            assert data, "the gateway closed the stream early"
            got += len(data)
    assert endless_backend.streaming.is_set()
    # Before: the backend streamed into the gateway until its own limit (a minute).
    assert endless_backend.closed.wait(15), gw.output()[-3000:]
    assert _wait_for(lambda: 499 in _access_statuses(gw), 10), gw.output()[-3000:]


def test_clients_leaving_before_headers_free_their_pool_slots(
    run_gateway: Callable[..., GatewayProcess],
    raw_backend: Callable[[Callable[[bytes], bytes | None]], RawBackend],
    server_kind: str,
) -> None:
    def reply(buf: bytes) -> bytes | None:
        if b"GET /hang " in buf or not buf.endswith(b"\r\n\r\n"):
            return None  # /hang is never answered: the gateway waits until its timeout
        return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    backend = raw_backend(reply)
    slots = 4
    gw = run_gateway(
        {
            "server": server_kind,
            "workers": 1,
            "backends": {"b": {"url": backend.url, "max_connections": slots, "timeout": "60s"}},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "b"}],
        }
    )
    leavers = []
    for _ in range(slots * 2):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
        leavers.append(s)
    assert _wait_for(lambda: len(backend.received) >= slots, 10)  # every slot is taken
    for s in leavers:
        s.close()
    # Before: every slot stayed taken until the backend's 60 s timeout.
    response = raw_exchange(
        gw.port, b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", 15
    )
    assert status_of(response) == 200, (response, gw.output()[-3000:])
    assert _wait_for(lambda: _access_statuses(gw).count(499) >= slots, 10), gw.output()[-3000:]


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """True when the peer closes ``s`` within ``seconds`` (whatever it sends first)."""
    s.settimeout(seconds)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:  # reset
        return True
    return True


def test_idle_and_slow_connections_are_closed(
    run_gateway: Callable[..., GatewayProcess],
    raw_backend: Callable[[Callable[[bytes], bytes | None]], RawBackend],
    server_kind: str,
) -> None:
    def reply(buf: bytes) -> bytes | None:
        return (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" if buf.endswith(b"\r\n\r\n") else None
        )

    gw = run_gateway(
        {
            "server": server_kind,
            "workers": 1,
            "limits": {"header_timeout": "1s", "idle_timeout": "1s"},
            "backends": {"b": raw_backend(reply).url},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "b"}],
        }
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as idle:
        idle.sendall(b"GET /once HTTP/1.1\r\nhost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        assert _closed_within(idle, 10), "an idle keep-alive connection stayed open"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as slow:
        slow.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n")  # the head never ends
        assert _closed_within(slow, 10), "a connection with an unfinished head stayed open"


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# Twice granian's old per-worker backpressure (1024 open connections with workers: 1, the
# lockout this test was written for) and twice a soft open-file limit of 1024: enough to
# prove the point. It was 5000; more connections only made the test slower.
HELD = 2048


def test_idle_and_silent_connections_do_not_lock_clients_out(
    run_gateway: Callable[..., GatewayProcess],
    raw_backend: Callable[[Callable[[bytes], bytes | None]], RawBackend],
    server_kind: str,
) -> None:
    _raise_nofile(HELD + 500)
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= HELD + 200, f"RLIMIT_NOFILE {soft} is too low for this test"

    def reply(buf: bytes) -> bytes | None:
        return (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" if buf.endswith(b"\r\n\r\n") else None
        )

    backend = raw_backend(reply)
    gw = run_gateway(
        {
            "server": server_kind,
            "workers": 1,
            "backends": {"b": backend.url},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "b"}],
        }
    )
    held: list[socket.socket] = []
    try:
        # Idle keep-alive connections: one request each, then nothing.
        idle = 300
        for _ in range(idle):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            s.sendall(b"GET /once HTTP/1.1\r\nhost: x\r\n\r\n")
            held.append(s)
        for s in held:
            assert s.recv(65536).startswith(b"HTTP/1.1 200"), "an idle client was not served"
        # Silent connections: TCP only, not one byte.
        while len(held) < HELD:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", gw.port))
            held.append(s)
        time.sleep(1.0)  # let the server accept what it will
        # Before: granian's default backpressure (backlog // workers = 1024 connections per
        # worker) made every new client wait for a slot (the header timeout, 30 s).
        probe = b"GET /probe HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        response = raw_exchange(gw.port, probe, timeout=5)
        assert status_of(response) == 200, (response, gw.output()[-3000:])
    finally:
        for s in held:
            s.close()
