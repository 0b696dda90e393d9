"""Probes for bench/store.py's flag propagation part: the echo backend and the pollers of
the replicas run in processes of their own, so what is timed is the gateways, not this
bench's threads.

Each poller is already requesting its replica in a loop when the edit is sent (it said
so first), and reports the CLOCK_MONOTONIC time (one clock for every process of the
host) at which the first response showing the flag ended. The figure is that time minus
the time the PUT was sent. An earlier version woke its polling threads with the edit:
with the bench's own GIL and a loaded host, their first request left 20-160 ms after the
edit, long after every replica had the flag in shared data (traced, docs/benchmarks.md).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any

import httpx

LOAD_CORE = 1  # as bench/harness.py's LOAD_CORE: wrk, nginx and these probes
WATCH_SECONDS = 5.0
_CTX = multiprocessing.get_context("spawn")  # no inherited threads or sockets


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        body = (self.headers.get("x-edgegw-flags") or "").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


def _pin() -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > LOAD_CORE:
        os.sched_setaffinity(0, {LOAD_CORE})


def _serve_echo(port: int) -> None:
    _pin()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Echo)
    server.daemon_threads = True
    server.serve_forever()


def _poll(port: int, conn: Connection) -> None:
    """Per command (a flag name): say "polling" after the first request, keep requesting
    until a response shows the flag on, send the monotonic ns its end was read at."""
    _pin()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        client.get("/")
        while True:
            flag = conn.recv()
            if flag is None:
                return
            want, told = f"{flag}=on", False
            deadline = time.monotonic() + WATCH_SECONDS
            seen: int | None = None
            while time.monotonic() < deadline:
                text = client.get("/").text
                if want in text:
                    seen = time.monotonic_ns()
                    break
                if not told:
                    conn.send("polling")
                    told = True
            if not told:
                conn.send("polling")  # seen at once: the flag was there before the edit
            conn.send(seen)


class Echo:
    """The echo backend in its own process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._proc: Any = _CTX.Process(target=_serve_echo, args=(port,), daemon=True)
        self._proc.start()

    def close(self) -> None:
        self._proc.terminate()
        self._proc.join(10)


class Pollers:
    """One polling process per replica port."""

    def __init__(self, ports: list[int]) -> None:
        self._links: list[tuple[Any, Connection]] = []
        for port in ports:
            mine, theirs = _CTX.Pipe()
            proc = _CTX.Process(target=_poll, args=(port, theirs), daemon=True)
            proc.start()
            self._links.append((proc, mine))

    def trial(self, edit: Any, flag: str) -> list[float]:
        """ms from calling ``edit()`` (which sends the PUT) to the end of the first
        response showing ``flag`` on each replica."""
        for _, conn in self._links:
            conn.send(flag)
        for _, conn in self._links:
            if conn.recv() != "polling":
                raise RuntimeError("a poller failed")
        start = time.monotonic_ns()
        edit()
        seen = [conn.recv() for _, conn in self._links]
        if any(s is None for s in seen):
            raise RuntimeError(f"flag {flag} never reached a replica")
        return [(s - start) / 1e6 for s in seen]

    def close(self) -> None:
        for proc, conn in self._links:
            conn.send(None)
            proc.join(10)
            if proc.is_alive():
                proc.terminate()


class WokenThreads:
    """The probe before: one thread per replica in this process, woken with the edit
    (kept to show what it measured, side by side)."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = ports

    def trial(self, edit: Any, flag: str) -> list[float]:
        seen: list[int] = []
        go = threading.Event()

        def poll(port: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                client.get("/")
                go.wait()
                deadline = time.monotonic() + WATCH_SECONDS
                while time.monotonic() < deadline:
                    if f"{flag}=on" in client.get("/").text:
                        seen.append(time.monotonic_ns())
                        return

        threads = [threading.Thread(target=poll, args=(p,)) for p in self._ports]
        for t in threads:
            t.start()
        time.sleep(0.05)
        start = time.monotonic_ns()
        go.set()
        edit()
        for t in threads:
            t.join()
        if len(seen) != len(self._ports):
            raise RuntimeError(f"flag {flag} never reached a replica")
        return [(s - start) / 1e6 for s in seen]

    def close(self) -> None:
        return
