"""A gateway with several workers keeps ONE flag mirror (one Redis subscription) per
host, and every worker sees an edit through host-wide shared data."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable

import httpx

from edgegw.store.resp import pack
from tests.conftest import GatewayProcess, LoopbackBackend
from tests.integration.test_replicas import AB_WASM


def _numsub(redis_url: str, channel: str) -> int:
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(pack("PUBSUB", "NUMSUB", channel))
        reply = sock.recv(4096)  # *2 $len channel :count
    return int(reply.split(b"\r\n")[-2].lstrip(b":"))


def test_workers_share_one_flag_mirror(
    run_gateway: Callable[..., GatewayProcess],
    backend_factory: Callable[..., LoopbackBackend],
    redis_server: str,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = {
        "workers": 3,
        "store": {"url": redis_server, "prefix": prefix, "flags": {"seeded": True}},
        "backends": {"api": backend_factory().url},
        "filters": {"ab": {"wasm": AB_WASM, "config": {"key_headers": ["x-user-id"]}}},
        "routes": [{"name": "api", "match": {"prefix": "/"}, "filters": ["ab"], "backend": "api"}],
        "access_log": False,
    }
    gw = run_gateway(config)

    def flags_seen() -> set[str]:
        seen = set()
        for _ in range(12):  # a new connection each: spread over the workers
            r = httpx.get(gw.url + "/x", headers={"x-user-id": "u1"}, timeout=10)
            seen.add(dict((k, v) for k, v in r.json()["headers"]).get("x-edgegw-flags", ""))
        return seen

    deadline = time.monotonic() + 30
    while flags_seen() != {"seeded=on"} and time.monotonic() < deadline:
        time.sleep(0.2)
    # Three workers, one subscription: before, each worker subscribed and mirrored.
    assert _numsub(redis_server, "{" + prefix + "}:flags:changed") == 1
    put = httpx.put(f"{gw.admin_url}/admin/flags/fresh", json=True, timeout=10)
    assert put.status_code == 200, put.text
    deadline = time.monotonic() + 5
    while (seen := flags_seen()) != {"fresh=on,seeded=on"} and time.monotonic() < deadline:
        pass
    assert seen == {"fresh=on,seeded=on"}
