"""Fixtures for the adversarial suite: hostile bytes on raw sockets, loopback only.

Every test here sends what an attacker would (raw HTTP/1.1 on a socket, a backend that
misbehaves on purpose) and checks the gateway's answer and what reached the backend.
Tests that depend on the HTTP server run under both servers (``server_kind``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, free_port, stop_process, wait_port


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


def complete_requests(received: bytes) -> list[tuple[bytes, bytes]]:
    """The complete HTTP/1.1 requests in ``received``: ``(head, body)`` pairs, the body
    de-chunked. A backend's view, framed by its own headers as a backend would frame it."""
    out: list[tuple[bytes, bytes]] = []
    rest = received
    while b"\r\n\r\n" in rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        fields = [line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line]
        names = {n.strip().lower(): v.strip() for n, v in fields}
        if names.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while True:
                size_line, sep, rest = rest.partition(b"\r\n")
                if not sep:
                    return out
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    if not rest.startswith(b"\r\n"):
                        return out
                    rest = rest[2:]
                    break
                if len(rest) < size + 2:
                    return out
                body, rest = body + rest[:size], rest[size + 2 :]
        else:
            size = int(names.get(b"content-length", b"0"))
            if len(rest) < size:
                return out
            body, rest = rest[:size], rest[size:]
        out.append((head, body))
    return out


def ok_when_complete(received: bytes) -> bytes | None:
    """A RawBackend reply: 200 "ok" (then close) once a whole request arrived."""
    if complete_requests(received):
        return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    return None


@dataclass
class SharedGateway:
    """A gateway process shared by the tests of a module (starting one costs seconds)."""

    server: str
    port: int
    backends: dict[str, RawBackend]
    proc: subprocess.Popen[bytes]

    def received(self, name: str = "b") -> bytes:
        return b"".join(bytes(c) for c in self.backends[name].received)

    def reset(self) -> None:
        for backend in self.backends.values():
            backend.received.clear()


def start_shared_gateway(
    workdir: Path, server: str, doc: dict[str, Any], backends: dict[str, RawBackend]
) -> SharedGateway:
    """``python -m edgegw serve`` for ``doc`` (listen, server and admin filled in); fails
    the test with the output if it does not open its port in time (bounded)."""
    port = free_port()
    doc = {**json.loads(json.dumps(doc)), "version": 1, "listen": f"127.0.0.1:{port}",
           "server": server}  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"gateway-{server}.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    log = workdir / f"gateway-{server}.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EDGEGW_", "PROMETHEUS_MULTIPROC_DIR"))}  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgegw", "serve", "-c", str(config)],
            cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if not wait_port("127.0.0.1", port, time.monotonic() + 90) or proc.poll() is not None:
        stop_process(proc)
        pytest.fail(f"gateway did not start:\n{log.read_text(errors='replace')}")
    return SharedGateway(server, port, backends, proc)
