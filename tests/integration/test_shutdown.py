"""Graceful shutdown: on SIGTERM a gateway stops accepting, lets the requests in flight
finish (bounded by ``drain_timeout``) and exits 0, so a rolling restart loses nothing."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import GatewayProcess, LoopbackBackend, free_port

RunGateway = Callable[..., GatewayProcess]
MakeBackend = Callable[..., LoopbackBackend]


def gateway_config(backend: LoopbackBackend, **top: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "access_log": False,
        "sched_batch": False,
        **top,
        "backends": {"api": {"url": backend.url, "timeout": "20s"}},
        "routes": [{"name": "api", "match": {"prefix": "/"}, "backend": "api"}],
    }


def get(port: int, path: str, timeout: float = 30) -> tuple[int, bytes]:
    """One request on its own connection. ConnectionRefusedError propagates from the
    connect alone, so a caller can tell "not accepted" from "accepted, then lost"."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.connect()
        conn.request("GET", path, headers={"connection": "close"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
def test_request_in_flight_during_sigterm_completes(
    server: str, run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    backend = backend_factory(name="slow", delay=2.0)
    gw = run_gateway(gateway_config(backend, server=server, drain_timeout="20s", admin=None))
    answers: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            answers.append(get(gw.port, "/slow"))
        except Exception as exc:  # reported by the assertions below
            errors.append(exc)

    client = threading.Thread(target=call)
    client.start()
    deadline = time.monotonic() + 20
    while not backend.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.requests, "the request never reached the backend"
    gw.proc.send_signal(signal.SIGTERM)  # the backend is still sleeping on it
    client.join(30)
    assert errors == [] and len(answers) == 1, (errors, gw.output())
    assert answers[0][0] == 200, answers
    assert b'"path": "/slow"' in answers[0][1]
    assert gw.stop(timeout=30) == 0, gw.output()
    with pytest.raises(ConnectionRefusedError):  # and it no longer accepts
        get(gw.port, "/after")


class AlternatingClient:
    """Requests alternating between replicas, as a load balancer sends them: a refused
    connection is retried on the other replica (nothing was sent); any failure after a
    replica accepted the connection is a lost request."""

    def __init__(self, ports: list[int], threads: int = 4) -> None:
        self.ports = ports
        self.ok = 0
        self.refused = 0
        self.lost: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, offset: int) -> None:
        n = offset
        while not self._stop.is_set() and self.ok < 20000:
            n += 1
            for attempt in range(len(self.ports) * 20):
                port = self.ports[(n + attempt) % len(self.ports)]
                try:
                    status, _body = get(port, f"/r{n}")
                except ConnectionRefusedError:
                    with self._lock:
                        self.refused += 1
                    time.sleep(0.01)
                    continue
                except Exception as exc:
                    with self._lock:
                        self.lost.append(f"port {port}: {exc!r}")
                    break
                with self._lock:
                    if status == 200:
                        self.ok += 1
                    else:
                        self.lost.append(f"port {port}: status {status}")
                break
            else:
                with self._lock:
                    self.lost.append("every replica refused")

    def __enter__(self) -> AlternatingClient:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        target = self.ok + count
        while self.ok < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.ok >= target, f"only {self.ok} answers; lost: {self.lost[:5]}"


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
def test_rolling_restart_of_one_replica_loses_no_request(
    server: str, run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    backend = backend_factory(name="api", delay=0.05)  # requests are in flight at SIGTERM
    ports = [free_port(), free_port()]
    configs = [
        gateway_config(backend, server=server, listen=f"127.0.0.1:{port}", admin=None)
        for port in ports
    ]
    replicas = [run_gateway(c) for c in configs]
    with AlternatingClient(ports) as client:
        client.wait_for(50)
        assert replicas[0].stop(signal.SIGTERM, timeout=30) == 0, replicas[0].output()
        client.wait_for(50)  # the other replica carries the load alone
        replicas[0] = run_gateway(configs[0])
        client.wait_for(50)
    assert client.lost == [], client.lost[:10]
    assert client.refused > 0  # the restart was seen: refused connections went elsewhere
    assert replicas[1].proc.poll() is None
