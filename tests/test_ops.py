"""Operations through a real gateway process: what /readyz, /metrics, the logs and the
request id tell an operator (docs/operations.md)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import GatewayProcess, LoopbackBackend

RunGateway = Callable[..., GatewayProcess]
MakeBackend = Callable[..., LoopbackBackend]


def metric(gw: GatewayProcess, name: str, **labels: str) -> float | None:
    """The value of one sample on the admin port's /metrics (None when absent)."""
    body = httpx.get(gw.admin_url + "/metrics", timeout=5).text
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        got, _, rest = sample.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if got == name and found == labels:
            return float(value)
    return None


def wait_for(check: Callable[[], Any], timeout: float = 15) -> Any:
    """Poll ``check`` until it returns something truthy (bounded); returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_readyz_and_metrics_agree_that_memory_store_is_up(
    run_gateway: RunGateway, backend_factory: MakeBackend
) -> None:
    api = backend_factory()
    gw = run_gateway(
        {
            "backends": {"api": api.url},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "backend": "api"}],
        },
        "--workers",
        "2",
    )
    assert httpx.get(gw.url + "/x", timeout=5).status_code == 200  # workers are serving
    ready = httpx.get(gw.admin_url + "/readyz", timeout=5).json()
    assert ready["store"] == "up"
    assert metric(gw, "edgegw_store_up") == 1.0
