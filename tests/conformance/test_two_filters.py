"""Conformance: two copies of the probe on one route, one of them failing (wasm trap) or
sending a local reply, in Envoy and in edgegw. Both fail closed by default (Envoy's
``fail_open: false``, edgegw's ``on_error: fail_closed``).

Each copy's configuration names it (it adds ``x-seen-by-<name>: <status>`` to every
response it sees) and says what it does. The observations are the status and those
headers: which filters the reply went through, and whether a failed filter was called
again. The reply's body is not compared, nor its content-type and length: for a failure
Envoy's is empty and edgegw's is problem+json naming the filter (by design,
docs/filters.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conformance.conftest import HOSTS, StartChain
from tests.filters.harness import Backend, RunningGateway, echo_handler

# case -> (config of filter a, config of filter b, the status Envoy must answer: else
# the case did not exercise what it says); a is first on the route.
CASES: dict[str, tuple[dict[str, str], dict[str, str], int]] = {
    "none": ({"name": "a"}, {"name": "b"}, 200),
    "first_traps_in_headers": (
        {"name": "a", "probes": "trap_request_headers"},
        {"name": "b"},
        503,
    ),
    "second_traps_in_headers": (
        {"name": "a"},
        {"name": "b", "probes": "trap_request_headers"},
        503,
    ),
    "first_traps_in_body": ({"name": "a", "probes": "trap_request_body"}, {"name": "b"}, 503),
    "second_traps_in_body": ({"name": "a"}, {"name": "b", "probes": "trap_request_body"}, 503),
    "first_replies_in_headers": ({"name": "a", "probes": "local"}, {"name": "b"}, 418),
    "first_replies_in_body": ({"name": "a", "probes": "local_body"}, {"name": "b"}, 418),
}

_envoy_seen: dict[str, dict[str, Any]] = {}


def observe(gw: RunningGateway) -> dict[str, Any]:
    r = httpx.post(gw.base_url + "/f", content=b"hello", timeout=10)
    seen = sorted((k, v) for k, v in r.headers.multi_items() if k.startswith("x-seen-by-"))
    return {"status": r.status_code, "seen_by": seen}


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("case", list(CASES))
def test_two_filters(case: str, host: str, start_chain: StartChain, probe_wasm: Path) -> None:
    config_a, config_b, status = CASES[case]
    backend = Backend(echo_handler)
    try:
        filters = [("a", probe_wasm, config_a), ("b", probe_wasm, config_b)]
        seen = observe(start_chain(host, filters, backend.port))
    finally:
        backend.close()
    if host == "envoy":
        assert seen["status"] == status, seen
        _envoy_seen[case] = seen
    else:
        if case not in _envoy_seen:
            pytest.fail("the Envoy run of this case must come first (run the whole module)")
        assert seen == _envoy_seen[case]
