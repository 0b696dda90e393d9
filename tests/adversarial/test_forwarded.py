"""Client addresses: the X-Forwarded-For filters read is the one the backend gets (the
peer appended), and client-chosen rate-limit keys cannot grow the gateway's memory.

Raw sockets send the spoofed headers; a loopback backend records what it received.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgegw.filterbuild import build_all
from tests.adversarial.conftest import RawBackend, raw_exchange, status_of
from tests.conftest import REPO, GatewayProcess, LoopbackBackend

OK_AND_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def rate_limited(
    backend: LoopbackBackend | RawBackend, config: dict[str, Any], **top: Any
) -> dict[str, Any]:
    [wasm] = build_all(
        REPO / "filters", REPO / "filters" / "dist", lambda _m: None, only=["rate_limit"]
    )
    return {
        "backends": {"api": {"url": backend.url}},
        "filters": {"ratelimit": {"wasm": str(wasm), "config": config}},
        "routes": [{"match": {"prefix": "/"}, "filters": ["ratelimit"], "backend": "api"}],
        "access_log": False,
        **top,
    }


def get(gw: GatewayProcess, **headers: str) -> int:
    lines = ["GET /x HTTP/1.1", "Host: gw.test", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return status_of(raw_exchange(gw.port, ("\r\n".join(lines) + "\r\n\r\n").encode()))


def forwarded_for(backend: LoopbackBackend) -> list[str]:
    return [v for r in backend.requests for n, v in r["headers"] if n == "x-forwarded-for"]


def test_a_spoofed_forwarded_for_is_not_a_new_client(
    run_gateway: Callable[..., GatewayProcess], backend_factory: Callable[..., LoopbackBackend]
) -> None:
    backend = backend_factory()
    policy = {"name": "ip", "rate": 2, "period": "1h"}
    gw = run_gateway(rate_limited(backend, {"trusted_hops": 1, "policies": [policy]}))
    # Before: the filter read the client's own X-Forwarded-For (the peer was appended
    # only on the way to the backend), so every new value was a new, unlimited client.
    statuses = [get(gw, x_forwarded_for=f"198.51.100.{i}") for i in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    assert forwarded_for(backend) == ["127.0.0.1", "127.0.0.1"]  # replaced: untrusted peer


def test_behind_a_trusted_proxy_only_its_entry_counts(
    run_gateway: Callable[..., GatewayProcess], backend_factory: Callable[..., LoopbackBackend]
) -> None:
    backend = backend_factory()
    policy = {"name": "ip", "rate": 1, "period": "1h"}
    config = {"trusted_hops": 2, "policies": [policy]}  # our proxy, then the gateway itself
    gw = run_gateway(rate_limited(backend, config, trusted_proxies=["127.0.0.1/32"]))
    # The proxy (this test) appended 10.0.0.1, the address it saw; what is left of it
    # is the client's to write. Before: hop 2 was the client's own entry.
    assert get(gw, x_forwarded_for="6.6.6.6, 10.0.0.1") == 200
    assert get(gw, x_forwarded_for="7.7.7.7, 10.0.0.1") == 429
    assert get(gw, x_forwarded_for="10.0.0.2") == 200
    assert forwarded_for(backend) == ["6.6.6.6, 10.0.0.1, 127.0.0.1", "10.0.0.2, 127.0.0.1"]


def _rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (the server's workers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # gone meanwhile
            continue
        rss = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        total += int(rss.split()[1]) * 1024
    return total


def test_client_chosen_keys_do_not_grow_memory(
    run_gateway: Callable[..., GatewayProcess],
    raw_backend: Callable[[Callable[[bytes], bytes | None]], RawBackend],
) -> None:
    # A raw backend: aiohttp's refuses header lines over 8 KB.
    backend = raw_backend(lambda got: OK_AND_CLOSE if got.endswith(b"\r\n\r\n") else None)
    policy = {"name": "key", "rate": 1000, "period": "1h", "key": ["header:x-api-key"]}
    gw = run_gateway(rate_limited(backend, {"policies": [policy]}))
    big = "k" * 48_000

    def burst(start: int, count: int) -> None:
        for i in range(start, start + count):
            assert get(gw, x_api_key=f"{i}-{big}") == 200

    burst(0, 100)  # warm up: allocator pools, VM memory, connection pools
    before = _rss_bytes(gw.proc.pid)
    burst(100, 300)
    grown = _rss_bytes(gw.proc.pid) - before
    # Before: each distinct 48 KB value stayed as a shared-data key for the life of the
    # process (300 of them: over 14 MB); now a long key is stored as its SHA-256.
    assert grown < 6 * 1024 * 1024, f"RSS grew {grown} bytes"
