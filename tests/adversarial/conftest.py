"""Fixtures for the adversarial suite: hostile bytes on raw sockets, loopback only.

Every test here sends what an attacker would (raw HTTP/1.1 on a socket, a backend that
misbehaves on purpose) and checks the gateway's answer and what reached the backend.
Tests that depend on the HTTP server run under both servers (``server_kind``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest


@pytest.fixture(params=["granian", "hypercorn"])
def server_kind(request: pytest.FixtureRequest) -> str:
    """The value of gateway.yaml's ``server:`` key; a test using it runs under both."""
    return str(request.param)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """Send ``data`` as is on a new connection to ``host:port`` and return every byte the
    peer sends until it closes or ``timeout`` seconds pass without a byte."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    """The status code of the first response in ``response`` (0 when there is none)."""
    parts = response.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


@dataclass
class RawBackend:
    """A backend on 127.0.0.1 that records the exact bytes each connection sent and
    answers every read with ``reply(received_so_far)`` (bytes, or None to stay silent)."""

    reply: Callable[[bytes], bytes | None]
    port: int = 0
    received: list[bytearray] = field(default_factory=list)
    _server: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _closing: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        assert self._server is not None
        while not self._closing:
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            buf = bytearray()
            self.received.append(buf)
            t = threading.Thread(target=self._serve, args=(conn, buf), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, buf: bytearray) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self._closing:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                out = self.reply(bytes(buf))
                if out:
                    try:
                        conn.sendall(out)
                    except OSError:
                        return

    def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for t in self._threads:
            t.join(2)


@pytest.fixture
def raw_backend() -> Iterator[Callable[[Callable[[bytes], bytes | None]], RawBackend]]:
    """``raw_backend(reply)`` -> a started RawBackend; all are closed after the test."""
    made: list[RawBackend] = []

    def make(reply: Callable[[bytes], bytes | None]) -> RawBackend:
        b = RawBackend(reply)
        b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
