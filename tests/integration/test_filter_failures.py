"""``edgegw_filter_failures_total{filter}`` (edgegw/wasm/faults.py), which the admin UI's
Filters view shows: one per failed call, none for calls that succeed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from edgegw import metrics
from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import parse_config
from edgegw.wasm import faults
from tests.conftest import LoopbackBackend


def failures(name: str) -> float:
    metrics.flush()
    return float(faults.FAILURES.labels(name)._value.get())


async def test_failed_calls_are_counted_per_filter(
    backend_factory: Callable[..., LoopbackBackend],
    test_wasm: Callable[[str], Path],
    asgi_client: Callable[..., httpx.AsyncClient],
) -> None:
    backend = backend_factory()
    text = f"""
version: 1
backends: {{api: "{backend.url}"}}
filters:
  counted-faulty: {{wasm: {test_wasm("faulty")}, on_error: fail_open}}
routes:
  - {{name: f, match: {{prefix: /f}}, filters: [counted-faulty], backend: api}}
"""
    app = GatewayApp(parse_config(text, env={}), chains_factory=wasm_chains)
    await app.startup()
    client = asgi_client(app)
    before = failures("counted-faulty")
    assert (await client.get("/f")).status_code == 200
    assert failures("counted-faulty") == before
    for _ in range(2):
        r = await client.get("/f", headers={"x-fault": "halftrap"})
        assert r.status_code == 200  # fail_open: the request goes on without the filter
    assert failures("counted-faulty") == before + 2
