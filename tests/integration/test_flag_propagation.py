"""No polling delay between a flag edit and the requests that see it: once the edit is
in host-wide shared data, the very next request through ab_flags, on any worker, shows
it. Asserted by order (PUT answered, then one request), never by wall-clock time."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import GatewayProcess, LoopbackBackend
from tests.integration.test_replicas import AB_WASM


def test_the_request_after_an_edit_sees_it_on_every_worker(
    run_gateway: Callable[..., GatewayProcess], backend_factory: Callable[..., LoopbackBackend]
) -> None:
    # memory:// writes shared data ``edgegw.flags`` before the PUT answers (store/memory.py),
    # so nothing may stand between the answer and the next request: a filter re-reading
    # its flags on a tick (proxy_set_tick_period) or after a TTL shows the old table here.
    config = {
        "workers": 2,
        "store": {"url": "memory://", "flags": {"seeded": True}},
        "backends": {"api": backend_factory().url},
        "filters": {"ab": {"wasm": AB_WASM, "config": {"key_headers": ["x-user-id"]}}},
        "routes": [{"name": "api", "match": {"prefix": "/"}, "filters": ["ab"], "backend": "api"}],
        "access_log": False,
    }
    gw = run_gateway(config)

    def flags_seen() -> str:
        # A new connection each time: requests spread over both workers, each with a VM
        # that parsed the previous table on the request before.
        r = httpx.get(gw.url + "/x", headers={"x-user-id": "u1"}, timeout=10)
        return dict((k, v) for k, v in r.json()["headers"]).get("x-edgegw-flags", "")

    expected = ["seeded=on"]
    for _ in range(4):
        assert flags_seen() == "seeded=on"
    for i in range(6):
        for _ in range(2):  # both workers (likely) hold the current table parsed
            assert flags_seen() == ",".join(sorted(expected))
        put = httpx.put(f"{gw.admin_url}/admin/flags/f{i}", json=i % 2 == 0, timeout=10)
        assert put.status_code == 200, put.text
        expected.append(f"f{i}={'on' if i % 2 == 0 else 'off'}")
        assert flags_seen() == ",".join(sorted(expected)), f"edit {i} not seen at once"
