"""The admin UI's per-filter calls and failures (edgegw/ui/live.py, read from
``edgegw_filter_outcomes_total``, edgegw/wasm/filter_metrics.py): a failed call counts as a
call and a failure, a successful one as a call only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from edgegw.app import GatewayApp, wasm_chains
from edgegw.config import parse_config
from edgegw.observe import metrics
from edgegw.ui.live import read_sample
from tests.conftest import LoopbackBackend


def counts(name: str) -> tuple[float, float]:
    """(calls, failures) of filter ``name`` as the UI reads them (this process's registry)."""
    metrics.flush()
    sample = read_sample()
    return sample.filter_calls.get(name, 0.0), sample.filter_failures.get(name, 0.0)


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
    calls, failed = counts("counted-faulty")
    assert (await client.get("/f")).status_code == 200
    calls_ok, failed_ok = counts("counted-faulty")
    assert calls_ok > calls and failed_ok == failed
    for _ in range(2):
        r = await client.get("/f", headers={"x-fault": "halftrap"})
        assert r.status_code == 200  # fail_open: the request goes on without the filter
    calls_bad, failed_bad = counts("counted-faulty")
    assert failed_bad == failed + 2 and calls_bad >= calls_ok + 2
